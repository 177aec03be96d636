"""Which of the doctor's rules are behind upstream: the newest release of each distribution the
rules judge, from the package index, against the newest release the rules were checked against
(`checked_up_to` in attn_doctor/registry/backends.py, with RULES_CHECKED, the day of that check).

    python scripts/freshness.py [--index https://pypi.org/pypi]

It informs and never fails (exit 0 whatever upstream released): a release newer than the rules is
`check`'s `release-newer-than-rules` note on a user's machine, and a reason to check the rules again.
"""

from __future__ import annotations

import argparse
import json
import urllib.request

from packaging.version import InvalidVersion, Version

from attn_doctor.registry.backends import (
    DEPENDENCIES_CHECKED_UP_TO,
    RULES_CHECKED,
    TORCH_CHECKED_UP_TO,
    registered,
)


def checked() -> dict[str, str]:
    """Each distribution the rules judge, and the newest release they were checked against."""
    found = {b.distribution: b.checked_up_to for b in registered() if b.distribution and b.checked_up_to}
    return {**found, "torch": TORCH_CHECKED_UP_TO, **DEPENDENCIES_CHECKED_UP_TO}


def newest(index: str, distribution: str) -> tuple[str | None, str]:
    """The newest release on the index: the newest final one, else (flash-attn-4) the newest
    pre-release; and when it was uploaded."""
    with urllib.request.urlopen(f"{index}/{distribution}/json", timeout=30) as answer:
        data = json.load(answer)
    releases = []
    for text, files in data.get("releases", {}).items():
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if files and not all(f.get("yanked") for f in files):
            releases.append((version, min(f.get("upload_time", "") for f in files)))
    finals = [r for r in releases if not r[0].is_prerelease and not r[0].is_devrelease]
    pick = max(finals or releases, default=None)
    return (str(pick[0]), pick[1][:10]) if pick else (None, "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default="https://pypi.org/pypi", help="a JSON API base (PyPI's by default)")
    args = parser.parse_args()
    print(f"rules checked against upstream on {RULES_CHECKED}; index {args.index}")
    for distribution, known in sorted(checked().items()):
        try:
            latest, uploaded = newest(args.index, distribution)
        except OSError as error:
            print(f"  ? {distribution:22} checked up to {known:14} index not reached: {error}")
            continue
        behind = latest is not None and Version(latest) > Version(known)
        mark = "!" if behind else "="
        said = f"newest {latest} ({uploaded})" if latest else "no release on this index"
        said += "  <- the rules are behind" if behind else ""
        print(f"  {mark} {distribution:22} checked up to {known:14} {said}")


if __name__ == "__main__":
    main()
