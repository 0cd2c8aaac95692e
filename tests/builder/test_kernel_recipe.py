"""Kernel recipe pieces that need no compiler: config comparison and the build environment."""

from __future__ import annotations

import os

import pytest

from builder.kernel import _config_lines, _make_env
from builder.reference import REFERENCE_SPEC
from builder.spec import load_spec


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

