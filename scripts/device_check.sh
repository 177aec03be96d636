#!/usr/bin/env bash
# attn-doctor check on a real GPU machine, set side by side with nvidia-smi, and benchmarked.
#
# Made for the device tool (a machine that reaches no package index): the doctor's dependencies
# travel as wheels in .whl/ and the real FA2/FA4 wheels in .cache/wheels/ (both carried).
# Everything it reads and says lands in $OUT; tests/fixtures/ keeps the copies that tests use.
source scripts/device_setup.sh
doctor() { python3 -m attn_doctor "$@"; }

echo "== nvidia-smi"
nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total,uuid --format=csv,noheader,nounits | tee "$out/nvidia-smi.csv"
python3 scripts/record_nvml.py > "$out/nvml-h100.json"

echo "== check (the machine's own python3, torch installed)"
doctor check --format json > "$out/h100-check.json"; echo "exit $?"
doctor check -v | tee "$out/h100-check.txt"
python3 scripts/compare_nvidia_smi.py "$out/nvidia-smi.csv" "$out/h100-check.json"

echo "== check --deep"
doctor check --deep --format json > "$out/h100-check-deep.json"; echo "exit $?"
python3 -c 'import json,sys; [print(i) for i in json.load(open(sys.argv[1]))["imports"]]' "$out/h100-check-deep.json"

echo "== FA4 then FA2 installed into a venv that sees this torch"
python3 -m venv --without-pip /tmp/collide
site=$(/tmp/collide/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/machine-torch.pth"
python3 -m pip --python /tmp/collide/bin/python install -q --no-index --no-deps .cache/wheels/flash_attn_4-4.0.0b36-*.whl
python3 -m pip --python /tmp/collide/bin/python install -q --no-index --no-deps .cache/wheels/flash_attn-2.8.3.post2-*.whl
doctor check --python /tmp/collide/bin/python --format json > "$out/h100-fa2-over-fa4.json"; echo "exit $?"
doctor check --python /tmp/collide/bin/python | tail -25

echo "== benchmark"
python3 scripts/bench_check.py --python "$(command -v python3)" --runs 5 --deep | tee "$out/bench.txt"
