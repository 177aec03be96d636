"""Runs INSIDE the target interpreter and prints what it sees as JSON. Standard library only.

The target may be any Python from 3.8 on, with none of the doctor's dependencies, so this file
keeps to 3.8 syntax and imports nothing of attn_doctor. It never imports a package it inspects:
distributions are read from their dist-info, and imports are resolved with the finders alone
(`import flash_attn` would run FA2's __init__, which loads the CUDA extension and may crash).
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 8):  # before importlib.metadata: say so in one line
    sys.exit("Python {}.{} is older than 3.8, the oldest attn-doctor can read".format(*sys.version_info[:2]))

import base64
import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import stat
import sysconfig
import types
from typing import Any, Dict

Json = Dict[str, Any]  # typing.Dict: this module must import on Python 3.8


def _canonical(name: str) -> str:
    return name.replace("_", "-").replace(".", "-").lower()


def interpreter() -> Json:
    prefix = sys.prefix
    in_venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
    if in_venv:
        environment = "venv"
    elif os.path.isdir(os.path.join(prefix, "conda-meta")):
        environment = "conda"
    else:
        environment = "system"
    stdlib = sysconfig.get_paths().get("stdlib", "")
    # PEP 668: the marker sits in the stdlib folder and does not apply inside a venv.
    managed = (not in_venv) and os.path.isfile(os.path.join(stdlib, "EXTERNALLY-MANAGED"))
    try:
        pip_version = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        pip_version = None
    scripts = sysconfig.get_paths().get("scripts", "")
    uv = shutil.which("uv", path=os.pathsep.join([scripts, os.environ.get("PATH", "")]))
    libc, libc_version = platform.libc_ver()
    site = []
    for key in ("purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path and path not in site:
            site.append(path)
    return {
        "executable": sys.executable,
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": sysconfig.get_platform(),
        "environment": environment,
        "prefix": prefix,
        "site_packages": site,
        "pip_version": pip_version,
        "uv": uv,
        "externally_managed": managed,
        "uv_managed": in_venv and _made_by_uv(prefix),
        "glibc": libc_version if libc == "glibc" else None,
    }


def _made_by_uv(prefix: str) -> bool:
    """A venv that uv made says so in its pyvenv.cfg (`uv = 0.9.5`)."""
    try:
        with open(os.path.join(prefix, "pyvenv.cfg"), encoding="utf-8") as config:
            return any(line.split("=")[0].strip() == "uv" for line in config)
    except OSError:
        return False


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _record(
    dist: importlib.metadata.Distribution,
) -> tuple[list[tuple[str, str | None, int | None]] | None, str | None]:
    """RECORD rows as (path, hash, size), and the sha256 of RECORD itself (what a lock file
    keeps: a reinstall changes it); (None, None) when RECORD is absent."""
    text = dist.read_text("RECORD")
    if text is None:
        return None, None
    import csv

    rows = []
    try:
        for row in csv.reader(text.splitlines()):
            if not row:
                continue
            path = row[0]
            recorded_hash = row[1] if len(row) > 1 and row[1] else None
            size = int(row[2]) if len(row) > 2 and row[2].isdigit() else None
            rows.append((path, recorded_hash, size))
    except csv.Error as error:  # a row over csv's field limit, a NUL: a damaged RECORD, not a crash
        raise ValueError("RECORD unreadable ({})".format(error)) from error
    return rows, hashlib.sha256(text.encode("utf-8")).hexdigest()


def _direct_url(dist: importlib.metadata.Distribution) -> tuple[bool, str | None]:
    text = dist.read_text("direct_url.json")
    if not text:
        return False, None
    try:
        data = json.loads(text)
    except ValueError:
        return False, None
    return bool(data.get("dir_info", {}).get("editable")), data.get("url")


INSTALLED: Dict[str, Any] = {}  # every distribution's name -> version (None: not in the folder name)


def markers() -> Json:
    """The PEP 508 environment markers of this interpreter, to evaluate Requires-Dist with."""
    implementation = sys.implementation
    version = "{0.major}.{0.minor}.{0.micro}".format(implementation.version)
    if implementation.version.releaselevel != "final":
        version += implementation.version.releaselevel[0] + str(implementation.version.serial)
    return {
        "implementation_name": implementation.name,
        "implementation_version": version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }


def distributions(names: list[str], verify: list[str], hash_limit: int | None) -> list[Json]:
    """Read every dist-info of the named distributions on sys.path; check the RECORD of those
    in `verify` (torch's 15,000 files are left alone: hashing them is not instant)."""
    wanted = set(_canonical(n) for n in names)
    verified = set(_canonical(n) for n in verify)
    found = []
    for dist in importlib.metadata.distributions():
        dist_path = str(getattr(dist, "_path", ""))
        folder = os.path.basename(dist_path)
        for suffix in (".dist-info", ".egg-info"):
            if folder.endswith(suffix):
                folder = folder[: -len(suffix)]
        folder_name = _canonical(folder.split("-")[0])
        # every distribution by its folder's name and version (`name-version.dist-info`): what
        # the requirements of the attention packages are checked against, as `pip check` does
        folder_version = folder.split("-")[1] if folder.count("-") == 1 else None
        INSTALLED.setdefault(folder_name, folder_version)
        # The folder name is the normalised distribution name: filtering on it first spares
        # reading the METADATA of every other distribution in a large environment.
        if folder_name not in wanted:
            continue
        problem = None
        try:
            name = dist.metadata["Name"] if dist.metadata is not None else None
            version = dist.metadata["Version"] if dist.metadata is not None else None
        except UnicodeDecodeError as error:
            name, version, problem = None, None, "METADATA is not valid UTF-8 ({})".format(error.reason)
        except Exception as error:  # any unreadable METADATA is a finding, never a crash
            name, version, problem = None, None, "METADATA unreadable: {}".format(error)
        canonical = _canonical(name) if name else folder_name
        if name is None and problem is None:
            metadata_path = os.path.join(dist_path, "METADATA")
            if not os.path.lexists(metadata_path):
                problem = "no METADATA file"
            elif not os.path.isfile(metadata_path):
                problem = "METADATA unreadable (not a file)"
            else:
                problem = "METADATA has no Name"
        entry: Json = {
            "name": canonical,
            "version": version,
            "dist_info": dist_path,
            "location": os.path.dirname(dist_path),
            "metadata_problem": problem,
        }
        try:
            entry["installer"] = (dist.read_text("INSTALLER") or "").strip() or None
            entry["editable"], entry["source_url"] = _direct_url(dist)
            entry["requires"] = list(dist.requires or []) if problem is None else []
            # torch's RECORD alone has 30,000 rows: only the verified packages' are read
            rows, entry["record_sha256"] = _record(dist) if canonical in verified else ([], None)
        except (OSError, UnicodeDecodeError, ValueError) as error:
            entry["metadata_problem"] = problem or "dist-info unreadable: {}".format(error)
            rows = None
        if rows is None and entry["metadata_problem"] is None:  # None: a verified one without RECORD
            entry["metadata_problem"] = "no RECORD file"
        entry["files_total"] = len(rows or [])
        entry["_rows"] = rows or []
        found.append(entry)
    _verify(found, hash_limit)
    return found


def _inside_environment(path: str, location: str) -> bool:
    """Within the distribution's site-packages or the environment's prefix (scripts in bin/, data
    files in share/): where an install writes its files."""
    for folder in (location, sys.prefix):
        root = os.path.normpath(folder)
        if path == root or path.startswith(root + os.sep):
            return True
    return False


def _verify(found: list[Json], hash_limit: int | None) -> None:
    """Compare every file with its RECORD row, and name whose copy a changed file now is."""
    owners: dict[str, list[tuple[str, str]]] = {}  # absolute path -> [(distribution, recorded hash)]
    for entry in found:
        for path, recorded_hash, _size in entry["_rows"]:
            if recorded_hash is None:
                continue  # .pyc files and RECORD itself: caches, not the package's contents
            absolute = os.path.normpath(os.path.join(entry["location"], path))
            owners.setdefault(absolute, []).append((entry["name"], recorded_hash))
    for entry in found:
        modified, missing, extensions = [], [], []
        hashed = size_only = 0
        shared: dict[str, list[str]] = {}
        for path, recorded_hash, size in entry["_rows"]:
            absolute = os.path.normpath(os.path.join(entry["location"], path))
            # vendored shared libraries live in `<name>.libs/`; the rest are extension modules
            if path.endswith((".so", ".pyd")) and ".libs/" not in path:
                extensions.append(path)
            if recorded_hash is None:
                continue  # RECORD itself, .pyc files: pip records no hash for them
            for other, _ in owners.get(absolute, []):
                if other != entry["name"]:
                    shared.setdefault(other, []).append(path)
            if not _inside_environment(absolute, entry["location"]):
                continue  # a row naming /proc/... or /dev/...: pip writes nothing there, and it is never opened
            if not os.path.lexists(absolute):
                missing.append(path)
                continue
            try:
                info = os.stat(absolute)
                if not stat.S_ISREG(info.st_mode):  # a FIFO or device named in RECORD: never opened
                    modified.append({"path": path, "now_matches": None})
                    continue
                actual_size = info.st_size
                if hash_limit is not None and actual_size > hash_limit and size is not None:
                    size_only += 1
                    if actual_size != size:
                        modified.append({"path": path, "now_matches": None})
                    continue
                actual = _sha256(absolute)
            except OSError:
                missing.append(path)
                continue
            hashed += 1
            if actual != recorded_hash:
                now = [d for d, h in owners.get(absolute, []) if h == actual and d != entry["name"]]
                modified.append({"path": path, "now_matches": now[0] if now else None})
        del entry["_rows"]
        entry.update(
            files_hashed=hashed,
            files_size_only=size_only,
            modified=modified,
            missing=missing,
            shared=[{"other": k, "paths": sorted(v)} for k, v in sorted(shared.items())],
            extension_modules=sorted(extensions),
        )


def _extends_path(init_file: str) -> bool:
    """True when a package __init__ widens its __path__ (pkgutil.extend_path), as FA2 does on
    upstream main, so that its submodules are searched in every sys.path entry."""
    try:
        with open(init_file, encoding="utf-8", errors="replace") as handle:
            return "extend_path(" in handle.read()
    except OSError:
        return False


def _ask_finders(name: str, search: list[str] | None, last: bool) -> tuple[Any, str | None, list[str]]:
    """The first spec the meta-path finders give, asked in order as the import system asks
    them; for the last dotted part, also what each later finder would have answered."""
    spec, finder_name, others = None, None, []
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        candidate = find_spec(name, search)
        if candidate is None:
            continue
        if spec is None:
            spec, finder_name = candidate, getattr(finder, "__name__", None) or type(finder).__name__
            if not last:
                break
        else:
            others.append(candidate.origin or ",".join(candidate.submodule_search_locations or []))
    return spec, finder_name, others


def resolve(module: str) -> Json:
    """Find where `import module` would load from without executing any package code:
    ask the meta-path finders, one dotted part at a time."""
    parts = module.split(".")
    search: list[str] | None = None
    for depth in range(len(parts)):
        name = ".".join(parts[: depth + 1])
        parent = ".".join(parts[:depth])
        previous = sys.modules.get(parent) if depth else None
        if depth:
            # A namespace spec reads its parent's __path__ from sys.modules: lend it an empty
            # stand-in for the parent, so that the parent's own code never runs.
            stand_in = types.ModuleType(parent)
            stand_in.__path__ = search or []
            sys.modules[parent] = stand_in
        try:
            spec, finder_name, others = _ask_finders(name, search, depth == len(parts) - 1)
            # a namespace path is computed lazily from the parent: read it while the stand-in is there
            locations = (
                None
                if spec is None or spec.submodule_search_locations is None
                else list(spec.submodule_search_locations)
            )
        except Exception as error:
            return {"module": module, "kind": "error", "detail": "{}: {}".format(type(error).__name__, error)}
        finally:
            if depth and previous is None:
                del sys.modules[parent]
            elif depth and previous is not None:
                sys.modules[parent] = previous
        if spec is None:
            return {"module": module, "kind": "missing", "detail": "no finder knows {}".format(name)}
        if depth < len(parts) - 1:
            if locations is None:
                return {"module": module, "kind": "missing", "detail": "{} is not a package".format(name)}
            search = locations
            if spec.origin and spec.origin.endswith("__init__.py") and _extends_path(spec.origin):
                for entry in sys.path:
                    folder = os.path.join(entry, *parts[: depth + 1])
                    if os.path.isdir(folder) and folder not in search:
                        search.append(folder)
    locations = locations or []
    if locations and spec.origin in (None, "namespace"):
        kind = "namespace"
    elif locations:
        kind = "package"
    else:
        kind = "module"
    return {
        "module": module,
        "kind": kind,
        "origin": spec.origin if spec.origin not in (None, "namespace") else None,
        "search_locations": locations,
        "finder": finder_name,
        "other_candidates": others,
    }


def torch_version(resolution: Json) -> Json | None:
    """torch/version.py read as text: a file of plain assignments that setup.py writes."""
    if resolution.get("kind") != "package" or not resolution.get("origin"):
        return None
    folder = os.path.dirname(resolution["origin"])
    path = os.path.join(folder, "version.py")
    import ast

    values = {}
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError) as error:
        return {"location": folder, "error": "torch/version.py unreadable: {}".format(error)}
    for node in tree.body:
        target = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        if isinstance(target, ast.Name):
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError:  # not a literal (an expression setup.py wrote): not a fact we need
                continue
    return {
        "location": folder,
        "version": values.get("__version__"),
        "cuda": values.get("cuda"),
        "hip": values.get("hip"),
        "git_version": values.get("git_version"),
    }


def main() -> None:
    # Under `python -c`, sys.path[0] is the working directory: a stray flash_attn/ there must not
    # decide what the target's imports resolve to.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path.pop(0)
    request = json.loads(_request(sys.argv[1]))
    resolutions = []
    for module in request["modules"]:
        try:
            resolutions.append(resolve(module))
        except Exception as error:  # one odd finder must not cost the whole report
            resolutions.append(
                {"module": module, "kind": "error", "detail": "{}: {}".format(type(error).__name__, error)}
            )
    torch_resolution: Json = next((r for r in resolutions if r["module"] == "torch"), {})
    report = {
        "interpreter": interpreter(),
        "distributions": distributions(request["distributions"], request["verify"], request.get("hash_limit")),
        "resolutions": resolutions,
        "torch": torch_version(torch_resolution),
        "installed": INSTALLED,
        "markers": markers(),
    }
    _answer(report, sys.argv[2])


def _request(argument: str) -> str:
    """The request, in the argument; or "-": on standard input, which the doctor writes once it
    knows it (it starts the probe before its own imports). Read from fd 0 itself, as a .pth may
    have replaced sys.stdin."""
    if argument != "-":
        return argument
    with open(0, "rb", closefd=False) as stream:
        return stream.read().decode("utf-8")


def _answer(report: Json, marker: str) -> None:
    """The report on a line of its own after the marker line: what a .pth file or sitecustomize
    printed before (or an atexit hook prints after) must not cost the report. Written to fd 1
    itself, since a .pth may have replaced sys.stdout; json.dumps writes ASCII only."""
    with contextlib.suppress(Exception):  # a stdout the target broke: fd 1 below is what counts
        sys.stdout.flush()  # what was printed before goes above the marker
    with open(1, "wb", closefd=False) as stream:
        stream.write("\n{}\n{}\n".format(marker, json.dumps(report)).encode("ascii"))


if __name__ == "__main__":
    main()
