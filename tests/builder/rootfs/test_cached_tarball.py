"""A cached rootfs tarball is re-verified against its record the first time it is used."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from builder.reference import REFERENCE_SPEC
from builder.rootfs.native import NativeBackend
from builder.spec import load_spec
from enclave_audit.errors import DigestMismatch


def _entry(tmp_path: Path, data: bytes) -> Path:
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "rootfs.tar").write_bytes(data)
    record = {"sha256": hashlib.sha256(data).hexdigest(), "epoch": 1, "key": "k"}
    (entry / "rootfs.json").write_text(json.dumps(record))
    return entry


def test_intact_tarball_verifies_once(tmp_path: Path) -> None:
    entry = _entry(tmp_path, b"tar bytes" * 1000)
    os.utime(entry, (1000, 1000))
    result = NativeBackend()._verified(entry, "mmdebstrap", load_spec(REFERENCE_SPEC))
    assert result.reused and result.unverified
    assert entry.stat().st_mtime > 1000  # a hit marks the entry used (LRU pruning)
    assert result.tarball == entry / "rootfs.tar"
    assert not result.unverified  # checked once, not again on the next use
    assert result.sha256 == hashlib.sha256(b"tar bytes" * 1000).hexdigest()


def test_tampered_tarball_is_refused_on_use(tmp_path: Path) -> None:
    entry = _entry(tmp_path, b"tar bytes" * 1000)
    (entry / "rootfs.tar").write_bytes(b"tar bytez" * 1000)
    result = NativeBackend()._verified(entry, "mmdebstrap", load_spec(REFERENCE_SPEC))
    with pytest.raises(DigestMismatch, match=r"cached rootfs .* tampered or corrupt"):
        _ = result.tarball
    with pytest.raises(DigestMismatch):  # still refused: a failed check is not remembered
        _ = result.tarball


def test_unreadable_record_is_refused(tmp_path: Path) -> None:
    entry = _entry(tmp_path, b"x")
    (entry / "rootfs.json").write_text("{")
    with pytest.raises(DigestMismatch, match="unreadable record"):
        NativeBackend()._verified(entry, "mmdebstrap", load_spec(REFERENCE_SPEC))
