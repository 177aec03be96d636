#!/usr/bin/env bash
# Where `attn-doctor check` spends its time on a GPU machine: phases, imports, and the start-up
# of the tools it waits on. Same set-up as scripts/device_check.sh (wheels in .whl/).
source scripts/device_setup.sh
TIMEFORMAT="%R s"
t() { local took; took=$( { time "$@" >/dev/null 2>&1; } 2>&1 ); echo "$took  $*"; }
for i in 1 2; do
  t python3 -c pass
  t python3 -S -c pass
  t python3 -c 'import typer'
  t python3 -m attn_doctor --version
  t python3 -m attn_doctor check --facts tests/fixtures/h100-check.json --format json
  t python3 -m attn_doctor check --format json
  t nvcc --version
  t python3 -c 'import pynvml; pynvml.nvmlInit()'
done
python3 scripts/profile_check.py --python python3
python3 -X importtime -m attn_doctor check --format json 2>"$out/importtime.txt" >/dev/null
sort -t'|' -k2 -n "$out/importtime.txt" | tail -15
python3 -X importtime -c pass 2>&1 | sort -t'|' -k2 -n | tail -8
ls "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"/*.pth
