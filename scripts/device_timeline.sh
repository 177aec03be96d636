#!/usr/bin/env bash
# scripts/timeline_check.py on a GPU machine: check's phases with and without the head start, with
# the doctor run by the machine's own python3 and from a venv of its own. Set-up as
# scripts/device_head_start.sh (.whl, .whl-tool and .device/new carried).
source scripts/device_setup.sh
python3 -m compileall -q .device/new >/dev/null
python3 -m venv --without-pip /tmp/tool
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/toolsite .whl/*.whl .whl-tool/*.whl || exit 1
python3 -m compileall -q /tmp/toolsite >/dev/null
target=$(command -v python3)
echo "== the machine's python3"
(cd .device/new && PYTHONPATH=/tmp/site python3 ../../scripts/timeline_check.py --python "$target" --runs 7) | tee "$out/timeline-machine.txt"
echo "== a venv of its own"
(cd .device/new && PYTHONPATH=/tmp/toolsite /tmp/tool/bin/python ../../scripts/timeline_check.py --python "$target" --runs 7) | tee "$out/timeline-tool.txt"
TIMEFORMAT="%R s"
for i in 1 2 3; do time "$target" -B -c pass; done
# The probe alone, in the target, fed the request `check` gives it: from its start to its answer.
request=$(cd .device/new && PYTHONPATH=/tmp/site python3 -c "import sys; from attn_doctor.facts.target import probe_request; sys.stdout.buffer.write(probe_request(False))")
probe=$(cat .device/new/attn_doctor/facts/probe.py)
echo "== the probe alone"
for i in 1 2 3 4 5; do time ("$target" -B -c "$probe" - M <<<"$request" >/dev/null); done
"$target" -B -X importtime -c "$probe" - M <<<"$request" 2>&1 >/dev/null | sort -t'|' -k2 -n | tail -6
