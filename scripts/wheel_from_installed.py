"""Pack an installed distribution back into a wheel, from its RECORD: a source build done once on a
GPU machine (FA2's 19 min compile on the H100) kept, carried and installed elsewhere with
`attn-doctor install fa2 --find-links DIR` instead of compiled again.

    python3 scripts/wheel_from_installed.py DISTRIBUTION --site SITE_PACKAGES --out DIR

Run by the target interpreter or any other; `wheel pack` (the `wheel` package) writes the wheel and
its RECORD. What only an installer writes (INSTALLER, REQUESTED, direct_url.json, uv's uv_cache.json) and files outside
site-packages (scripts) are left out.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# uv_cache.json: uv writes it for a local source and rewrites it when it installs the packed wheel
# from a local file, so a copy in the wheel no longer matches its RECORD hash (seen on the H100:
# check's package-files-modified after `install fa2 --find-links`)
INSTALLER_ONLY = {"INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json", "RECORD"}


def dist_info(site: Path, distribution: str) -> Path:
    wanted = distribution.replace("-", "_").lower()
    for folder in site.glob("*.dist-info"):
        if folder.name.removesuffix(".dist-info").rsplit("-", 1)[0].lower() == wanted:
            return folder
    raise SystemExit(f"{distribution} is not installed in {site}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("distribution")
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    info = dist_info(options.site, options.distribution)
    with (info / "RECORD").open(newline="") as record, tempfile.TemporaryDirectory() as tree:
        for row in csv.reader(record):
            path = row[0] if row else ""
            inside = path and not path.startswith(("/", "..")) and "__pycache__" not in path
            if not inside or (path.startswith(info.name + "/") and Path(path).name in INSTALLER_ONLY):
                continue
            (Path(tree) / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(options.site / path, Path(tree) / path)
        options.out.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "wheel", "pack", tree, "-d", str(options.out)], check=False)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
