"""Kernel recipe pieces that need no compiler; cache tamper checks (kernel, ramdisk)."""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path

import pytest
from conftest import need_tool

from builder.inputs.refs import make_resolver
from builder.kernel import KERNEL_TOOLS, _config_lines, _make_env, build_kernel, kernel_input_digest
from builder.reference import REFERENCE_SPEC
from builder.spec import load_spec
from builder.toolchain import toolchain_versions
from enclave_audit.errors import DigestMismatch
from enclave_audit.model.measurements import PcrSet


def test_pinned_config_has_what_nitro_needs() -> None:
    loaded = load_spec(REFERENCE_SPEC)
    lines = _config_lines(loaded.resolve(loaded.spec.kernel.config).read_text())
    for key in (
        "CONFIG_NSM",
        "CONFIG_VIRTIO_MMIO",
        "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
        "CONFIG_VSOCKETS",
        "CONFIG_VIRTIO_VSOCKETS",
        "CONFIG_SERIAL_8250_CONSOLE",
        "CONFIG_BLK_DEV_INITRD",
        "CONFIG_DEVTMPFS",
        "CONFIG_X86_MPPARSE",
    ):
        assert lines.get(key) == "y", key
    assert lines.get("CONFIG_MODULES") == "n"
    assert lines.get("CONFIG_LOCALVERSION_AUTO") == "n"
    assert lines.get("CONFIG_IKCONFIG", "n") == "n"


def test_toolchain_lines_are_not_compared() -> None:
    one = _config_lines(
        'CONFIG_CC_VERSION_TEXT="gcc 12"\nCONFIG_GCC_VERSION=120200\nCONFIG_NSM=y\n'
    )
    two = _config_lines(
        'CONFIG_CC_VERSION_TEXT="gcc 13"\nCONFIG_GCC_VERSION=130100\nCONFIG_NSM=y\n'
    )
    assert one == two == {"CONFIG_NSM": "y"}


def test_make_environment_is_built_from_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KBUILD_BUILD_USER", "someone")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    env = _make_env(1_794_660_961, 2)
    assert env["KBUILD_BUILD_TIMESTAMP"] == "@1794660961"
    assert env["KBUILD_BUILD_USER"] == env["KBUILD_BUILD_HOST"] == "enclave-audit"
    assert env["TZ"] == "UTC" and env["LC_ALL"] == "C" and env["LOCALVERSION"] == ""
    assert "someone" not in env.values()
    assert set(env) <= set(os.environ) | set(env)


def test_tampered_cached_kernel_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for tool in KERNEL_TOOLS:
        need_tool(tool)
    monkeypatch.setenv("ENCLAVE_AUDIT_CACHE", str(tmp_path))
    loaded = load_spec(REFERENCE_SPEC)
    config = loaded.resolve(loaded.spec.kernel.config)
    digest = kernel_input_digest(loaded.spec.kernel, config, toolchain_versions())
    entry = tmp_path / "kernel" / digest
    entry.mkdir(parents=True)
    (entry / "bzImage").write_bytes(b"tampered")
    (entry / "config").write_bytes(config.read_bytes())
    meta = {
        "sha256": hashlib.sha256(b"original").hexdigest(),
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
        "source_date_epoch": 1,
        "release": "6.12.117",
    }
    (entry / "kernel.json").write_text(json.dumps(meta))
    with pytest.raises(DigestMismatch, match="tampered or corrupt"):
        build_kernel(loaded.spec.kernel, config, resolver=make_resolver(loaded))


def test_tampered_cached_ramdisk_is_refused(tmp_path: Path) -> None:
    """The EIF writer's PCR2 pass re-verifies a cached application ramdisk against its record;
    a wrong recorded CRC-32 is caught by the writer's own CRC pass and leaves no image."""
    from builder.eif import write_eif
    from builder.pipeline import RamdiskRecord, _check_cached_ramdisk, _ramdisk_record
    from enclave_audit.model.manifest import BuildOutput

    data = b"070701" + b"0" * 200
    app = tmp_path / "application.cpio"
    app.write_bytes(data)
    (tmp_path / "kernel").write_bytes(b"k" * 100)
    (tmp_path / "boot.cpio").write_bytes(b"b" * 100)
    record = RamdiskRecord(
        output=BuildOutput(
            name="application-ramdisk",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            sha384=hashlib.sha384(data).hexdigest(),
        ),
        crc32=zlib.crc32(data),
    )
    (tmp_path / "ramdisk.json").write_text(record.model_dump_json())
    assert _ramdisk_record(tmp_path) == record
    out = tmp_path / "x.eif"

    def pcrs_now(crc: int) -> PcrSet:
        written = write_eif(
            out,
            kernel=tmp_path / "kernel",
            cmdline="c",
            ramdisks=[tmp_path / "boot.cpio", app],
            name="t",
            version="1",
            build_time="2025-01-01T00:00:00+00:00",
            known_crc32={app: crc},
        )
        image = out.read_bytes()
        assert written.sha384 == hashlib.sha384(image).hexdigest()
        assert written.sha256 == hashlib.sha256(image).hexdigest()
        return written.pcrs

    _check_cached_ramdisk(tmp_path, record.output, pcrs_now(record.crc32))
    out.unlink()
    with pytest.raises(DigestMismatch, match="CRC-32 changed"):
        pcrs_now(record.crc32 ^ 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "application.cpio",
        "boot.cpio",
        "kernel",
        "ramdisk.json",
    ]
    tampered = data[:-1] + b"1"
    app.write_bytes(tampered)
    with pytest.raises(DigestMismatch, match="tampered or corrupt"):
        _check_cached_ramdisk(tmp_path, record.output, pcrs_now(zlib.crc32(tampered)))
    (tmp_path / "ramdisk.json").write_text("{broken")
    with pytest.raises(DigestMismatch, match="unreadable record"):
        _ramdisk_record(tmp_path)
