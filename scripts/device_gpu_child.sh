#!/usr/bin/env bash
# On a GPU machine: the GPUs as check's head-start child reads them (facts/gpu_child.py) against the
# same reading made in-process (facts/gpu.py read_gpus), field for field, with and without
# CUDA_VISIBLE_DEVICES; and check's JSON report's gpus and driver with the head start and without it
# (the CLI called directly). Carry .whl.
source scripts/device_setup.sh
for visible in unset 0 none; do
  case $visible in unset) unset CUDA_VISIBLE_DEVICES;; none) export CUDA_VISIBLE_DEVICES=;; *) export CUDA_VISIBLE_DEVICES=$visible;; esac
  python3 - "$visible" <<'PY' | tee -a "$out/gpu-child.txt"
import sys, time
from attn_doctor.facts import gpu_child
from attn_doctor.facts.gpu import read_gpus
started = time.perf_counter()
child = gpu_child.start()
reading = gpu_child.taken(child) if child else None
took = time.perf_counter() - started
here = read_gpus()
print(f"CUDA_VISIBLE_DEVICES {sys.argv[1]}: child started {child is not None}, same reading {reading == here}, "
      f"{len(here[1])} GPU(s), status {here[0].nvidia_status}, child {took:.3f} s")
PY
done
unset CUDA_VISIBLE_DEVICES
python3 -m attn_doctor check --format json >/tmp/with.json
python3 -c "from attn_doctor.cli import main; main()" check --format json >/tmp/without.json
python3 - <<'PY' | tee -a "$out/gpu-child.txt"
import json
a, b = (json.load(open(f)) for f in ("/tmp/with.json", "/tmp/without.json"))
print("check's gpus and driver, head start against none: same", a["gpus"] == b["gpus"] and a["driver"] == b["driver"])
print(a["gpus"][0]["name"], a["driver"]["driver_version"], a["driver"]["cuda_driver_version"])
PY
