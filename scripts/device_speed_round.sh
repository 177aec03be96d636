#!/usr/bin/env bash
# `check` before and after a change on one GPU machine, from a venv of the doctor's own (as `pipx` or
# `uv tool install` leave it, the README's way) and by the machine's python3, each timed against
# torch.utils.collect_env in the same run (scripts/bench_check.py), old and new alternating; then
# the phases of the new one (scripts/timeline_check.py). Set-up as scripts/device_head_start.sh
# (.whl, .whl-tool and .device/{old,new} carried).
source scripts/device_setup.sh
python3 -m compileall -q .device/old .device/new >/dev/null
python3 -m venv --without-pip /tmp/tool
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/toolsite .whl/*.whl .whl-tool/*.whl || exit 1
python3 -m compileall -q /tmp/toolsite >/dev/null
target=$(command -v python3)
nvidia-smi --query-gpu=name --format=csv,noheader
for round in 1 2 3; do
  for which in old new; do
    echo "== $which, a venv of its own (round $round)"
    (cd .device/$which && PYTHONPATH=/tmp/toolsite /tmp/tool/bin/python ../../scripts/bench_check.py --python "$target" --runs 7)
  done
done
for which in old new; do
  echo "== $which, the machine's python3"
  (cd .device/$which && PYTHONPATH=/tmp/site python3 ../../scripts/bench_check.py --python "$target" --runs 7)
done
echo "== phases, new, a venv of its own"
(cd .device/new && PYTHONPATH=/tmp/toolsite /tmp/tool/bin/python ../../scripts/timeline_check.py --python "$target" --runs 7)
