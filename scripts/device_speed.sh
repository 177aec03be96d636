#!/usr/bin/env bash
# check on the H100 after the registry redesign: the fixtures device_check.sh records (now with the
# installed distributions and markers that the requirements check reads), then the speed of this
# check and of the one before the redesign (carried in .device/old), measured in the same run.
source scripts/device_setup.sh
bash scripts/device_check.sh
echo "== the check before the redesign (271c9ef), same machine, same run"
python3 -m compileall -q .device/old >/dev/null
# `python -m attn_doctor` finds the package in its working directory first: run from the old copy
(cd .device/old && PYTHONPATH=/tmp/site python3 ../../scripts/bench_check.py --python "$(command -v python3)" --runs 5) | tee "$out/bench-old.txt"
echo "== this check again, after the old one (the two runs bracket the old one's)"
python3 scripts/bench_check.py --python "$(command -v python3)" --runs 5 | tee "$out/bench-new-again.txt"
