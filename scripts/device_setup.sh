# Sourced by the scripts/device_*.sh scripts: the doctor on a GPU machine that reaches no index.
# Its dependencies travel as wheels in .whl/ (carried), are installed into /tmp/site, and are
# byte-compiled as a pip install leaves them (otherwise every run would compile them again).
# Sets $out, the folder whose files come back ($OUT under the device tool).
set -u
out=${OUT:-/tmp/attn-doctor-device}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m compileall -q /tmp/site attn_doctor >/dev/null
export PYTHONPATH=/tmp/site:$PWD COLUMNS=160
