"""HTTP downloads that stream to a temp file, hash as they go and never exceed a bound."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from enclave_audit.errors import DigestMismatch

#: seconds without progress before a connection is given up
TIMEOUT = 60
_CHUNK = 1 << 20
_USER_AGENT = "enclave-audit (pinned-input resolver)"


class FetchFailed(Exception):
    """A URL could not be fetched (network, HTTP status, size bound): try the next source."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


def _check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise FetchFailed(url, f"unsupported URL scheme {scheme!r}")


def fetch_bytes(url: str, *, limit: int, accept: str | None = None) -> bytes:
    """The body of ``url`` (at most ``limit`` bytes), or :class:`FetchFailed`."""
    _check_scheme(url)
    headers = {"User-Agent": _USER_AGENT}
    if accept:
        headers["Accept"] = accept
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - scheme checked
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:  # noqa: S310
            data: bytes = resp.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise FetchFailed(url, f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FetchFailed(url, str(reason)) from None
    if len(data) > limit:
        raise FetchFailed(url, f"larger than the {limit}-byte bound")
    return data


def probe(url: str) -> int | None:
    """The size of ``url`` if the server has it (a HEAD request), else :class:`FetchFailed`."""
    _check_scheme(url)
    request = urllib.request.Request(  # noqa: S310 - scheme checked
        url, method="HEAD", headers={"User-Agent": _USER_AGENT}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:  # noqa: S310
            length = resp.headers.get("Content-Length")
    except urllib.error.HTTPError as exc:
        raise FetchFailed(url, f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FetchFailed(url, str(reason)) from None
    return int(length) if length and length.isdigit() else None


def download(
    url: str,
    directory: Path,
    *,
    sha256: str,
    size: int | None = None,
    limit: int = 2 << 30,
) -> Path:
    """Stream ``url`` into a new file in ``directory``; its sha256 must be ``sha256``.

    Network problems are :class:`FetchFailed` (the caller tries another source);
    bytes that arrive complete but differ from the pin are :class:`DigestMismatch`,
    because a source that serves other bytes under a pinned name is not a source to
    fall back from silently.  No partial file is left behind.
    """
    _check_scheme(url)
    bound = size if size is not None else limit
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})  # noqa: S310
    fd, tmp = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=directory)
    ok = False
    try:
        h = hashlib.sha256()
        got = 0
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(request, timeout=TIMEOUT) as resp,  # noqa: S310
            ):
                while chunk := resp.read(_CHUNK):
                    got += len(chunk)
                    if got > bound:
                        raise FetchFailed(url, f"more than the expected {bound} bytes")
                    h.update(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as exc:
            raise FetchFailed(url, f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise FetchFailed(url, str(reason)) from None
        if size is not None and got != size:
            raise FetchFailed(url, f"{got} bytes, the index says {size}")
        if h.hexdigest() != sha256:
            raise DigestMismatch(f"{url} served sha256 {h.hexdigest()}, pinned {sha256}")
        ok = True
        return Path(tmp)
    finally:
        if not ok:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
