#!/usr/bin/env bash
# SageAttention 2.2.0 on the H100, built by pip (not the installer, which undoes a wrong build), then
# called three ways against the float32 reference: is the wrong result the adapter's or the kernel's?
set -u
case "$1" in
start)
  rm -rf /tmp/sage && mkdir -p /tmp/sage && tar -xf .srcs/SageAttention-eb615cf.tar -C /tmp/sage
  src=$(ls -d /tmp/sage/*/ | head -1)
  setsid bash -c "cd $src && TORCH_CUDA_ARCH_LIST=9.0 EXT_PARALLEL=1 MAX_JOBS=16 NVCC_THREADS=4 CUDA_HOME=/usr/local/cuda \
    python3 -m pip install --no-build-isolation --no-deps --no-index -v . > /tmp/sage.log 2>&1; echo done >> /tmp/sage.log" &
  sleep 5; tail -3 /tmp/sage.log ;;
poll)
  for i in $(seq 1 $2); do grep -q '^done' /tmp/sage.log && break; sleep 5; done
  tail -4 /tmp/sage.log
  grep -q '^done' /tmp/sage.log || exit 0
  python3 - <<'PY'
import torch
from sageattention import sageattn
torch.manual_seed(0)
for dtype in (torch.bfloat16, torch.float16):
    for causal in (False, True):
        b, s, h, d = 2, 512, 8, 128
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=dtype) for _ in range(3))
        t = lambda x: x.transpose(1, 2)
        ref = t(torch.nn.functional.scaled_dot_product_attention(t(q).float(), t(k).float(), t(v).float(), is_causal=causal))
        rel = lambda x: ((x.float() - ref).norm() / ref.norm()).item()
        print(dtype, "causal" if causal else "full",
              "NHD as is %.3g" % rel(sageattn(q, k, v, tensor_layout="NHD", is_causal=causal)),
              "HND views %.3g" % rel(t(sageattn(t(q), t(k), t(v), tensor_layout="HND", is_causal=causal))),
              "HND contiguous %.3g" % rel(t(sageattn(t(q).contiguous(), t(k).contiguous(), t(v).contiguous(), tensor_layout="HND", is_causal=causal))))
PY
  ;;
esac
