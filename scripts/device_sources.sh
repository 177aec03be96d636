#!/usr/bin/env bash
# Issue 15 on a GPU machine that reaches no network: the source builds by `attn-doctor install
# --source --offline` from carried archives (.srcs/, see README) and FA4 from a carried wheelhouse,
# each install's wall time and peak memory measured; then verify, ONE bench of everything installed,
# check --bench, bench_agreement.py against that very bench report, and undo of every install.
#
#   scripts/device_sources.sh start [STAGES] [all|bench]  the run in the background (setsid), logs in
#                                             /tmp/src-run; "bench" ends it after bench_agreement.py
#                                             (verify and undo proven in an earlier run)
#   scripts/device_sources.sh part FILE...    parts of a wheelhouse larger than one call carries (made here
#                                             by scripts/device_parts.sh into .parts/, a part a call); once
#                                             all of a bundle's parts are there it is joined, checked and
#                                             unpacked into /tmp/BUNDLE (fa4wh: FA4 and the CuTe DSL)
#   scripts/device_sources.sh kept DIR        a wheel kept from an earlier FA2 build, for stage fa2kept
#   scripts/device_sources.sh poll N          wait up to N seconds for the run, then copy what is done to $OUT,
#                                             and 3 parts (15 MiB each) of the FA2 wheel kept from a build
#                                             here (scripts/wheel_from_installed.py) not sent yet: it returns
#                                             early for them. Joined here, that wheel is what `kept` carries
#
# STAGES, in order (default "fa2 sage fa3 fa4"); the first run (2026-11-25, morning) was "sage fa3".
# fa2 compiles from the sdist (19 min on the H100), verifies and undoes it, keeps it as a wheel and
# installs that; fa2kept installs a wheel kept before, carried by `kept DIR` (.fa2wh/ is 60 MiB: a
# call of its own), e.g. "sage fa3 fa2kept fa4" while the builds run.
# The run works from a copy of the tree in /tmp/ad; each later call sends the tree again, and its
# attn_doctor/ and scripts/ replace those in /tmp/ad when the builds are done, before the bench.
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

install_stage() {  # STAGE [SUFFIX]: the logs are plan-STAGE[SUFFIX].txt and install-STAGE[SUFFIX].txt
    local S=/tmp/ad/.srcs name=$1${2:-}
    local -a how
    case "$1" in
    fa2) how=(--source $S/flash_attn-2.8.3.post2.tar.gz --offline)
        [ -e /tmp/fa2wh/ready ] && how=(--find-links /tmp/fa2wh --offline) ;;
    fa2kept)  # the wheel kept from an earlier build, carried by a later call (`kept`)
        for _ in $(seq 900); do [ -e /tmp/fa2wh/ready ] && break; sleep 1; done
        how=(--find-links /tmp/fa2wh --offline) ;;
    sage) how=(--source $S/SageAttention-ff71e1e.tar --offline) ;;
    fa3) how=(--source $S/flash-attention-0251105a.tar.gz --source $S/cutlass-7127592.tar.gz --head-dim 64 --head-dim 128 --offline) ;;
    fa4)
        for _ in $(seq 900); do [ -e /tmp/fa4wh/ready ] && break; sleep 1; done
        how=(--find-links /tmp/fa4wh --offline) ;;
    esac
    measured "plan-$name" doctor install "${1%kept}" --python "$target" "${how[@]}" --dry-run
    measured "install-$name" doctor install "${1%kept}" --python "$target" "${how[@]}" --yes
    if [ "$name" = fa2 ] && [ ! -e /tmp/fa2wh/ready ] && grep -q "^exit 0" "$run/install-fa2.txt"; then keep_fa2; fi
}

# the FA2 just compiled, packed back into a wheel for a later machine (`install fa2 --find-links`);
# kept/ready once its parts are all written, for poll to send them back
keep_fa2() {
    local site py
    site=$("$target" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    mkdir -p "$run/kept"
    for py in "$target" python3; do  # `wheel pack` needs the wheel package: whichever has it
        "$py" scripts/wheel_from_installed.py flash-attn --site "$site" --out "$run/kept" >>"$run/kept.log" 2>&1 && break
    done
    if ! ls "$run"/kept/*.whl >/dev/null 2>&1; then  # no wheel: the installed files as they are
        (cd "$site" && tar -czf "$run/kept/fa2-installed.tgz" flash_attn flash_attn_2_cuda*.so flash_attn-*.dist-info) >>"$run/kept.log" 2>&1
    fi
    local kept
    kept=$(cd "$run/kept" && ls ./*.whl ./*.tgz 2>/dev/null | head -1)
    [ -n "$kept" ] && (cd "$run/kept" && sha256sum "$kept" >fa2.sha256 && split -b 15M -d "$kept" fa2.part.) \
        && touch "$run/kept/ready"
}

# FA2 compiled here is verified and undone on its own at once (its proof does not wait for the other
# builds), then installed again from the wheel kept of it, for the bench
fa2_alone() {
    [ -e /tmp/fa2wh/ready ] || ! grep -q "^exit 0" "$run/install-fa2.txt" && return
    measured verify-fa2 doctor verify fa2 --python "$target" -v --timeout 500 --output "$run/verify-fa2.json"
    ls "$run"/kept/*.whl >/dev/null 2>&1 || return  # nothing to install again from: it stays for the bench
    measured undo-fa2 doctor undo --python "$target"
    mkdir -p /tmp/fa2wh && cp "$run"/kept/*.whl /tmp/fa2wh/ && touch /tmp/fa2wh/ready
    install_stage fa2 -kept
}

unsent() {  # parts of the kept FA2 wheel not yet sent back
    [ -e "$run/kept/ready" ] || return 0
    ls "$run/kept" | grep -E '^fa2\.part\.[0-9]+$' | while read -r f; do [ -e "$run/kept/$f.sent" ] || echo "$f"; done
}

pipeline() {
    local stages=$1 tail=${2:-all}
    cd /tmp/ad
    { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc; free -g
      nvcc --version | tail -2; echo "stages: $stages"; } >"$run/gpu.txt"
    for stage in $stages; do
        install_stage "$stage"
        [ "$stage" = fa2 ] && fa2_alone
    done
    # the bench and its check first: verify of the others has run in earlier rounds
    local backends=${stages//fa2kept/fa2}
    [ -d /tmp/next ] && cp -r /tmp/next/. /tmp/ad/ && echo "code of a later call: $(cat /tmp/next/.sent)" >>"$run/gpu.txt"
    measured bench doctor bench sdpa $backends --python "$target" --timeout 500 --output "$run/bench.json"
    measured check-bench doctor check --python "$target" --bench "$run/bench.json" -v
    measured agreement "$target" scripts/bench_agreement.py sdpa $backends --bench "$run/bench.json" --json "$run/agreement.json"
    [ "$tail" = bench ] && { touch "$run/done"; return; }
    measured verify doctor verify --python "$target" -v --timeout 500 --output "$run/verify.json"
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
      done
      [ -e kept/ready ] && { echo "######## kept"; cat kept.log; cat kept/fa2.sha256; ls -l kept; } ) >"$out/run.txt"
    # run.txt, 4 JSONs and 3 parts of the kept wheel: the 8 files a call brings back
    for f in agreement.json verify.json verify-fa2.json bench.json; do [ -e "$run/$f" ] && cp "$run/$f" "$out/"; done
    tail -5 "$run/pipeline.log" 2>/dev/null
}

next_code() {  # this call's attn_doctor/ and scripts/, for the pipeline's bench
    rm -rf /tmp/next.new && mkdir -p /tmp/next.new && cp -r attn_doctor scripts /tmp/next.new/ \
        && date -u +%H:%M:%S >/tmp/next.new/.sent && rm -rf /tmp/next && mv /tmp/next.new /tmp/next
}

[ "${1:-}" != start ] && next_code
case "${1:-}" in
start)
    rm -rf "$run" /tmp/ad; mkdir -p "$run" /tmp/ad
    cp -r attn_doctor scripts .srcs /tmp/ad/
    setsid bash -c "source scripts/device_sources.sh; pipeline '${2:-fa2 sage fa3 fa4}' '${3:-all}'" >"$run/pipeline.log" 2>&1 < /dev/null &
    sleep 20
    collect; tail -c 2000 "$out/run.txt"
    ;;
part)
    shift; mkdir -p /tmp/parts && cp "$@" /tmp/parts/
    for manifest in /tmp/parts/*.parts; do  # NAME.parts: the sha256 of NAME.tar, then its parts
        bundle=$(basename "$manifest" .parts)
        [ -e "/tmp/$bundle/ready" ] && continue
        parts=$(tail -n +2 "$manifest")
        have=$(cd /tmp/parts && ls $parts 2>/dev/null | wc -l)
        [ "$have" = "$(echo $parts | wc -w)" ] || { echo "$bundle: $have of $(echo $parts | wc -w) parts"; continue; }
        (cd /tmp/parts && cat $parts) >"/tmp/$bundle.tar" && echo "$(head -1 "$manifest")  /tmp/$bundle.tar" | sha256sum -c --quiet \
            && mkdir -p "/tmp/$bundle" && tar -xf "/tmp/$bundle.tar" -C "/tmp/$bundle" \
            && touch "/tmp/$bundle/ready" && echo "$bundle ready: $(ls "/tmp/$bundle" | wc -l) files"
    done
    tail -c 600 "$run"/install-*.txt 2>/dev/null | tail -4
    ;;
poll)  # returns early when parts of the kept FA2 wheel are there to send (3 a call: 45 MiB)
    for _ in $(seq "${2:-500}"); do [ -e "$run/done" ] || [ -n "$(unsent)" ] && break; sleep 1; done
    collect
    for f in $(unsent | head -3); do cp "$run/kept/$f" "$out/" && touch "$run/kept/$f.sent"; done
    tail -c 5000 "$out/run.txt"; ls "$run" "$out"
    ;;
kept)  # kept DIR: the FA2 wheel kept from an earlier build (the 60 MiB .fa2wh/ here), for stage fa2kept
    mkdir -p /tmp/fa2wh && cp "$2"/*.whl /tmp/fa2wh/ && touch /tmp/fa2wh/ready && ls -l /tmp/fa2wh
    ;;
esac
