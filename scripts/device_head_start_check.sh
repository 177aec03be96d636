#!/usr/bin/env bash
# On a GPU machine: check's report with the head start (python -m attn_doctor) against the CLI
# alone (no head start), field by field but for the time it was taken; then check --deep. Set-up
# as scripts/device_setup.sh (.whl carried).
source scripts/device_setup.sh
python3 -m attn_doctor check --format json > "$out/with-head-start.json"; echo "exit $?"
python3 -c 'from attn_doctor.cli import main; main()' check --format json > "$out/cli-alone.json"; echo "exit $?"
python3 - "$out/with-head-start.json" "$out/cli-alone.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for d in (a, b):
    d.pop("collected_at")
print("reports equal:", a == b, "| gpus:", [g["name"] for g in a["gpus"]], "| torch:", a["torch"]["version"],
      "| packages:", len(a["packages"]), "| recommendation:", (a["recommendation"] or {}).get("backend"))
PY
python3 -m attn_doctor check --deep --format json > "$out/deep.json"; echo "deep exit $?"
python3 -c 'import json,sys; [print(i["module"], i["outcome"]) for i in json.load(open(sys.argv[1]))["imports"]]' "$out/deep.json"
