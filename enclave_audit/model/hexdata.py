"""Hex text to bytes, strictly, with one-line errors (no pydantic: the fast verify path uses it)."""

from __future__ import annotations

import re

from enclave_audit.errors import InvalidInput

_HEX = re.compile(r"^[0-9a-fA-F]*$")


def parse_hex(text: str, *, what: str, size: int | None = None) -> bytes:
    """Hex text to bytes with a one-line error naming ``what``."""
    cleaned = text.strip()
    if not _HEX.match(cleaned) or len(cleaned) % 2:
        raise InvalidInput(f"{what}: not a hex string: {cleaned[:40]!r}")
    raw = bytes.fromhex(cleaned)
    if size is not None and len(raw) != size:
        raise InvalidInput(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw
