"""What the guest says on its serial console: the ``nsm-attest`` blocks, and what we send it.

``reference_enclave/nsm-attest/nsm_attest.c`` prints one NSM response as::

    NSM-ATTEST BEGIN len=<bytes> crc32=<8 hex>
    <base64, 76 characters a line>
    NSM-ATTEST END

or ``NSM-ATTEST ERROR <reason>``.  Kernel messages may interleave with the block
on the console, so lines that are not base64 are skipped and the length and
CRC-32 decide whether the block arrived intact.

The nonce reaches the guest on the *extra* kernel command line that QEMU's
``-append`` adds after the EIF's measured one: QEMU does not measure it (real
Nitro has no such input), so it changes no PCR.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass
from typing import Final

from enclave_audit.errors import AttestationMalformed, QemuBootFailed
from enclave_runtime import cbor

BEGIN: Final = "NSM-ATTEST BEGIN"
END: Final = "NSM-ATTEST END"
ERROR: Final = "NSM-ATTEST ERROR"
#: kernel command-line keys the helper reads from ``/proc/cmdline``.
NONCE_KEY: Final = "enclave_audit.nonce"
VSOCK_PORT_KEY: Final = "enclave_audit.vsock_port"
SERVE_PORT_KEY: Final = "enclave_audit.serve_port"
LISTENING: Final = "NSM-ATTEST LISTENING"
ATTEST_KEY: Final = "enclave_audit.attest"
MAX_NONCE: Final = 512
MAX_RESPONSE: Final = 0x3000

_BEGIN_RE = re.compile(r"NSM-ATTEST BEGIN len=(\d+) crc32=([0-9a-f]{8})")
_B64_LINE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def extra_cmdline(
    nonce: bytes | None, vsock_port: int | None, serve_port: int | None = None
) -> str:
    """The unmeasured command line to append: ask for an attestation (with nonce).

    ``vsock_port``: also send the response to the parent's vsock port;
    ``serve_port``: then answer one attestation request from the host on this port.
    """
    if nonce is not None and not 0 < len(nonce) <= MAX_NONCE:
        raise AttestationMalformed(f"nonce: {len(nonce)} bytes, the NSM accepts 1..{MAX_NONCE}")
    parts = [f"{ATTEST_KEY}=1"]
    if nonce is not None:
        parts.append(f"{NONCE_KEY}={nonce.hex()}")
    if vsock_port is not None:
        parts.append(f"{VSOCK_PORT_KEY}={vsock_port}")
    if serve_port is not None:
        parts.append(f"{SERVE_PORT_KEY}={serve_port}")
    return " ".join(parts)


@dataclass
class SerialScanner:
    """Feed console lines; collects the first complete NSM response or an error."""

    response: bytes | None = None
    error: str | None = None
    #: the block arrived but its length or CRC-32 is wrong (``error`` says how)
    garbled: bool = False
    _chunks: list[str] | None = None
    _length: int = 0
    _crc: int = 0

    @property
    def finished(self) -> bool:
        return self.response is not None or self.error is not None

    def feed(self, raw_line: str) -> bool:
        """Take one console line; True once a response or an error has been seen."""
        if not self.finished:
            self._feed(raw_line)
        return self.finished

    def _feed(self, raw_line: str) -> None:
        line = _ANSI.sub("", raw_line).strip().replace("\r", "")
        if ERROR in line:
            self.error = line.split(ERROR, 1)[1].strip() or "unspecified error"
            return
        begin = _BEGIN_RE.search(line)
        if begin is not None:
            self._chunks = []
            self._length, self._crc = int(begin.group(1)), int(begin.group(2), 16)
            return
        if self._chunks is None:
            return
        if END in line:
            self._finish()
        elif _B64_LINE.match(line):
            self._chunks.append(line)

    def _finish(self) -> None:
        assert self._chunks is not None
        try:
            data = base64.b64decode("".join(self._chunks), validate=True)
        except (binascii.Error, ValueError):
            data = b""
        self._chunks = None
        if len(data) != self._length or zlib.crc32(data) != self._crc:
            # a kernel message cut through the block, or the console dropped bytes
            self.garbled = True
            self.error = (
                f"attestation block garbled on the serial console ({len(data)} bytes decoded,"
                f" {self._length} announced)"
            )
            return
        self.response = data


def document_from_response(response: bytes) -> bytes:
    """The COSE_Sign1 bytes from an NSM ``{"Attestation": {"document": ...}}`` response."""
    if len(response) > MAX_RESPONSE:
        raise AttestationMalformed(f"NSM response: {len(response)} bytes, over {MAX_RESPONSE}")
    decoded = cbor.loads(response, what="NSM response", error=AttestationMalformed)
    if isinstance(decoded, dict) and "Error" in decoded:
        raise QemuBootFailed(f"the guest's NSM refused the attestation request: {decoded['Error']}")
    body = decoded.get("Attestation") if isinstance(decoded, dict) else None
    document = body.get("document") if isinstance(body, dict) else None
    if not isinstance(document, bytes) or not document:
        raise AttestationMalformed(
            'NSM response: expected {"Attestation": {"document": bstr}}'
            f" (got {type(decoded).__name__})"
        )
    return document
