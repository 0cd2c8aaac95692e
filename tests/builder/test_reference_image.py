"""THE reference image: real kernel, static init, nitro-cli layout, runnable rootfs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import _schema_validator, json_schema_for, need
from elftools.elf.elffile import ELFFile

from builder.eif import EifReader, describe_eif
from builder.initramfs import EntryKind, extract, list_members
from builder.pipeline import BuildResult
from enclave_audit.model.attestation import ProvenancePredicate, Statement
from enclave_audit.model.manifest import BuildManifest, InputKind
from enclave_audit.model.measurements import measurements_json

pytestmark = pytest.mark.slow


def test_outputs_agree(reference_image: BuildResult) -> None:
    out = reference_image.out_dir
    desc = describe_eif(reference_image.eif)
    assert desc.crc_ok
    for i in (0, 1, 2):
        assert desc.pcrs[i] == reference_image.pcrs[i]
    assert (out / "measurements.json").read_text() == measurements_json(reference_image.pcrs)
    manifest = BuildManifest.load(out / "build-manifest.json")
    eif_out = manifest.output("enclave.eif")
    assert eif_out is not None
    assert eif_out.sha256 == hashlib.sha256(reference_image.eif.read_bytes()).hexdigest()
    kinds = {i.kind for i in manifest.inputs}
    assert {InputKind.KERNEL_SOURCE, InputKind.DEBIAN_PACKAGE, InputKind.WHEEL,
            InputKind.MODEL} <= kinds  # fmt: skip
    assert manifest.source_date_epoch > 0 and manifest.spec.text and manifest.spec.lock_text
    # every external input says which source served it; the lock's resolution time is kept
    assert all(i.served_by for i in manifest.inputs if i.external)
    assert manifest.spec.lock_resolved_at
    doc = json.loads((out / "build-manifest.json").read_text())
    _schema_validator(json_schema_for(doc) or "").validate(doc)
    stmt = Statement.from_bytes((out / "provenance.json").read_bytes())
    assert stmt.subject[0].digest == {"sha256": eif_out.sha256, "sha384": eif_out.sha384}
    predicate = stmt.predicate_as(ProvenancePredicate)
    assert predicate.pcrs() == manifest.pcrs
    meta = desc.metadata
    assert meta["BuildMetadata"]["BuildTime"].startswith("20")


def test_image_is_real(reference_image: BuildResult, tmp_path: Path) -> None:
    with EifReader.open(reference_image.eif) as r:
        kernel = r.read(r.kernel, limit=64 << 20)
        assert kernel[0x202:0x206] == b"HdrS", "kernel section is not a bzImage"
        assert len(r.ramdisks) == 2
        r.copy_section(r.ramdisks[0], tmp_path / "bootstrap.cpio")
        r.copy_section(r.ramdisks[1], tmp_path / "application.cpio")
    boot = list_members(tmp_path / "bootstrap.cpio")
    # nitro-cli's bootstrap layout, plus the QEMU check's static attestation helper
    assert [m.name for m in boot] == ["dev", "dev/console", "init", "nsm-attest"]
    assert boot[1].kind is EntryKind.CHAR_DEVICE
    extract(tmp_path / "bootstrap.cpio", tmp_path / "boot")
    for program in ("init", "nsm-attest"):
        with open(tmp_path / "boot" / program, "rb") as fh:
            elf = ELFFile(fh)
            assert not any(s.header.p_type == "PT_INTERP" for s in elf.iter_segments())
            assert elf.get_section_by_name(".dynamic") is None
    app = list_members(tmp_path / "application.cpio")
    top = sorted({m.name.split("/")[0] for m in app})
    assert top == ["cmd", "env", "rootfs"]
    assert all(m.uid == 0 and m.gid == 0 for m in app)
    assert not any("__pycache__" in m.name for m in app)


def test_rootfs_runs_self_test_with_its_own_python(
    reference_image: BuildResult, tmp_path: Path
) -> None:
    need(os.geteuid() == 0 and shutil.which("chroot") is not None, "root and chroot")
    with EifReader.open(reference_image.eif) as r:
        r.copy_section(r.ramdisks[1], tmp_path / "application.cpio")
    extract(tmp_path / "application.cpio", tmp_path / "app")
    env = dict(
        line.split("=", 1) for line in (tmp_path / "app" / "env").read_text().splitlines() if line
    )
    cmd = (tmp_path / "app" / "cmd").read_text().splitlines()
    root = tmp_path / "app" / "rootfs"
    smoke = subprocess.run(
        ["chroot", str(root), "/usr/bin/python3", "-c",
         "import sys, numpy, cryptography, cbor2, boto3;"
         "print(sys.executable, numpy.__version__, cryptography.__version__)"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert smoke.returncode == 0, smoke.stderr
    assert smoke.stdout.startswith("/usr/bin/python3 1.24")
    selftest = subprocess.run(
        ["chroot", str(root), *cmd, "--self-test"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert selftest.returncode == 0, selftest.stdout + selftest.stderr
    assert "self-test: passed" in selftest.stdout


def test_rebuild_from_manifest_is_byte_identical(
    reference_image: BuildResult, tmp_path: Path
) -> None:
    from builder.pipeline import rebuild_from_manifest
    from builder.reference import PROJECT_ROOT

    manifest = BuildManifest.load(reference_image.out_dir / "build-manifest.json")
    again = rebuild_from_manifest(manifest, PROJECT_ROOT, tmp_path / "again")
    assert again.eif.read_bytes() == reference_image.eif.read_bytes()
    # equal but for which source served each input (this time: the local store)
    rebuilt = BuildManifest.load(tmp_path / "again" / "build-manifest.json")
    assert rebuilt.without_sources().to_json() == manifest.without_sources().to_json()
    assert {i.served_by for i in rebuilt.inputs if i.external} == {"store"}
