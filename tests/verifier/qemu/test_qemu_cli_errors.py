"""Fast CLI failures of the QEMU verbs: one line, the right exit code, no QEMU started."""

from __future__ import annotations

from pathlib import Path

from conftest import assert_one_line_error, run_cli


def test_qemu_without_the_machine_is_an_environment_error(tmp_path: Path) -> None:
    image = tmp_path / "x.eif"
    image.write_bytes(b"not an eif")
    result = run_cli(["enclave", "qemu-run", str(image)], env={"ENCLAVE_AUDIT_QEMU": "/bin/true"})
    assert_one_line_error(result, 5, "nitro-enclave", "qemu-setup")


def test_missing_qemu_binary_override(tmp_path: Path) -> None:
    image = tmp_path / "x.eif"
    image.write_bytes(b"not an eif")
    result = run_cli(
        ["enclave", "qemu-run", str(image)],
        env={"ENCLAVE_AUDIT_QEMU": str(tmp_path / "no-such-qemu")},
    )
    assert_one_line_error(result, 5, "not an executable")


def test_bad_nonce_is_invalid_input(tmp_path: Path) -> None:
    image = tmp_path / "x.eif"
    image.write_bytes(b"not an eif")
    result = run_cli(["enclave", "qemu-run", str(image), "--nonce", "xyz"])
    assert_one_line_error(result, 3, "--nonce")  # checked before QEMU is looked for
