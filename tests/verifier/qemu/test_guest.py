"""Reading the nsm-attest block off a noisy serial console, and the NSM response inside it."""

from __future__ import annotations

import base64
import zlib

import cbor2
import pytest

from enclave_audit.errors import AttestationMalformed, QemuBootFailed
from verifier.qemu.guest import SerialScanner, document_from_response, extra_cmdline

DOC = bytes.fromhex("8444a10120a0") + b"\x58\x20" + bytes(32) + b"\x40"  # any bytes will do


def _block(response: bytes, *, crc: int | None = None) -> list[str]:
    text = base64.b64encode(response).decode()
    lines = [text[i : i + 76] for i in range(0, len(text), 76)]
    crc = zlib.crc32(response) if crc is None else crc
    return [f"NSM-ATTEST BEGIN len={len(response)} crc32={crc:08x}", *lines, "NSM-ATTEST END"]


def _feed(lines: list[str]) -> SerialScanner:
    scanner = SerialScanner()
    for line in lines:
        if scanner.feed(line):
            break
    return scanner


def test_block_between_kernel_messages_is_recovered() -> None:
    response = cbor2.dumps({"Attestation": {"document": DOC * 40}})
    lines = _block(response)
    noisy = [
        "[    0.5] random: crng init done",
        *lines[:2],
        "[    1.2] virtio_vsock: ok\r",
        *lines[2:],
    ]
    scanner = _feed(noisy)
    assert scanner.response == response
    assert document_from_response(scanner.response) == DOC * 40


def test_corrupted_block_is_an_error_not_a_document() -> None:
    response = cbor2.dumps({"Attestation": {"document": DOC}})
    lines = _block(response)
    lines[1] = "ZZZZ" + lines[1][4:]  # changed characters that keep the base64 valid
    scanner = _feed(lines)
    assert scanner.response is None
    assert scanner.garbled and scanner.error is not None and "garbled" in scanner.error


def test_helper_error_line_is_reported() -> None:
    scanner = _feed(["NSM-ATTEST ERROR cannot open /dev/nsm: No such file or directory"])
    assert scanner.error == "cannot open /dev/nsm: No such file or directory"


def test_nsm_error_response_raises() -> None:
    with pytest.raises(QemuBootFailed, match="InvalidArgument"):
        document_from_response(cbor2.dumps({"Error": "InvalidArgument"}))


@pytest.mark.parametrize("bad", [b"\xff\x00", cbor2.dumps({"Attestation": {}}), cbor2.dumps(3)])
def test_malformed_response_is_one_error(bad: bytes) -> None:
    with pytest.raises(AttestationMalformed):
        document_from_response(bad)


def test_extra_cmdline_carries_nonce_and_port() -> None:
    assert extra_cmdline(b"\x01\xab", 9901) == (
        "enclave_audit.attest=1 enclave_audit.nonce=01ab enclave_audit.vsock_port=9901"
    )
    with pytest.raises(AttestationMalformed):
        extra_cmdline(bytes(513), None)
