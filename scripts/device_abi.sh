#!/usr/bin/env bash
# On a GPU machine with torch: build a real extension against the installed torch with torch's
# own cpp_extension, place it as FA2's flash_attn_2_cuda next to the real FA2 files, and show
# that `check` reads it as clean, that it really loads, and what reading it costs (benchmark).
# Same set-up as scripts/device_check.sh (wheels in .whl/ and .cache/wheels/).
source scripts/device_setup.sh

echo "== build an extension against the installed torch (torch.utils.cpp_extension)"
mkdir -p /tmp/ext
python3 - <<'PY'
import time, torch
from torch.utils.cpp_extension import load_inline
source = """
#include <torch/extension.h>
torch::Tensor fwd(torch::Tensor q) { TORCH_CHECK(q.dim() == 4, "q must be 4-D"); return q * 2; }
"""
started = time.time()
load_inline(name="flash_attn_2_cuda", cpp_sources=source, functions=["fwd"], build_directory="/tmp/ext")
print(f"built with torch {torch.__version__} in {time.time() - started:.0f} s")
PY
python3 -m venv --without-pip /tmp/abi
site=$(/tmp/abi/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/machine-torch.pth"
python3 -m pip --python /tmp/abi/bin/python install -q --no-index --no-deps .cache/wheels/flash_attn-2.8.3.post2-*.whl
suffix=$(/tmp/abi/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
cp /tmp/ext/flash_attn_2_cuda.so "$site/flash_attn_2_cuda$suffix"

echo "== check: the extension read as ELF"
python3 -m attn_doctor check --python /tmp/abi/bin/python --format json > "$out/h100-extension-check.json"; echo "exit $?"
python3 -m attn_doctor check --python /tmp/abi/bin/python -v | sed -n '/Compiled extensions/,/^$/p'
python3 -c 'import json,sys; [print(b) for b in json.load(open(sys.argv[1]))["binaries"]]' "$out/h100-extension-check.json"
echo "== the real load"
/tmp/abi/bin/python -c "import torch, ctypes; ctypes.CDLL('$site/flash_attn_2_cuda$suffix'); print('loads')"
python3 -m attn_doctor check --python /tmp/abi/bin/python --deep --format json > "$out/h100-extension-deep.json"
python3 -c 'import json,sys; [print(i) for i in json.load(open(sys.argv[1]))["imports"]]' "$out/h100-extension-deep.json"

echo "== benchmark, with the extension to read"
python3 scripts/bench_check.py --python /tmp/abi/bin/python --runs 5 | tee "$out/bench-extension.txt"
python3 scripts/profile_check.py --python /tmp/abi/bin/python
python3 - <<'PY'
import cProfile, json, pstats
from attn_doctor.facts.binaries import check_binaries
report = json.load(open("/tmp/attn-doctor-device/h100-extension-check.json" if False else __import__("os").environ["OUT"] + "/h100-extension-check.json"))
found = [(b["path"], b["package"]) for b in report["binaries"]]
cProfile.run("check_binaries(found, report['torch']['location'])", "/tmp/binaries.prof")
pstats.Stats("/tmp/binaries.prof").sort_stats("cumtime").print_stats(18)
PY
