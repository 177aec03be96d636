#!/usr/bin/env bash
# attn-doctor on a real GPU machine that reaches no package index (the device tool's H100):
# install FA4 from a wheelhouse, check, verify, bench, check --bench, undo.
#
#   scripts/gpu-check.sh gather DIR   copy carried wheels (or wheel parts) into /tmp/wh
#   scripts/gpu-check.sh install      install + check + verify   (reports in $OUT)
#   scripts/gpu-check.sh bench        bench + check --bench + undo
#
# The FA4 wheelhouse (flash-attn-4 4.0.0b36 and its real dependencies, ~200 MB: the CuTe DSL's
# cu12 and cu13 library wheels are 92 MB each) is carried in parts over several calls while the
# machine stays warm; `gather` joins the split wheels. The doctor itself runs from its own venv
# (its wheel and its dependencies in .whl/) and acts on the machine's torch venv with --python.
set -u -o pipefail
out=${OUT:-/tmp/attn-doctor-gpu}
mkdir -p "$out" /tmp/wh
target=${TARGET_PYTHON:-/opt/torch/.venv/bin/python3}
export COLUMNS=150 PYTHONUNBUFFERED=1

doctor_venv() {
    if [ ! -x /tmp/doctor/bin/attn-doctor ]; then
        python3 -m venv --without-pip /tmp/doctor
        python3 -m pip --python /tmp/doctor/bin/python install -q --no-index --find-links .whl attn-doctor || exit 1
    fi
}
doctor() { /tmp/doctor/bin/attn-doctor "$@"; }

case "${1:-}" in
gather)
    cp "$2"/* /tmp/wh/
    for first in /tmp/wh/*.part-aa; do
        [ -e "$first" ] || continue
        whole=${first%.part-aa}
        if [ -e "${whole}.part-ab" ]; then cat "$first" "${whole}.part-ab" > "$whole" && rm "$first" "${whole}.part-ab"; fi
    done
    ls -la /tmp/wh
    ;;
install)
    doctor_venv
    {
        echo "== attn-doctor install fa4 --dry-run"
        doctor install fa4 --python "$target" --find-links /tmp/wh --offline --dry-run
        echo "== attn-doctor install fa4 --yes"
        time doctor install fa4 --python "$target" --find-links /tmp/wh --offline --yes
        echo "exit $?"
        echo "== attn-doctor check -v (after)"
        doctor check --python "$target" -v
        echo "exit $?"
    } 2>&1 | tee "$out/h100-install-fa4.txt"
    doctor check --python "$target" --deep --format json > "$out/h100-fa4-check.json"
    # SageAttention 1.0.6 (PyPI's, Triton kernels): a forward-only backend to verify and time too
    "$target" -m pip install -q --no-index --no-deps /tmp/wh/sageattention-1.0.6-py3-none-any.whl
    [ "${VERIFY:-1}" = 0 ] && exit 0  # VERIFY=0: installed only, for a bench on a fresh machine
    {
        echo "== attn-doctor verify -v"
        time doctor verify --python "$target" -v --timeout 400 --output "$out/h100-verify.json"
        echo "exit $?"
    } 2>&1 | tee "$out/h100-verify.txt"
    ;;
bench)
    doctor_venv
    {
        echo "== attn-doctor bench"
        time doctor bench --python "$target" --timeout 400 --output "$out/h100-bench.json"
        echo "exit $?"
        echo "== attn-doctor check --bench (the recommendation, as measured)"
        doctor check --python "$target" --bench "$out/h100-bench.json" -v
        echo "== attn-doctor undo (the install of FA4; sageattention, pip-installed after it, must stay)"
        doctor undo --python "$target"
        echo "exit $?"
        "$target" -m pip list 2>/dev/null | grep -iE "flash|cutlass|quack|tvm|sage" || echo "(none of them left)"
    } 2>&1 | tee "$out/h100-bench.txt"
    ;;
*)
    echo "usage: $0 gather DIR | install | bench" >&2
    exit 2
    ;;
esac
