"""A kill storm: `attn-doctor install fa4` from a local wheelhouse, ended by a real signal at a
spread of points while pip writes, then recovered the two ways users recover (`undo`; or the
install run again, then `undo` until nothing is left), each run checked byte for byte against the
environment as it was (every file's sha256, bytecode included) and for processes left behind.

    python scripts/kill_storm.py --wheelhouse .cache/fa4-wheelhouse --torch-python .cache/build-venv/bin/python

The wheelhouse is FA4's closure without torch (the tests' `fa4_wheelhouse` fixture makes one);
`--torch-python` is an interpreter whose torch the storm's venv sees through a .pth line. On a
machine without a GPU each completed install is undone by its own failed verification, which is
one more undo in the chain. Prints one line per run and a summary; exit 1 if any run was not exact.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
DELAYS_S = (0.0, 0.15, 0.4, 0.8, 1.5)  # after pip's "Installing collected packages"


def snapshot(root: Path) -> dict[str, str]:
    state = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".attn-doctor"]
        for name in dirs:
            state[os.path.join(folder, name)] = "folder"
        for name in files:
            path = os.path.join(folder, name)
            state[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return state


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "attn_doctor", *args], capture_output=True, text=True)


def install_argv(python: Path, wheelhouse: Path) -> list[str]:
    return [
        *("install", "fa4", "--python", str(python), "--find-links", str(wheelhouse)),
        *("--offline", "--force", "--yes"),
    ]


def leftovers(root: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(root) in line and state not in ("Z", "X"):
            found.append(entry.name)
    return found


def terminal_signals() -> None:
    """The doctor's signals as a terminal's process has them, whatever this script runs under
    (nohup ignores SIGHUP, a background job SIGINT)."""
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)


def one_run(root: Path, wheelhouse: Path, how: signal.Signals, delay: float, rerun: bool) -> str:
    python = root / "bin" / "python"
    before = snapshot(root)
    repairs = root / ".attn-doctor" / "repairs"
    earlier = set(repairs.glob("*"))
    process = subprocess.Popen(
        [sys.executable, "-m", "attn_doctor", *install_argv(python, wheelhouse)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=terminal_signals,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        logs = (log for log in repairs.glob("*/step-*.log") if log.parent not in earlier)
        if any("Installing collected packages" in log.read_text(errors="replace") for log in logs):
            break
        time.sleep(0.005)
    time.sleep(delay)
    landed = process.poll() is None
    if landed:
        process.send_signal(how)
    _, err = process.communicate(timeout=120)
    code = process.returncode
    if rerun:
        subprocess.run([sys.executable, "-m", "attn_doctor", *install_argv(python, wheelhouse)], capture_output=True)
    undos, kept = 0, False
    while True:
        done = doctor("undo", "--python", str(python))
        if done.returncode != 0:
            return f"undo failed ({done.returncode}): {done.stderr.strip()}"
        kept = kept or "left as they are" in done.stdout
        if "Nothing to undo" in done.stdout:
            break
        undos += 1
    after = snapshot(root)
    differ = sorted(set(before.items()) ^ set(after.items()))
    left = leftovers(root)
    verdict = "NOT EXACT" if differ or left or kept else "exact" if landed else "missed"
    where = "mid-pip" if landed else "too late: the install had ended"
    said = err.strip().splitlines()[-1] if err.strip() else "nothing on stderr"
    return (
        f"{verdict}: {how.name} {delay:.2f} s into pip's writing ({where}), exit {code} ({said[:90]}); "
        f"{'run again, ' if rerun else ''}{undos} undo(s); {len(differ)} paths differ, {len(left)} processes left"
        + "".join(f"\n      {path}: {digest[:12]}" for path, digest in differ[:6])
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheelhouse", type=Path, required=True)
    parser.add_argument("--torch-python", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=24)
    args = parser.parse_args()
    torch_site = subprocess.run(
        [str(args.torch_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory(prefix="kill-storm-") as scratch:
        root = Path(scratch) / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
        purelib = subprocess.run(
            [str(root / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        (Path(purelib) / "torch-environment.pth").write_text(torch_site + "\n")
        for run in range(args.runs):
            how = SIGNALS[run % len(SIGNALS)]
            delay = DELAYS_S[(run // len(SIGNALS)) % len(DELAYS_S)]
            line = one_run(root, args.wheelhouse.resolve(), how, delay, rerun=run % 2 == 1)
            results.append(line.split(":")[0])
            print(f"{run + 1:2d}. {line}", flush=True)
    landed = len(results) - results.count("missed")
    print(
        f"{results.count('exact')} of {landed} runs interrupted mid-pip ended byte-identical to the state before,"
        f" nothing left running ({results.count('missed')} signals came after the install had ended)"
    )
    return 1 if "NOT EXACT" in results else 0


if __name__ == "__main__":
    sys.exit(main())
