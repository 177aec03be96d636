"""The CUDA code a shared library carries: for each entry of its fatbins, a cubin for one SM
architecture (`sm_90`, arch-specific `sm_90a`, family `sm_100f`) or PTX the driver can compile for
that architecture and newer ones (`compute_90`). Read from the headers alone, hopping from one to
the next by their sizes: no kernel is read or decompressed, so a library of hundreds of MB costs
milliseconds.

Layout, little-endian. The ELF section `.nv_fatbin` (what the CUDA runtime registers) holds
containers one after another, on 8-byte boundaries; a `-rdc` build keeps further copies in
`__nv_relfatbin`, which the runtime falls back to (seen on an H100: a module whose `.nv_fatbin`
had sm_80 only ran from its relocatable sm_90 code and from its compute_80 PTX there), so both
are read. A container is a 16-byte header (u32 magic 0xBA55ED50, u16 version, u16 header size, u64 size
of the entries that follow), then entries, each a header of at least 64 bytes: u16 kind (1 PTX,
2 cubin), u16 version, u32 header size, u64 payload size (the next entry follows the payload),
u32 arch at +28 (the SM number: 90, 100, 121), u64 flags at +40 (0x100000 the "a" suffix,
0x200000 the "f" one). Sources: `fatBinaryHeader` and `fatBinaryCodeKind` of NVIDIA's fatbinary.h;
the entry header as ZLUDA reads it
(https://github.com/vosen/ZLUDA/blob/6f068f2737970cb2745748101b611eb3f3934723/cuda_types/src/dark_api.rs);
the suffix flags as nvcc 13.0 writes them (tests/test_gpu_code.py builds each case with nvcc).
"""

from __future__ import annotations

import os
import stat
import struct
from collections import Counter
from collections.abc import Mapping
from typing import BinaryIO

from attn_doctor.registry.cuda import ordered

MAGIC = 0xBA55ED50
SECTIONS = (b".nv_fatbin", b"__nv_relfatbin")
_CONTAINER = struct.Struct("<IHHQ")
_ENTRY = struct.Struct("<HHIQIIHHI8xQ")  # kind, version, header size, payload size, ..., arch at +28, flags at +40
_ENTRY_HEADER = 64  # the smallest entry header
_KINDS = {1: "compute", 2: "sm"}  # PTX, cubin; NVVM IR (8) and the old cubin format (4) are not run
_SUFFIXES = {0: "", 0x100000: "a", 0x200000: "f"}
_SUFFIX_MASK = 0x300000
# what a damaged or hostile file may cost: the section names read, the headers hopped over
MAX_NAMES_BYTES = 1 << 20
MAX_HEADERS = 1_000_000  # libtorch_cuda.so's has ~5,000


class FatbinError(Exception):
    """A fatbin that does not read as one (a damaged or truncated file)."""


def cuda_code(path: str) -> Counter[str]:
    """How many entries of each code the library's fatbins carry ("sm_90a": 4, "compute_90": 1);
    empty for a file without one. Raises OSError or FatbinError."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO named like a library would block open()
        raise OSError(f"{path} is not a regular file")
    found: Counter[str] = Counter()
    with open(path, "rb") as stream:
        for start, size in _sections(stream, SECTIONS):
            found += _entries(stream, start, size)
    return found


def _sections(stream: BinaryIO, wanted: tuple[bytes, ...]) -> list[tuple[int, int]]:
    """(file offset, size) of the named sections of a 64-bit little-endian ELF file, read from its
    section header table alone."""
    ident = stream.read(64)
    if len(ident) < 64 or ident[:4] != b"\x7fELF":
        raise FatbinError("not an ELF file")
    if ident[4] != 2 or ident[5] != 1:
        return []  # not 64-bit little-endian: no CUDA library is anything else
    (shoff,) = struct.unpack_from("<Q", ident, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ident, 0x3A)
    if shoff == 0 or shnum == 0 or shentsize < 64:
        return []
    stream.seek(shoff)
    table = stream.read(shentsize * shnum)
    if len(table) < shentsize * shnum or shstrndx >= shnum:
        raise FatbinError("truncated section header table")
    headers = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
    _, _, _, _, names_offset, names_size = headers[shstrndx]
    stream.seek(names_offset)
    names = stream.read(min(names_size, MAX_NAMES_BYTES))
    return [
        (offset, size)
        for name, _, _, _, offset, size in headers
        if any(names[name : name + len(w) + 1] == w + b"\0" for w in wanted)
    ]


def _entries(stream: BinaryIO, start: int, size: int) -> Counter[str]:
    found: Counter[str] = Counter()
    position, end = start, start + size
    hops = 0
    while position + _CONTAINER.size <= end:
        hops += 1
        if hops > MAX_HEADERS:
            raise FatbinError(f"over {MAX_HEADERS} fatbin headers: not a fatbin section")
        stream.seek(position)
        head = stream.read(_CONTAINER.size)
        magic, _, header_size, entries_size = _CONTAINER.unpack(head)
        if magic != MAGIC:
            if head[:8] == bytes(8):  # padding between containers of different objects
                position = _past_zeros(stream, position, end)
                continue
            raise FatbinError(f"no fatbin header at offset {position:#x}")
        entry, last = position + header_size, min(position + header_size + entries_size, end)
        while entry + _ENTRY.size <= last:
            hops += 1
            if hops > MAX_HEADERS:
                raise FatbinError(f"over {MAX_HEADERS} fatbin headers: not a fatbin section")
            stream.seek(entry)
            kind, _, entry_header, payload, _, _, _, _, arch, flags = _ENTRY.unpack(stream.read(_ENTRY.size))
            if entry_header < _ENTRY_HEADER:
                raise FatbinError(f"entry header of {entry_header} bytes at offset {entry:#x}")
            if kind in _KINDS:
                found[f"{_KINDS[kind]}_{arch}{_SUFFIXES.get(flags & _SUFFIX_MASK, '')}"] += 1
            entry += entry_header + payload
        position = (last + 7) & ~7
    return found


def _past_zeros(stream: BinaryIO, position: int, end: int) -> int:
    """The first 8-byte boundary at or after `position` where the zero padding ends."""
    while position < end:
        stream.seek(position)
        chunk = stream.read(min(1 << 16, end - position))
        if not chunk:
            return end
        zeros = len(chunk) - len(chunk.lstrip(b"\0"))
        if zeros < len(chunk):
            return position + (zeros & ~7)
        position += len(chunk)
    return end


def torch_cuda_code(torch_location: str) -> tuple[str, ...]:
    """The GPU code torch's own kernels carry: the codes of libtorch_cuda.so that at least half as
    many entries have as its most common one. A handful of kernels also carry another architecture
    (sm_100a, sm_121a); torch.cuda.get_arch_list() does not list those, and neither does this."""
    library = os.path.join(torch_location, "lib", "libtorch_cuda.so")
    if not os.path.isfile(library):
        return ()
    return most_carried(cuda_code(library))


def most_carried(counts: Mapping[str, int]) -> tuple[str, ...]:
    """The codes at least half as many entries have as the most common one."""
    most = max(counts.values(), default=0)
    return ordered(code for code, count in counts.items() if 2 * count >= most)
