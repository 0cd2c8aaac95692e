"""The QEMU build cache: keyed by every input, re-verified on every use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave_audit.errors import DigestMismatch, EnvironmentProblem
from enclave_audit.fsutil import sha256_file
from verifier.qemu import build


def _fake_cached_build(root: Path, binary: bytes) -> Path:
    directory = root / "qemu" / build.build_key()
    (directory / "bin").mkdir(parents=True)
    exe = directory / "bin" / build.BINARY_NAME
    exe.write_bytes(binary)
    exe.chmod(0o755)
    manifest = {
        "schema": build.MANIFEST_SCHEMA,
        "binary_sha256": sha256_file(exe),
        "qemu_version": "QEMU emulator version 10.0.2",
        "build_seconds": 1.0,
    }
    (directory / build.MANIFEST_NAME).write_text(json.dumps(manifest))
    return exe


def test_key_covers_source_and_configure_line(monkeypatch: pytest.MonkeyPatch) -> None:
    key = build.build_key()
    assert key == build.build_key()
    monkeypatch.setattr(build, "CONFIGURE_ARGS", (*build.CONFIGURE_ARGS, "--enable-kvm"))
    assert build.build_key() != key


def test_cached_binary_is_rehashed_on_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_AUDIT_CACHE", str(tmp_path))
    monkeypatch.delenv(build.QEMU_ENV, raising=False)
    exe = _fake_cached_build(tmp_path, b"#!/bin/sh\nexit 0\n")
    if not (build.FIRMWARE_DIR / "qboot.rom").is_file():
        with pytest.raises(EnvironmentProblem, match="qemu-system-data"):
            build.find_qemu()
        return
    found = build.find_qemu()
    assert found is not None and found.binary == exe
    exe.write_bytes(b"#!/bin/sh\necho tampered\n")
    with pytest.raises(DigestMismatch, match="does not match"):
        build.find_qemu()


def test_no_build_yet_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_AUDIT_CACHE", str(tmp_path))
    monkeypatch.delenv(build.QEMU_ENV, raising=False)
    assert build.find_qemu() is None
    with pytest.raises(EnvironmentProblem, match="qemu-setup"):
        build.require_qemu()
