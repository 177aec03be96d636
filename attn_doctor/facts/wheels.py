"""A wheel's compiled files read before it is installed, as `check` reads installed ones: the
libraries each needs, the torch symbols it imports, the GPU code in its fatbins. Its shared objects
are unpacked, with their folders, into a scratch folder that is removed afterwards; nothing is
installed or imported."""

from __future__ import annotations

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
