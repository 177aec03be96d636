"""A wheel's compiled files read before it is installed, as `check` reads installed ones: the
libraries each needs, the torch symbols it imports, the GPU code in its fatbins. Its shared objects
are unpacked, with their folders, into a scratch folder that is removed afterwards; nothing is
installed or imported."""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from attn_doctor.facts.binaries import check_binaries
from attn_doctor.facts.collect import MAX_MARKED_BYTES
from attn_doctor.facts.model import Binary
from attn_doctor.registry.backends import FileMark

MAX_UNPACKED_BYTES = 8 << 30  # a wheel whose shared objects unpack to more is not read
MAX_METADATA_BYTES = 1 << 20  # a METADATA file past this is not read


class WheelError(Exception):
    """A wheel that cannot be read (not a zip, too large): one line."""


def read_wheel(path: str, distribution: str, torch_location: str | None) -> tuple[Binary, ...]:
    """Each shared object of the wheel against the torch at `torch_location`, as if installed."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if m.filename.endswith(".so") or ".so." in m.filename]
            if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
                raise WheelError(f"{Path(path).name}: its shared objects unpack to over {MAX_UNPACKED_BYTES >> 30} GiB")
            scratch = tempfile.mkdtemp(prefix="attn-doctor-wheel-")
            try:
                unpacked = []
                for member in members:
                    target = os.path.realpath(os.path.join(scratch, member.filename))
                    if not target.startswith(os.path.realpath(scratch) + os.sep):
                        continue  # a member named ../x: never written outside the scratch folder
                    archive.extract(member, scratch)
                    if ".libs/" not in member.filename:  # vendored libraries are needed, not judged
                        unpacked.append((target, distribution))
                return check_binaries(unpacked, torch_location)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    except (OSError, zipfile.BadZipFile) as error:
        raise WheelError(f"{Path(path).name}: {error}") from error


def wheel_marks(path: str, distribution: str, marks: list[FileMark]) -> tuple[str, ...]:
    """The `distribution:path` of each of the wheel's own files in which a FileMark is found, as
    collect.marked_files finds them in an installed release (bounded reads; nothing unpacked)."""
    found = []
    try:
        with zipfile.ZipFile(path) as archive:
            for mark in marks:
                try:
                    info = archive.getinfo(mark.path)
                except KeyError:
                    continue
                if info.file_size > MAX_MARKED_BYTES:
                    continue
                if re.search(mark.pattern, archive.read(info).decode("utf-8", errors="replace")):
                    found.append(f"{distribution}:{mark.path}")
    except (OSError, zipfile.BadZipFile):
        return ()
    return tuple(found)


def wheel_requires(path: str) -> tuple[str, ...]:
    """The Requires-Dist lines of the wheel's own `*.dist-info/METADATA` (none where it has none
    that can be read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", i.filename)]
            if len(infos) != 1 or infos[0].file_size > MAX_METADATA_BYTES:
                return ()
            return requires_dist(archive.read(infos[0]).decode("utf-8", errors="replace"))
    except (OSError, zipfile.BadZipFile):
        return ()


def requires_dist(metadata: str) -> tuple[str, ...]:
    """The Requires-Dist lines of a core-metadata text (a wheel's METADATA, or the copy an index
    serves beside the wheel, PEP 658)."""
    headers = email.parser.HeaderParser().parsestr(metadata[:MAX_METADATA_BYTES])
    return tuple(str(line) for line in headers.get_all("Requires-Dist") or ())
