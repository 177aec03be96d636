#!/usr/bin/env bash
# check before and after a change, timed in turn on one GPU machine (old, new, old, new), each
# package byte-compiled and run from its own folder (so neither reads this repo's pyproject.toml).
# Before the call, here:  git worktree add /tmp/old <commit>; mkdir -p .device/old .device/new;
#   cp -r /tmp/old/attn_doctor .device/old/; cp -r attn_doctor .device/new/
# then carry .whl and .device. Run with the device tool: bash scripts/device_speed.sh
source scripts/device_setup.sh
python3 -m compileall -q .device/old .device/new >/dev/null
for round in 1 2; do
  for which in old new; do
    echo "== $which (round $round)"
    (cd .device/$which && PYTHONPATH=/tmp/site python3 ../../scripts/bench_check.py --python "$(command -v python3)" --runs 7) | tee "$out/bench-$which-$round.txt"
  done
done
