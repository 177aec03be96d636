"""What a wheel source publishes, read over HTTP: the wheel files a PEP 503 project page or a page
of links lists (https://peps.python.org/pep-0503/), and a listed file fetched into a folder, its
sha256 checked where the page gives one. The standard library's own HTTP client (it follows
https_proxy and no_proxy as pip does) and HTML parser: nothing of the target is needed, not even pip.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

TIMEOUT_S = 30.0  # one read: a source that answers nothing in this long is unreachable
PAGE_LIMIT_BYTES = 16 << 20  # a project page, however many files it lists
METADATA_LIMIT_BYTES = 1 << 20
WHEEL_LIMIT_BYTES = 4 << 30  # FA2's wheels are ~250 MB; a file past this is not a wheel we take


class NotFetched(Exception):
    """A page or file that could not be read, or not be kept here: one line, its reason."""


@dataclass(frozen=True)
class Listed:
    """One file a page lists: its name, where it is, the sha256 the page gives (PEP 503 #sha256=)."""

    filename: str
    url: str
    sha256: str | None
    metadata: bool = False  # the index serves its METADATA beside it, at url + ".metadata" (PEP 658)


class _Links(HTMLParser):
    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base
        self.found: list[Listed] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        href = named.get("href")
        if tag != "a" or not href or "data-yanked" in named:  # a yanked file is not offered (PEP 592)
            return
        url, _, fragment = urllib.parse.urljoin(self.base, href).partition("#")
        filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        algorithm, _, digest = fragment.partition("=")
        sha256 = digest.lower() if algorithm == "sha256" and digest else None
        # PEP 714's name, and PEP 658's before it; "true" or the metadata file's own hash
        metadata = named.get("data-core-metadata", named.get("data-dist-info-metadata"))
        self.found.append(Listed(filename, url, sha256, metadata not in (None, "false")))


def _open(url: str) -> urllib.response.addinfourl:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise NotFetched(f"{url}: not an http(s) URL (a local folder of wheels is --find-links DIR)")
    try:
        response: urllib.response.addinfourl = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        raise NotFetched(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise NotFetched(f"{url}: {reason}") from error
    return response


def listed(page: str) -> list[Listed]:
    """The files a project page or page of links lists. NotFetched when it cannot be read."""
    with _open(page) as response:
        body = _bounded(response, page, PAGE_LIMIT_BYTES, "a page of links")
        charset = response.headers.get_content_charset() or "utf-8"
    parser = _Links(response.geturl())
    parser.feed(body.decode(charset, errors="replace"))
    return parser.found


def metadata(file: Listed) -> str:
    """The core metadata an index serves beside a wheel (PEP 658): its requirements read without
    downloading the wheel. NotFetched when it cannot be read."""
    url = file.url + ".metadata"
    with _open(url) as response:
        return _bounded(response, url, METADATA_LIMIT_BYTES, "a METADATA file").decode("utf-8", errors="replace")


def _bounded(response: urllib.response.addinfourl, url: str, limit: int, what: str) -> bytes:
    """The response's body, up to `limit` bytes: NotFetched past that (it is not `what`) or when
    the read fails."""
    try:
        body = response.read(limit + 1)
    except OSError as error:
        raise NotFetched(f"{url}: {error}") from error
    if len(body) > limit:
        raise NotFetched(f"{url}: over {limit >> 20} MiB, not {what}")
    return body


def fetch(file: Listed, folder: Path) -> Path:
    """The file downloaded into `folder` under its own name, its sha256 checked where one was given.
    NotFetched when it cannot be fetched, is cut short or does not match."""
    target = folder / os.path.basename(file.filename)
    digest = hashlib.sha256()
    size = 0
    with _open(file.url) as response:
        try:
            out = open(target, "wb")  # noqa: SIM115 (closed below, also when the read fails)
        except OSError as error:
            raise NotFetched(f"cannot keep {file.filename} in {folder}: {error.strerror}") from error
        with out:
            try:
                while block := response.read(1 << 20):
                    size += len(block)
                    if size > WHEEL_LIMIT_BYTES:
                        raise NotFetched(f"{file.url}: over {WHEEL_LIMIT_BYTES >> 30} GiB, not taken")
                    digest.update(block)
                    out.write(block)
            except OSError as error:  # the connection, or this disk (full)
                raise NotFetched(f"{file.url}: cut short ({error})") from error
        expected = response.headers.get("Content-Length")
    if expected is not None and expected.isdigit() and int(expected) != size:
        raise NotFetched(f"{file.url}: cut short ({size} of {expected} bytes)")
    if file.sha256 is not None and digest.hexdigest() != file.sha256:
        raise NotFetched(f"{file.url}: its sha256 is not the one its page gives")
    return target
