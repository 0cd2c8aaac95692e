"""PCR formulas: one-shot TPM extends from 48 zero bytes (SHA-384).

``PCRn = SHA384(0^48 || SHA384(content))``.  PCR0 covers kernel, cmdline and
every ramdisk; PCR1 kernel, cmdline and the first ramdisk; PCR2 the remaining
ramdisks; PCR8 the DER of the signing certificate; PCR3/PCR4 are the raw
UTF-8 bytes of the parent's role ARN / instance id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from enclave_audit.errors import InvalidInput
from enclave_audit.fsutil import CHUNK, open_input
from enclave_audit.model.measurements import PcrSet
from enclave_runtime.x509load import load_certificate

PCR_SIZE = 48
ZERO = bytes(PCR_SIZE)


def tpm_extend(digest: bytes, initial: bytes = ZERO) -> bytes:
    """SHA384(initial || digest): one PCR extend."""
    return hashlib.sha384(initial + digest).digest()


def extend_string(text: str) -> bytes:
    """PCR3 (role ARN) / PCR4 (instance id): the string's UTF-8 bytes, not pre-hashed."""
    return tpm_extend(text.encode("utf-8"))


def certificate_der(pem_or_der: bytes) -> bytes:
    """DER of a certificate given as PEM (first block) or DER."""
    cert = load_certificate(pem_or_der, what="signing certificate", error=InvalidInput)
    return cert.public_bytes(Encoding.DER)


def pcr8_from_certificate(pem_or_der: bytes) -> bytes:
    """PCR8 of an EIF signed with this certificate (PEM formatting does not matter)."""
    return tpm_extend(hashlib.sha384(certificate_der(pem_or_der)).digest())


def measure_parts(kernel: Path, cmdline: str | bytes, ramdisks: Sequence[Path]) -> PcrSet:
    """Predict PCR0/1/2 from the inputs of an EIF without writing one."""
    if not ramdisks:
        raise InvalidInput("at least one ramdisk is required")
    cmd = cmdline.encode("utf-8") if isinstance(cmdline, str) else cmdline
    image = hashlib.sha384()
    boot = hashlib.sha384()
    app = hashlib.sha384()
    _feed_file(kernel, (image, boot))
    image.update(cmd)
    boot.update(cmd)
    _feed_file(ramdisks[0], (image, boot))
    for ramdisk in ramdisks[1:]:
        _feed_file(ramdisk, (image, app))
    return PcrSet(
        values={
            0: tpm_extend(image.digest()),
            1: tpm_extend(boot.digest()),
            2: tpm_extend(app.digest()),
        }
    )


def _feed_file(path: Path, hashers: Sequence[hashlib._Hash]) -> None:
    with open_input(path) as fh:
        while chunk := fh.read(CHUNK):
            for h in hashers:
                h.update(chunk)
