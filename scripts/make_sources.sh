#!/usr/bin/env bash
# Here, before a device run: the sources `scripts/device_sources.sh` builds from, into .srcs/ (not
# committed), each at the commit attn-doctor pins (attn_doctor/registry/recipes.py): what a cluster
# with no network would carry. git archive writes the commit into the archive, which
# `install --source` checks. MIRRORS: a folder of bare clones (the search tool's fetch makes them:
# Dao-AILab+flash-attention, thu-ml+SageAttention, NVIDIA+cutlass, each with repo/ inside).
set -eu
mirrors=${1:-/work/.mirror}
mkdir -p .srcs
fa=$mirrors/Dao-AILab+flash-attention/repo sage=$mirrors/thu-ml+SageAttention/repo cutlass=$mirrors/NVIDIA+cutlass/repo
# FA3 builds hopper/ and reads ../README.md; CUTLASS (its csrc/cutlass submodule) only include/
git -C "$fa" archive --prefix=flash-attention/ -o "$PWD/.srcs/flash-attention-0251105a.tar.gz" 0251105a2fb19d2957484b7f023cd8c115286ced -- hopper README.md
git -C "$cutlass" archive --prefix=cutlass/ -o "$PWD/.srcs/cutlass-7127592.tar.gz" 7127592069c2fe01b041e174ba4345ef9b279671 -- include
# SageAttention 2.2.0 with PR #307 (the mirror lacks the images' blobs: the build needs none)
git -C "$sage" archive --prefix=SageAttention/ -o "$PWD/.srcs/SageAttention-ff71e1e.tar" ff71e1e7ce086fff8669e7eb116ee77e265dbac1 -- setup.py sageattention csrc LICENSE README.md pyproject.toml
# FA2: PyPI's sdist, checked against PyPI's sha256
python3 - <<'PY'
import hashlib, json, urllib.parse, urllib.request
index = "https://pypi.org/pypi/flash-attn/json"
for f in json.load(urllib.request.urlopen(index))["releases"]["2.8.3.post2"]:
    if f["packagetype"] == "sdist":
        data = urllib.request.urlopen(urllib.parse.urljoin(index, f["url"])).read()
        assert hashlib.sha256(data).hexdigest() == f["digests"]["sha256"], "sha256 differs from PyPI's"
        open(f".srcs/{f['filename']}", "wb").write(data)
PY
ls -l .srcs
