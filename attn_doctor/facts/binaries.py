"""Will a compiled extension load next to this torch? Read from ELF files, nothing imported.

For each extension of the attention packages: the libraries it needs (DT_NEEDED) and whether
the dynamic loader would find them, and the torch symbols it imports (c10::, at::, torch::)
that no torch library exports — the `undefined symbol` of an import, predicted in
milliseconds. The torch libraries are searched through their GNU hash tables, so a 100,000-
symbol libtorch is not read whole.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from attn_doctor.facts.fatbin import cuda_code
from attn_doctor.facts.model import Binary, VersionNeed
from attn_doctor.registry.cuda import ordered

# Mangled C++ names in torch's namespaces: the symbols a torch upgrade changes.
TORCH_SYMBOL = re.compile(r"^_Z(?:T[IVS])?NK?(?:3c10|2at|5torch|6caffe2)")
# c10::detail::torchCheckFail(char const*, char const*, unsigned int, std::string const&): every
# torch exports it, in the C++ ABI it was built with; TORCH_CHECK in an extension imports it.
CHECK_FAIL = {
    "cxx11": "_ZN3c106detail14torchCheckFailEPKcS2_jRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE",
    "pre-cxx11": "_ZN3c106detail14torchCheckFailEPKcS2_jRKSs",
}
# ELF symbol-version structures (the same in 32- and 64-bit files): Elf_Verneed (vn_version,
# vn_cnt, vn_file, vn_aux, vn_next), Elf_Vernaux (vna_hash, vna_flags, vna_other, vna_name,
# vna_next), Elf_Verdef (vd_version, vd_flags, vd_ndx, vd_cnt, vd_hash, vd_aux, vd_next),
# Elf_Verdaux (vda_name, vda_next).
_VERNEED, _VERNAUX, _VERDEF, _VERDAUX = "HHIII", "IHHII", "HHHHIII", "II"
_DEFAULT_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu")


class _Elf:
    """One shared object, opened with pyelftools; the parts the dynamic loader uses."""

    def __init__(self, path: str, stack: ExitStack) -> None:
        from elftools.elf.dynamic import Dynamic
        from elftools.elf.elffile import ELFFile

        self.path = path
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO named like a library would block open()
            raise OSError(f"{path} is not a regular file")
        self.file = ELFFile(stack.enter_context(open(path, "rb")))  # noqa: SIM115 (closed by the stack)
        # The dynamic table read where the PT_DYNAMIC program header says, with its strings
        # found through DT_STRTAB. pyelftools' section and segment objects would first build
        # every section, hash tables included: half a second for a CUDA torch's libraries.
        header = next((h for h in self._program_headers() if h["p_type"] == "PT_DYNAMIC"), None)
        self.dynamic: Any = (
            None if header is None else Dynamic(self.file.stream, self.file, None, header["p_offset"], False)
        )
        self._tags: dict[str, list[Any]] = {}
        for tag in self.dynamic.iter_tags() if self.dynamic is not None else ():
            self._tags.setdefault(tag.entry.d_tag, []).append(tag)
        self._hash: Any = None

    def _program_headers(self) -> list[Any]:
        return [self.file._get_segment_header(i) for i in range(self.file.num_segments())]

    def tags(self, name: str) -> list[Any]:
        return self._tags.get(name, [])

    @property
    def needed(self) -> list[str]:
        return [t.needed for t in self.tags("DT_NEEDED")]

    @property
    def soname(self) -> str:
        found = self.tags("DT_SONAME")
        return str(found[0].soname) if found else os.path.basename(self.path)

    def search_dirs(self) -> list[str]:
        """DT_RUNPATH (or the older DT_RPATH) with $ORIGIN put in."""
        origin = os.path.dirname(os.path.realpath(self.path))
        tags = self.tags("DT_RUNPATH") or self.tags("DT_RPATH")
        paths = [str(getattr(t, "runpath", None) or getattr(t, "rpath", "")) for t in tags]
        return [p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for s in paths for p in s.split(":") if p]

    def undefined(self) -> list[str]:
        """Symbols it imports and must find (weak ones may stay unresolved).

        The GNU hash table covers the defined symbols only, which the linker puts last: the
        imports are the entries before its `symoffset`. Reading just those keeps a 6,000-symbol
        extension at a few hundred entries (0.9 s -> ms on the H100's torch extension)."""
        table = self._table()
        if table is False:
            section: Any = self.file.get_section_by_name(".dynsym")
            symbols = list(section.iter_symbols()) if section is not None else []
        else:
            symbols = [table._symboltable.get_symbol(i) for i in range(1, table.params["symoffset"])]
        return [
            s.name for s in symbols if s.name and s["st_shndx"] == "SHN_UNDEF" and s["st_info"]["bind"] == "STB_GLOBAL"
        ]

    def needed_versions(self) -> dict[str, list[str]]:
        """library -> the symbol versions it must define (GLIBC_2.34, GLIBCXX_3.4.30): the
        Elf_Verneed chain DT_VERNEED points at, read as the loader reads it (pyelftools' section
        objects would first parse every section header: 15 ms a library, on every check)."""
        found: dict[str, list[str]] = {}
        for file, names in self._version_chain("DT_VERNEED", "DT_VERNEEDNUM", _VERNEED, _VERNAUX, 1, 2):
            found.setdefault(file, []).extend(names)
        return found

    def defined_versions(self) -> set[str]:
        """The symbol versions it defines: the first name of each Elf_Verdef at DT_VERDEF."""
        return {names[0] for _, names in self._version_chain("DT_VERDEF", "DT_VERDEFNUM", _VERDEF, _VERDAUX, 3, 0)}

    def _version_chain(
        self, start: str, count: str, entry: str, aux: str, counted: int, named: int
    ) -> list[tuple[str, list[str]]]:
        """(file or first name, the auxiliary entries' names) for each entry of a version chain.
        Entry fields: (…, cnt at `counted`, …, aux offset, next offset); verneed names its file
        (field 2), verdef names itself in its first aux entry."""
        if self.dynamic is None:
            return []
        _, offset = self.dynamic.get_table_offset(start)
        number = self.tags(count)
        if offset is None or not number:
            return []
        order = "<" if self.file.little_endian else ">"
        strings = self.dynamic._get_stringtable()
        stream, chain = self.file.stream, []
        for _ in range(int(number[0].entry.d_val)):
            stream.seek(offset)
            fields = struct.unpack(order + entry, stream.read(struct.calcsize(entry)))
            names, place = [], offset + fields[-2]
            for _ in range(fields[counted]):
                stream.seek(place)
                parts = struct.unpack(order + aux, stream.read(struct.calcsize(aux)))
                names.append(str(strings.get_string(parts[-2])))
                place += parts[-1]
            chain.append((str(strings.get_string(fields[named])) if entry == _VERNEED else "", names))
            if not fields[-1]:
                break
            offset += fields[-1]
        return [(file or (names[0] if names else ""), names) for file, names in chain if names or file]

    def exports(self, name: str) -> bool:
        """Whether it defines `name`, asked of its GNU hash table as the loader asks it."""
        table = self._table()
        if table is False:
            return False
        symbol = table.get_symbol(name)
        return symbol is not None and symbol["st_shndx"] != "SHN_UNDEF"

    def _table(self) -> Any:
        if self._hash is None:
            self._hash = self._gnu_hash()
        return self._hash

    def _gnu_hash(self) -> Any:
        if self.dynamic is None:
            return False
        _, offset = self.dynamic.get_table_offset("DT_GNU_HASH")
        _, symbols = self.dynamic.get_table_offset("DT_SYMTAB")
        if offset is None or symbols is None:
            return False  # no GNU hash table: an old-style library, no torch of the last decade
        return _lazy_gnu_hash(self.file, offset, _DynamicSymbols(self.file, symbols, self.dynamic))


class _Words:
    """An array of the hash table read one element at a time, when the lookup asks for it."""

    def __init__(self, stream: Any, offset: int, size: int, little_endian: bool) -> None:
        self._stream, self._offset, self._size = stream, offset, size
        self._format = ("<" if little_endian else ">") + ("I" if size == 4 else "Q")

    def __getitem__(self, index: int) -> int:
        self._stream.seek(self._offset + index * self._size)
        return int(struct.unpack(self._format, self._stream.read(self._size))[0])


def _lazy_gnu_hash(elffile: Any, offset: int, symbols: Any) -> Any:
    """pyelftools' GNUHashTable and its lookup, but with the bloom filter and the buckets read
    on demand: parsing them whole costs 0.1 s and more for each large torch library."""
    from elftools.elf.hash import GNUHashTable

    table = GNUHashTable.__new__(GNUHashTable)
    table.elffile, table._symboltable = elffile, symbols
    word, xword = elffile.structs.Elf_word("").sizeof(), elffile.structs.Elf_xword("").sizeof()
    header = _Words(elffile.stream, offset, word, elffile.little_endian)
    nbuckets, symoffset, bloom_size, bloom_shift = (header[i] for i in range(4))
    bloom_at = offset + 4 * word
    buckets_at = bloom_at + bloom_size * xword
    table.params = {  # type: ignore[assignment]  # the lookup only indexes these
        "nbuckets": nbuckets,
        "symoffset": symoffset,
        "bloom_size": bloom_size,
        "bloom_shift": bloom_shift,
        "bloom": _Words(elffile.stream, bloom_at, xword, elffile.little_endian),
        "buckets": _Words(elffile.stream, buckets_at, word, elffile.little_endian),
    }
    table._wordsize, table._xwordsize = word, xword
    table._chain_pos = buckets_at + nbuckets * word
    return table


class _DynamicSymbols:
    """Entry i of the dynamic symbol table, read when the hash table asks for it."""

    def __init__(self, elffile: Any, offset: int, dynamic: Any) -> None:
        from elftools.elf.sections import Symbol

        self._symbol = Symbol
        self._file = elffile
        self._offset = offset
        self._size = elffile.structs.Elf_Sym.sizeof()
        self._strings = dynamic._get_stringtable()  # the DT_STRTAB table pyelftools found

    def get_symbol(self, index: int) -> Any:
        from elftools.common.utils import struct_parse

        entry = struct_parse(self._file.structs.Elf_Sym, self._file.stream, self._offset + index * self._size)
        return self._symbol(entry, self._strings.get_string(entry["st_name"]))


def _library_path() -> list[str]:
    return [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]


def _ld_cache() -> dict[str, str]:
    """soname -> path from the loader's cache (`ldconfig -p`)."""
    ldconfig = shutil.which("ldconfig") or ("/sbin/ldconfig" if os.path.exists("/sbin/ldconfig") else None)
    if ldconfig is None:
        return {}
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    cache: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        name, _, path = line.strip().partition(" => ")
        cache.setdefault(name.split(" (")[0], path)
    return cache


class Loader:
    """The dynamic loader's view, enough to predict a dlopen after `import torch`."""

    def __init__(self, stack: ExitStack, torch_location: str) -> None:
        self.stack = stack
        self.torch = os.path.realpath(torch_location) + os.sep
        self.opened: dict[str, _Elf] = {}
        self.system: dict[str, str] = {}  # soname -> where `import torch` found it (libstdc++, libc)
        self._cache: dict[str, str] | None = None

    def is_torch(self, path: str) -> bool:
        """torch's own libraries (torch/lib, torch/_C): the only ones that export torch symbols.
        The NVIDIA wheels' libraries that torch loads count as present, but are not opened."""
        return os.path.realpath(path).startswith(self.torch)

    def open(self, path: str) -> _Elf:
        real = os.path.realpath(path)
        if real not in self.opened:
            self.opened[real] = _Elf(path, self.stack)
        return self.opened[real]

    def find(self, soname: str, dirs: Iterable[str]) -> str | None:
        """Where the loader would find it. The default folders are tried before the loader's
        cache: a library there is found either way, and most are (libc, libstdc++), so the
        `ldconfig -p` subprocess runs only for the rest."""
        for folder in [*dirs, *_library_path(), *_DEFAULT_DIRS]:
            candidate = os.path.join(folder, soname)
            if os.path.exists(candidate):
                return candidate
        if self._cache is None:
            self._cache = _ld_cache()
        return self._cache.get(soname)

    def closure(self, roots: list[str]) -> dict[str, _Elf | None]:
        """soname -> object for everything `import torch` loads. System libraries (libc,
        libstdc++) are present but None: they are never searched for torch symbols."""
        loaded: dict[str, _Elf | None] = {}
        todo = list(roots)
        while todo:
            elf = self.open(todo.pop())
            if loaded.get(elf.soname) is not None:
                continue
            loaded[elf.soname] = elf
            for soname in elf.needed:
                if soname not in loaded:
                    path = self.find(soname, elf.search_dirs())
                    if path is not None and self.is_torch(path):
                        todo.append(path)
                    elif path is not None:
                        loaded[soname] = None
                        self.system.setdefault(soname, path)
        return loaded


def torch_roots(torch_location: str) -> list[str]:
    """What `import torch` loads first: torch/_C*.so, which brings in libtorch and the rest."""
    folder = Path(torch_location)
    roots = sorted(str(p) for p in folder.glob("_C*.so"))
    lib = folder / "lib"
    # a torch without _C (or one whose _C needs nothing) still puts its lib/ in the process
    return roots or sorted(str(p) for p in lib.glob("lib*.so*"))


def check_extension(extension: str, package: str, loader: Loader, torch: dict[str, _Elf | None]) -> Binary:
    """Predict what dlopen of `extension` would say after `import torch`."""
    elf = loader.open(extension)
    missing_libraries = []
    libraries: list[_Elf] = []  # searched first: the libraries it names
    for soname in elf.needed:
        if soname in torch:
            known = torch[soname]
            if known is not None:
                libraries.append(known)
            continue
        path = loader.find(soname, elf.search_dirs())
        if path is None:
            missing_libraries.append(soname)
        elif loader.is_torch(path):
            libraries.append(loader.open(path))
    missing_versions = _missing_versions(elf, loader)
    torch_symbols = [s for s in elf.undefined() if TORCH_SYMBOL.match(s)]
    searched = [*libraries, *(o for o in torch.values() if o is not None and o not in libraries)]
    missing = [s for s in torch_symbols if not any(lib.exports(s) for lib in searched)]
    readable = demangle(missing)
    return Binary(
        path=extension,
        package=package,
        needed=tuple(elf.needed),
        torch_symbols=len(torch_symbols),
        missing_libraries=tuple(missing_libraries),
        missing_symbols=tuple(missing),
        readable_symbols=tuple(readable[s] for s in missing),
        abi=_abi(torch_symbols),
        torch_abi=_torch_abi(o for o in torch.values() if o is not None),
        missing_versions=tuple(missing_versions),
        cuda_code=ordered(cuda_code(extension)),
    )


def _missing_versions(elf: _Elf, loader: Loader) -> list[VersionNeed]:
    """Symbol versions it needs that the library the loader would give it does not define: a
    glibc or libstdc++ older than the one it was built against (`version GLIBCXX_3.4.30 not
    found`). The library is the one `import torch` already loaded under that name, else the
    one the loader would find for it."""
    found = []
    for library, versions in elf.needed_versions().items():
        path = loader.system.get(library) or loader.find(library, elf.search_dirs())
        if path is None or loader.is_torch(path):
            continue  # a missing library is its own finding; torch's are judged by symbol
        defined = loader.open(path).defined_versions()
        if not defined:
            continue  # an unversioned library: the loader checks nothing
        found += [
            VersionNeed(library, version, path, _newest(defined, version))
            for version in versions
            if version not in defined
        ]
    return found


def _newest(defined: set[str], like: str) -> str | None:
    """The newest version the library defines in the family of `like` (GLIBCXX_3.4.30 for GLIBCXX_…)."""
    family = like.rsplit("_", 1)[0] + "_"
    same = [d for d in defined if d.startswith(family) and re.fullmatch(r"[\d.]+", d[len(family) :])]
    return max(same, key=lambda d: tuple(int(x) for x in d[len(family) :].split(".")), default=None)


def _abi(symbols: list[str]) -> str | None:
    """The C++ ABI an extension was built with, from how its std::string arguments are mangled."""
    if any("St7__cxx11" in s for s in symbols):
        return "cxx11"
    if any(re.search(r"RKSs|Ss[A-Z_E]|Ss$", s) for s in symbols):
        return "pre-cxx11"
    return None


def _torch_abi(libraries: Iterable[_Elf]) -> str | None:
    c10 = [lib for lib in libraries if lib.soname.startswith("libc10.")]  # where torchCheckFail lives
    for abi, symbol in CHECK_FAIL.items():
        if any(lib.exports(symbol) for lib in c10):
            return abi
    return None


def check_binaries(extensions: list[tuple[str, str]], torch_location: str | None) -> tuple[Binary, ...]:
    """Every (extension path, package) against the torch at `torch_location`; an unreadable
    file is reported as such, never raised."""
    if not extensions or torch_location is None:
        return ()
    results = []
    with ExitStack() as stack:
        loader = Loader(stack, torch_location)
        try:
            torch = loader.closure(torch_roots(torch_location))
        except Exception as error:  # see _unreadable
            problem = f"torch's libraries unreadable: {_unreadable(error)}"
            return tuple(Binary(path=p, package=n, error=problem) for p, n in extensions)
        for path, package in extensions:
            try:
                results.append(check_extension(path, package, loader, torch))
            except Exception as error:  # see _unreadable
                results.append(Binary(path=path, package=package, error=_unreadable(error)))
    return tuple(results)


def _unreadable(error: Exception) -> str:
    """Why an ELF file could not be read. A damaged file (one flipped bit) makes pyelftools raise
    whatever its parser hits: ELFError, UnicodeDecodeError on a name, struct.error, construct's
    errors, IndexError. Each is one unreadable file, a finding, never the end of the report."""
    return f"{type(error).__name__}: {str(error)[:200]}"


def demangle(symbols: Iterable[str]) -> dict[str, str]:
    """Readable C++ names through the system's c++filt; mangled names stay as they are without it."""
    names = list(symbols)
    tool = shutil.which("c++filt")
    if not names or tool is None:
        return {s: s for s in names}
    try:
        out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {s: s for s in names}
    readable = out.splitlines()
    return dict(zip(names, readable, strict=False)) if len(readable) == len(names) else {s: s for s in names}


def torch_abi(torch_location: str) -> str | None:
    """The C++ ABI of the torch at `torch_location` ("cxx11" | "pre-cxx11"), read off its libc10:
    what FA2's prebuilt wheel names encode as cxx11abiTRUE/FALSE. None when unreadable."""
    libraries = sorted(Path(torch_location, "lib").glob("libc10.so*"))
    if not libraries:
        return None
    with ExitStack() as stack:
        try:
            return _torch_abi([Loader(stack, torch_location).open(str(libraries[0]))])
        except Exception:  # a damaged libc10: see _unreadable
            return None
