#!/usr/bin/env bash
# Issue 15 on a GPU machine that reaches no network: the source builds by `attn-doctor install
# --source --offline` from carried archives (.srcs/, see README) and FA4 from a carried wheelhouse,
# each install's wall time and peak memory measured; then verify, ONE bench of everything installed,
# check --bench, bench_agreement.py against that very bench report, and undo of every install.
#
#   scripts/device_sources.sh start [STAGES]  the run in the background (setsid), logs in /tmp/src-run
#   scripts/device_sources.sh part FILE       one part of the FA4 wheelhouse (.parts/, a part a call:
#                                             its wheels are larger than one call carries); the last
#                                             one is joined, checked and unpacked into /tmp/wh
#   scripts/device_sources.sh poll N          wait up to N seconds for the run, then copy what is done to $OUT
#   scripts/device_sources.sh fetch N         the Nth 4 parts (15 MiB each) of the FA2 wheel kept from the
#                                             build (scripts/wheel_from_installed.py), for a later machine:
#                                             `install fa2 --find-links` takes it instead of compiling
#
# STAGES, in order (default "fa2 sage fa3 fa4"); the first run (2026-11-25, morning) was "sage fa3".
# The run works from a copy of the tree in /tmp/ad: each later call sends the tree again.
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

install_stage() {
    local S=/tmp/ad/.srcs
    local -a how
    case "$1" in
    fa2) how=(--source $S/flash_attn-2.8.3.post2.tar.gz --offline) ;;
    sage) how=(--source $S/SageAttention-ff71e1e.tar --offline) ;;
    fa3) how=(--source $S/flash-attention-0251105a.tar.gz --source $S/cutlass-7127592.tar.gz --head-dim 128 --offline) ;;
    fa4)
        for _ in $(seq 900); do [ -e /tmp/wh/ready ] && break; sleep 1; done
        how=(--find-links /tmp/wh --offline) ;;
    esac
    measured "plan-$1" doctor install "$1" --python "$target" "${how[@]}" --dry-run
    measured "install-$1" doctor install "$1" --python "$target" "${how[@]}" --yes
    if [ "$1" = fa2 ] && grep -q "^exit 0" "$run/install-fa2.txt"; then  # ~22 min of compile: kept
        local site
        site=$("$target" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        "$target" scripts/wheel_from_installed.py flash-attn --site "$site" --out "$run/kept" \
            && (cd "$run/kept" && sha256sum ./*.whl >fa2.sha256 && split -b 15M -d ./*.whl fa2.part.)
    fi
}

pipeline() {
    local stages=$1
    cd /tmp/ad
    { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc; free -g
      nvcc --version | tail -2; echo "stages: $stages"; } >"$run/gpu.txt"
    for stage in $stages; do install_stage "$stage"; done
    measured verify doctor verify --python "$target" -v --timeout 500 --output "$run/verify.json"
    measured bench doctor bench sdpa $stages --python "$target" --timeout 500 --output "$run/bench.json"
    measured check-bench doctor check --python "$target" --bench "$run/bench.json" -v
    measured agreement "$target" scripts/bench_agreement.py sdpa $stages --bench "$run/bench.json" --json "$run/agreement.json"
    for n in 1 2 3 4 5 6; do  # the latest first, until nothing is left to undo
        measured "undo-$n" doctor undo --python "$target"
        grep -q "^exit 0" "$run/undo-$n.txt" && ! grep -q "^Nothing to undo" "$run/undo-$n.txt" || break
    done
    "$target" -m pip list 2>/dev/null | grep -iE "flash|sage|cutlass|quack" >"$run/left.txt" || echo "(none left)" >"$run/left.txt"
    touch "$run/done"
}

collect() {
    # at most 8 files come back: the texts joined, the JSONs as they are
    ( cd "$run" && for f in gpu.txt $(ls -tr | grep -E '^(plan|install|verify|bench|check|agreement|undo)' | grep '\.txt$') left.txt; do
        [ -e "$f" ] && { echo "######## ${f%.txt}"; cat "$f"; }
      done ) >"$out/run.txt"
    for f in agreement.json verify.json bench.json; do [ -e "$run/$f" ] && cp "$run/$f" "$out/"; done
    tail -5 "$run/pipeline.log" 2>/dev/null
}

case "${1:-}" in
start)
    rm -rf "$run" /tmp/ad; mkdir -p "$run" /tmp/ad
    cp -r attn_doctor scripts .srcs /tmp/ad/
    setsid bash -c "source scripts/device_sources.sh; pipeline '${2:-fa2 sage fa3 fa4}'" >"$run/pipeline.log" 2>&1 < /dev/null &
    sleep 20
    collect; tail -c 2000 "$out/run.txt"
    ;;
part)
    mkdir -p /tmp/parts && cp "$2" /tmp/parts/ && ls -l /tmp/parts
    if [ -e /tmp/parts/fa4wh.sha256 ] && [ "$(ls /tmp/parts | grep -c '^fa4wh.tar.')" = 4 ]; then
        cat /tmp/parts/fa4wh.tar.a? >/tmp/fa4wh.tar && (cd /tmp && sha256sum -c /tmp/parts/fa4wh.sha256) \
            && mkdir -p /tmp/wh && tar -xf /tmp/fa4wh.tar -C /tmp/wh && (cd /tmp/wh && sha256sum -c --quiet SHA256SUMS) \
            && touch /tmp/wh/ready && echo "FA4 wheelhouse ready: $(ls /tmp/wh | wc -l) files"
    fi
    tail -c 600 "$run"/install-*.txt 2>/dev/null | tail -4
    ;;
poll)
    for _ in $(seq "${2:-500}"); do [ -e "$run/done" ] && break; sleep 1; done
    collect; tail -c 5000 "$out/run.txt"; ls "$run"
    ;;
fetch)
    cp "$run/kept/fa2.sha256" "$out/"
    ls "$run/kept" | grep '^fa2.part.' | sed -n "$(( ${2:-0} * 4 + 1 )),$(( ${2:-0} * 4 + 4 ))p" | while read -r f; do cp "$run/kept/$f" "$out/"; done
    ls -l "$run/kept" "$out"
    ;;
esac
