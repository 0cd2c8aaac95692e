"""What moves which PCR: application source -> PCR2 only; kernel config -> PCR1."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.eif import EifReader, measure_parts
from builder.inputs.refs import make_resolver
from builder.kernel import build_kernel, kernel_input_digest
from builder.pipeline import BuildOptions, BuildResult, build
from builder.reference import REFERENCE_SPEC
from builder.repro import _copy_sources
from builder.spec import load_spec
from builder.toolchain import toolchain_versions

pytestmark = pytest.mark.slow


def test_one_application_byte_moves_pcr2_not_pcr1(
    reference_image: BuildResult, tmp_path: Path
) -> None:
    loaded = load_spec(REFERENCE_SPEC)
    spec_copy = _copy_sources(loaded, tmp_path / "src", reverse=False)
    target = tmp_path / "src" / "reference_enclave" / "runtime" / "main.py"
    data = bytearray(target.read_bytes())
    data[-1:] = b" " if data[-1:] != b" " else b"\n"
    target.write_bytes(bytes(data))
    manifest = reference_image.manifest
    changed = build(
        spec_copy,
        tmp_path / "out",
        options=BuildOptions(
            source_root=tmp_path / "src",
            source_date_epoch=manifest.source_date_epoch,
            source_commit=manifest.source.git_commit,
            source_dirty=manifest.source.git_dirty,
        ),
    )
    assert changed.pcrs[1] == reference_image.pcrs[1]
    assert changed.pcrs[2] != reference_image.pcrs[2]
    assert changed.pcrs[0] != reference_image.pcrs[0]


def test_kernel_config_digest_covers_the_config(tmp_path: Path) -> None:
    loaded = load_spec(REFERENCE_SPEC)
    config = loaded.resolve(loaded.spec.kernel.config)
    other = tmp_path / "other.config"
    other.write_bytes(
        config.read_bytes().replace(b'CONFIG_LOCALVERSION=""', b'CONFIG_LOCALVERSION="-x"')
    )
    tools = toolchain_versions()
    assert kernel_input_digest(loaded.spec.kernel, config, tools) != kernel_input_digest(
        loaded.spec.kernel, other, tools
    )


def test_kernel_config_change_moves_pcr1(reference_image: BuildResult, tmp_path: Path) -> None:
    """A real rebuild with one config option changed (cached by digest on later runs)."""
    loaded = load_spec(REFERENCE_SPEC)
    config = loaded.resolve(loaded.spec.kernel.config)
    text = config.read_text()
    assert "# CONFIG_PRINTK_TIME is not set" in text
    other = tmp_path / "enclave-printk-time.config"
    other.write_text(text.replace("# CONFIG_PRINTK_TIME is not set", "CONFIG_PRINTK_TIME=y"))
    kernel = build_kernel(loaded.spec.kernel, other, resolver=make_resolver(loaded))
    with EifReader.open(reference_image.eif) as r:
        r.copy_section(r.ramdisks[0], tmp_path / "bootstrap.cpio")
        r.copy_section(r.ramdisks[1], tmp_path / "application.cpio")
        cmdline = r.cmdline_text()
    pcrs = measure_parts(
        kernel.bzimage, cmdline, [tmp_path / "bootstrap.cpio", tmp_path / "application.cpio"]
    )
    assert pcrs[1] != reference_image.pcrs[1]
    assert pcrs[2] == reference_image.pcrs[2]
