#!/usr/bin/env bash
# Issue 28's round on a GPU machine that reaches no network (first run 2026-12-06 on an H100: its
# misfit then had the good wheel's very name and replaced it; it is now named cp39-abi3). FA3 is compiled once by `attn-doctor build fa3 --wheelhouse` from
# the carried sources (.srcs/, made here by scripts/make_sources.sh), then installed from that
# wheelhouse into a fresh venv that sees the image's torch: proven, installed without compiling,
# verified on the GPU, undone byte for byte. Then a wheelhouse holding that wheel and a misfit (an
# sm_80-only extension under FA3's name, tried first) must pick the good one and say why not the other.
# Carry .whl (the doctor's dependencies) and .srcs.
set -u
source scripts/device_setup.sh
target=/opt/torch/.venv/bin/python3
doctor() { python3 -m attn_doctor "$@"; }
site() { "$1" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
digest() { (cd "$1" && find . -path ./.attn-doctor -prune -o -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum); }

wh=/tmp/wh
rm -rf "$wh" /tmp/fresh && mkdir -p "$wh"
echo "== build fa3 (head dim 128, this GPU)" | tee "$out/build.txt"
{ time doctor build fa3 --wheelhouse "$wh" --python "$target" --head-dim 128 --offline --yes \
    --source .srcs/flash-attention-0251105a.tar.gz --source .srcs/cutlass-7127592.tar.gz; echo "exit $?"; } >>"$out/build.txt" 2>&1
tail -5 "$out/build.txt"; ls -l "$wh"

# a fresh venv that sees the image's torch (as a cluster node's training env does)
"$target" -m venv /tmp/fresh
site "$target" >"$(site /tmp/fresh/bin/python)/image-torch.pth"
before=$(digest /tmp/fresh)
echo "== install fa3 --find-links, offline" | tee "$out/install.txt"
{ time doctor install fa3 --python /tmp/fresh/bin/python --find-links "$wh" --offline --yes; echo "exit $?"; } >>"$out/install.txt" 2>&1
grep -E "proven|compile|Verified|exit|real" "$out/install.txt"
doctor verify fa3 --python /tmp/fresh/bin/python >"$out/verify.txt" 2>&1; echo "verify exit $?" | tee -a "$out/verify.txt"
doctor undo --python /tmp/fresh/bin/python >"$out/undo.txt" 2>&1; echo "undo exit $?" | tee -a "$out/undo.txt"
after=$(digest /tmp/fresh)
echo "byte-exact after undo: $([ "$before" = "$after" ] && echo yes || echo NO)" | tee -a "$out/undo.txt"

# the misfit: a real extension with sm_80 code only, packed as FA3 3.0.0 for cp39-abi3 (another name than
# the build's cp310-abi3 wheel, and taken first: the wheelhouse is read in reverse name order)
mkdir -p /tmp/misfit /tmp/wh2 && cp "$wh"/*.whl /tmp/wh2/
echo '__global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }' >/tmp/misfit/k.cu
nvcc -shared -Xcompiler -fPIC -gencode arch=compute_80,code=sm_80 -o /tmp/misfit/_C.abi3.so /tmp/misfit/k.cu
python3 - <<'PY'
import base64, hashlib, zipfile
files = {"flash_attn_3/_C.abi3.so": open("/tmp/misfit/_C.abi3.so", "rb").read(), "flash_attn_3/__init__.py": b""}
info = "flash_attn_3-3.0.0.dist-info"
files[f"{info}/METADATA"] = b"Metadata-Version: 2.1\nName: flash-attn-3\nVersion: 3.0.0\n"
files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: misfit\nRoot-Is-Purelib: false\nTag: cp39-abi3-linux_x86_64\n"
rows = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}" for p, d in files.items()]
with zipfile.ZipFile("/tmp/wh2/flash_attn_3-3.0.0-cp39-abi3-linux_x86_64.whl", "w") as wheel:
    for path, data in files.items():
        wheel.writestr(path, data)
    wheel.writestr(f"{info}/RECORD", "\n".join([*rows, f"{info}/RECORD,,"]) + "\n")
PY
echo "== install fa3 --find-links (a misfit and the good wheel) --dry-run" | tee "$out/choice.txt"
doctor install fa3 --python /tmp/fresh/bin/python --find-links /tmp/wh2 --offline --dry-run >>"$out/choice.txt" 2>&1
grep -E "passed over|proven|compile" "$out/choice.txt"
ls /tmp/wh2

# xFormers: PyPI's 0.0.35 wheel (carried in .xfwh/) next to this CUDA 13 torch. The doctor's judgement
# before installing, then the truth: the wheel installed by pip alone and its extension loaded.
if ls .xfwh/xformers-*.whl >/dev/null 2>&1; then
  echo "== install xformers --find-links (PyPI's 0.0.35) --dry-run" | tee "$out/xformers.txt"
  doctor install xformers --python /tmp/fresh/bin/python --find-links .xfwh --offline --dry-run >>"$out/xformers.txt" 2>&1
  echo "exit $?" >>"$out/xformers.txt"
  /tmp/fresh/bin/python -m pip install -q --no-deps --no-index .xfwh/xformers-*.whl >>"$out/xformers.txt" 2>&1
  echo "== the truth: import xformers._C next to torch $("$target" -c 'import torch; print(torch.__version__)')" >>"$out/xformers.txt"
  /tmp/fresh/bin/python -c "import torch, xformers._C" >>"$out/xformers.txt" 2>&1; echo "import exit $?" >>"$out/xformers.txt"
  /tmp/fresh/bin/python -m pip uninstall -q -y xformers >>"$out/xformers.txt" 2>&1
  cat "$out/xformers.txt"
fi
