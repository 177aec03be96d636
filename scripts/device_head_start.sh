#!/usr/bin/env bash
# `check` before and after a change, timed in turn on one GPU machine against collect_env (old, new,
# old, new), twice: with the doctor run by the machine's own python3 (its site-packages, its .pth
# files), and from a venv of its own, as `pipx` or `uv tool install` leave it. Then the phases.
# Before the call, here:  git worktree add /tmp/old <commit>; mkdir -p .device/old .device/new;
#   cp -r /tmp/old/attn_doctor .device/old/; cp -r attn_doctor .device/new/
#   pip download the runtime dependencies' wheels into .whl-tool/ (rich, markdown-it-py, mdurl,
#   pygments, packaging, nvidia-ml-py, pyyaml); carry .whl, .whl-tool and .device.
source scripts/device_setup.sh
python3 -m compileall -q .device/old .device/new >/dev/null
python3 -m venv --without-pip /tmp/tool
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/toolsite .whl/*.whl .whl-tool/*.whl || exit 1
python3 -m compileall -q /tmp/toolsite >/dev/null
target=$(command -v python3)
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/gpu.txt"
for round in 1 2; do
  for which in old new; do
    echo "== $which, the machine's python3 (round $round)"
    (cd .device/$which && PYTHONPATH=/tmp/site python3 ../../scripts/bench_check.py --python "$target" --runs 5) | tee "$out/bench-$which-$round.txt"
  done
done
for round in 1 2; do
  for which in old new; do
    echo "== $which, a venv of its own (round $round)"
    (cd .device/$which && PYTHONPATH=/tmp/toolsite /tmp/tool/bin/python ../../scripts/bench_check.py --python "$target" --runs 5) | tee "$out/bench-tool-$which-$round.txt"
  done
done
(cd .device/new && PYTHONPATH=/tmp/toolsite /tmp/tool/bin/python -X importtime -m attn_doctor check --format json 2>"$out/importtime-tool.txt" >/dev/null)
sort -t'|' -k2 -n "$out/importtime-tool.txt" | tail -12
TIMEFORMAT="%R s"
for i in 1 2 3; do
  time /tmp/tool/bin/python -c pass
  time python3 -c pass
  time (PYTHONPATH=/tmp/toolsite /tmp/tool/bin/python -c 'import pynvml; pynvml.nvmlInit()')
done
