#!/usr/bin/env bash
# What the installed binaries can run on this GPU, checked on a real one: the doctor's reading of
# torch's fatbins against torch.cuda.get_arch_list(), extensions built here for chosen
# architectures (the doctor's verdict against a real launch), Triton's ptxas, and `check`'s time
# against the commit before the fatbin reading (alternating runs, same host).
# Carry: .whl (the doctor's dependencies), .fa2whl (FA2's pure-Python wheel, as the tests build it) and .old (`git archive BASE attn_doctor`, for the timing).
source scripts/device_setup.sh
py=$(command -v python3)
torch_dir=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')

echo "== torch: get_arch_list against the fatbins of libtorch_cuda.so"
python3 - "$torch_dir" <<'PY' | tee "$out/torch-archs.txt"
import sys, time, torch
from attn_doctor.facts.fatbin import cuda_code, torch_cuda_code
started = time.perf_counter()
read = torch_cuda_code(sys.argv[1])
took = time.perf_counter() - started
started = time.perf_counter()
torch_cuda_code(sys.argv[1])
again = time.perf_counter() - started
print("get_arch_list:", torch.cuda.get_arch_list())
print("doctor reads: ", list(read), f"({took * 1000:.1f} ms; again, the headers cached: {again * 1000:.1f} ms)")
print("every entry:  ", dict(cuda_code(sys.argv[1] + "/lib/libtorch_cuda.so")))
print("equal:", sorted(torch.cuda.get_arch_list()) == sorted(read))
PY

echo "== extensions built here, one architecture each: the doctor's verdict against a real launch"
mkdir -p /tmp/ext && cd /tmp/ext
cat > k.cu <<'CU'
#include <cstdio>
__global__ void scale(float* x) { x[threadIdx.x] *= 2.0f; }
extern "C" int launch() {
  float* x; cudaMalloc(&x, 128); scale<<<1, 32>>>(x); cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  cudaFree(x); if (e != cudaSuccess) printf("%s\n", cudaGetErrorString(e)); return e == cudaSuccess ? 0 : 1; }
CU
for target in sm_80 sm_86 sm_89 sm_90 sm_90a sm_100f compute_80 compute_90a; do
  arch=${target/sm_/compute_}
  nvcc -shared -Xcompiler -fPIC -gencode arch=$arch,code=$target -o k_$target.so k.cu || continue
  ran=$(python3 -c "import ctypes; print('runs' if ctypes.CDLL('./k_$target.so').launch() == 0 else 'fails')")
  said=$(cd - >/dev/null; python3 -c "
from attn_doctor.facts.fatbin import cuda_code
from attn_doctor.registry.cuda import runs_any
codes = tuple(cuda_code('/tmp/ext/k_$target.so'))
print(codes, 'runs' if runs_any(codes, '9.0') else 'fails')")
  echo "$target: launched: $ran; doctor: $said"
done | tee "$out/extensions.txt"
cd - >/dev/null

echo "== check with an FA2 extension built for sm_89 only (a 4090's build copied here)"
python3 -m venv --without-pip /tmp/moved
site=$(/tmp/moved/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/machine-torch.pth"
python3 -m pip --python /tmp/moved/bin/python install -q --no-index --no-deps .fa2whl/flash_attn-2.8.3.post2-*.whl
nvcc -shared -Xcompiler -fPIC -gencode arch=compute_89,code=sm_89 -o "$site/flash_attn_2_cuda$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')" /tmp/ext/k.cu
python3 -m attn_doctor check --python /tmp/moved/bin/python --format json > "$out/h100-extension-sm89.json"; echo "exit $?"
python3 -m attn_doctor check --python /tmp/moved/bin/python | grep -E "no-gpu-code|carries no code|Use|No backend" | head

echo "== this machine, and as judged for other GPUs (Triton $(python3 -c 'import triton; print(triton.__version__)'))"
python3 -m attn_doctor check --format json > "$out/h100-check-gpu-code.json"; echo "exit $?"
python3 -c "import json; d = json.load(open('$out/h100-check-gpu-code.json')); print('torch cuda_code', d['torch']['cuda_code']); print('ptxas', d['ptxas'])"
for gpu in GTX1080 GB10 RTX5090; do
  echo "-- --gpu $gpu"; python3 -m attn_doctor check --gpu $gpu --format json | python3 -c "import json,sys; [print(' ', f['code'], f['title']) for f in json.load(sys.stdin)['findings'] if f['code'] in ('torch-no-gpu-code','triton-ptxas-too-old')]"
done

echo "== check's time: before the fatbin reading (.old) and now, alternating"
python3 - <<'PY' | tee "$out/check-time.txt"
import os, statistics, subprocess, sys, time
def run(path):
    env = {**os.environ, "PYTHONPATH": f"/tmp/site:{path}"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "attn_doctor", "check", "--format", "json"], env=env, stdout=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t
runs = {"before": [], "now": []}
run(".old"); run(os.getcwd())
for _ in range(9):
    runs["before"].append(run(os.path.abspath(".old"))); runs["now"].append(run(os.getcwd()))
for name, times in runs.items():
    print(f"{name:7} median {statistics.median(times):.3f} s  ({', '.join(f'{t:.3f}' for t in times)})")
print(f"now / before: {statistics.median(runs['now']) / statistics.median(runs['before']):.3f}")
PY
