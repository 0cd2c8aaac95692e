"""Wheels from a PyPI-compatible index, located through the JSON simple API (PEP 691)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from builder.inputs.fetch import FetchFailed, fetch_bytes

DEFAULT_INDEX = "https://pypi.org/simple"
_ACCEPT = "application/vnd.pypi.simple.v1+json"


def index_url() -> str:
    """The index to use: ``ENCLAVE_AUDIT_PYPI_URL``, else PyPI itself."""
    return (os.environ.get("ENCLAVE_AUDIT_PYPI_URL") or DEFAULT_INDEX).rstrip("/")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class WheelLocation:
    url: str
    sha256: str
    size: int | None


def locate_wheel(name: str, filename: str, *, index: str | None = None) -> WheelLocation:
    """Where the index serves ``filename`` of project ``name``, with the digest it lists."""
    base = index or index_url()
    page = f"{base}/{normalize(name)}/"
    data = fetch_bytes(page, limit=64 << 20, accept=_ACCEPT)
    try:
        doc = json.loads(data)
        files = doc["files"]
    except (ValueError, KeyError, TypeError):
        raise FetchFailed(page, "not a PEP 691 JSON project page") from None
    for entry in files:
        if not isinstance(entry, dict) or entry.get("filename") != filename:
            continue
        hashes = entry.get("hashes") or {}
        url = str(entry.get("url", ""))
        if url.startswith("/"):
            from urllib.parse import urljoin

            url = urljoin(page, url)
        size = entry.get("size")
        return WheelLocation(
            url=url,
            sha256=str(hashes.get("sha256", "")),
            size=size if isinstance(size, int) else None,
        )
    raise FetchFailed(page, f"{filename} is not listed")
