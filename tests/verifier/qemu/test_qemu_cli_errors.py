"""Fast CLI failures of the QEMU verbs: one line, the right exit code, no QEMU started."""

from __future__ import annotations

from pathlib import Path

from conftest import assert_one_line_error, run_cli


def test_qemu_without_the_machine_is_an_environment_error(unbootable_eif: Path) -> None:
    result = run_cli(
        ["enclave", "qemu-run", str(unbootable_eif)], env={"ENCLAVE_AUDIT_QEMU": "/bin/true"}
    )
    assert_one_line_error(result, 5, "nitro-enclave", "qemu-setup")


def test_missing_qemu_binary_override(unbootable_eif: Path, tmp_path: Path) -> None:
    result = run_cli(
        ["enclave", "qemu-run", str(unbootable_eif)],
        env={"ENCLAVE_AUDIT_QEMU": str(tmp_path / "no-such-qemu")},
    )
    assert_one_line_error(result, 5, "not an executable")


def test_not_an_eif_is_refused_before_looking_for_qemu(tmp_path: Path) -> None:
    image = tmp_path / "x.eif"
    image.write_bytes(b"not an eif at all" * 100)
    result = run_cli(["enclave", "qemu-run", str(image)])
    assert_one_line_error(result, 12, "magic")


def test_bad_nonce_is_invalid_input(unbootable_eif: Path) -> None:
    result = run_cli(["enclave", "qemu-run", str(unbootable_eif), "--nonce", "xyz"])
    assert_one_line_error(result, 3, "--nonce")  # checked before QEMU is looked for


def test_bad_expected_measurements_file(unbootable_eif: Path, tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text('{"Measurements": {"PCR0": "zz"}}')
    result = run_cli(["enclave", "qemu-run", str(unbootable_eif), "--expect", str(bad)])
    assert_one_line_error(result, 3, "PCR0")
