#!/usr/bin/env bash
# Issue 15 on a GPU machine that reaches no network: SageAttention 2.2.0 and a narrowed FA3 built
# by `attn-doctor install --source --offline` from carried `git archive`s (.srcs/, see README),
# each build's wall time and peak memory measured; verify, bench, bench_agreement.py, undo.
#
#   scripts/device_sources.sh start     the whole run in the background (setsid), log in /tmp/src-run
#   scripts/device_sources.sh poll N    wait up to N seconds for it, then copy what is done to $OUT
set -u
source scripts/device_setup.sh  # the doctor's wheels, PYTHONPATH, $out
run=/tmp/src-run
target=/opt/torch/.venv/bin/python3
doctor() { python3 -m attn_doctor "$@"; }

used_kib() { awk '/^MemTotal:/{t=$2} /^MemAvailable:/{a=$2} END{print t-a}' /proc/meminfo; }

# measured NAME CMD...: the command's output to $run/NAME.txt; wall seconds and the machine's peak
# memory in use above what was in use before (sampled every 0.5 s) appended to it
measured() {
    local name=$1; shift
    local before peak now began
    before=$(used_kib); peak=$before; began=$(date +%s.%N)
    { echo "== $*"; "$@"; echo "exit $?"; } >"$run/$name.txt" 2>&1 &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        now=$(used_kib); [ "$now" -gt "$peak" ] && peak=$now
        sleep 0.5
    done
    wait "$pid"
    echo "wall $(awk "BEGIN{printf \"%.0f\", $(date +%s.%N) - $began}") s; peak memory above the start $(( (peak - before) / 1024 )) MiB (machine: $(( peak / 1024 )) MiB in use at the peak)" >>"$run/$name.txt"
}

pipeline() {
    cd "$1"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$run/gpu.txt"
    nproc >>"$run/gpu.txt"; free -g >>"$run/gpu.txt"; nvcc --version | tail -2 >>"$run/gpu.txt"
    # the bench's agreement first, for SDPA, while no build loads the CPUs
    [ "${SKIP_SDPA:-0}" = 1 ] || measured agreement-sdpa "$target" scripts/bench_agreement.py sdpa --json "$run/agreement-sdpa.json"
    S=.srcs
    measured plan-sage doctor install sage --python "$target" --source $S/SageAttention-eb615cf.tar --offline --dry-run
    measured install-sage doctor install sage --python "$target" --source $S/SageAttention-eb615cf.tar --offline --yes
    measured verify-sage doctor verify sage --python "$target" -v --timeout 400
    FA3=(--source $S/flash-attention-0251105a.tar.gz --source $S/cutlass-7127592.tar.gz --head-dim 128 --offline)
    measured plan-fa3 doctor install fa3 --python "$target" "${FA3[@]}" --dry-run
    measured install-fa3 doctor install fa3 --python "$target" "${FA3[@]}" --yes
    measured verify doctor verify --python "$target" -v --timeout 400 --output "$run/verify.json"
    measured bench doctor bench sdpa fa3 sage --python "$target" --timeout 400 --output "$run/bench.json"
    measured check-bench doctor check --python "$target" --bench "$run/bench.json" -v
    measured agreement "$target" scripts/bench_agreement.py sdpa fa3 sage --json "$run/agreement.json"
    measured undo-fa3 doctor undo --python "$target"
    measured undo-sage doctor undo --python "$target"
    "$target" -m pip list 2>/dev/null | grep -iE "flash|sage" >"$run/left.txt" || echo "(none left)" >"$run/left.txt"
    touch "$run/done"
}

collect() {
    # at most 8 files come back: join the texts, keep the JSONs
    ( for f in gpu agreement-sdpa plan-sage install-sage verify-sage plan-fa3 install-fa3 verify bench check-bench agreement undo-fa3 undo-sage left; do
        [ -e "$run/$f.txt" ] && { echo "######## $f"; cat "$run/$f.txt"; }
      done ) >"$out/run.txt"
    for f in agreement-sdpa.json agreement.json verify.json bench.json; do [ -e "$run/$f" ] && cp "$run/$f" "$out/"; done
    ls /opt/torch/.venv/.attn-doctor/repairs/ 2>/dev/null | tail -3
}

case "${1:-}" in
start)
    rm -rf "$run"; mkdir -p "$run"
    setsid bash -c "source scripts/device_sources.sh; pipeline $PWD" >"$run/pipeline.log" 2>&1 < /dev/null &
    sleep "${2:-5}"
    collect; tail -c 3000 "$out/run.txt"
    ;;
poll)
    for _ in $(seq "${2:-500}"); do [ -e "$run/done" ] && break; sleep 1; done
    collect; tail -c 6000 "$out/run.txt"; ls "$run"
    ;;
pipeline) pipeline "$PWD" ;;
esac
