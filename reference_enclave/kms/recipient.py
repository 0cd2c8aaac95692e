"""The ``Recipient`` parameter: verify the attestation document, extract key and PCRs.

KMS relies on the document's signature to trust the public key it returns data to
(``specs/confidential-inference.md`` 1.1, 1.5).  The document is checked with the
project's relying-party verifier (:func:`verifier.nitro.verify_attestation`) against
the configured roots, at the KMS's current time, with the optional maximum age (a
policy stricter than AWS, which documents none) and refusing debug-mode (all-zero)
PCRs unless allowed.  Only a PASS verdict is accepted; anything else is a
``ValidationException`` naming the failed check.  The document must carry an RSA
public key of at least 2048 bits as DER SubjectPublicKeyInfo.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from enclave_audit.errors import EnclaveAuditError
from enclave_audit.model.findings import Verdict
from reference_enclave.kms.errors import KmsApiError, validation
from verifier.nitro import TrustRoot, verify_attestation

KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"
MAX_DOCUMENT_BYTES = 16 * 1024
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class VerifiedRecipient:
    """What a verified attestation document lets the KMS act on."""

    public_key: rsa.RSAPublicKey
    pcrs: Mapping[int, bytes]
    module_id: str

    @property
    def image_sha384(self) -> str:
        return self.pcrs[0].hex() if 0 in self.pcrs else ""


class RecipientVerifier:
    """Checks ``Recipient`` parameters against fixed roots and policy."""

    def __init__(
        self,
        roots: Sequence[TrustRoot],
        *,
        max_age_seconds: float | None,
        allow_debug: bool,
        clock: Callable[[], float],
    ) -> None:
        self.roots = tuple(roots)
        self.max_age = dt.timedelta(seconds=max_age_seconds) if max_age_seconds else None
        self.allow_debug = allow_debug
        self.clock = clock

    def verify(self, recipient: object) -> VerifiedRecipient:
        if not isinstance(recipient, dict):
            raise validation("Recipient must be an object")
        unknown = set(recipient) - {"AttestationDocument", "KeyEncryptionAlgorithm"}
        if unknown:
            raise validation(f"Recipient has unknown member(s): {', '.join(sorted(unknown))}")
        algorithm = recipient.get("KeyEncryptionAlgorithm")
        if algorithm != KEY_ENCRYPTION_ALGORITHM:
            raise validation(
                f"1 validation error detected: Value '{algorithm}' at "
                "'recipient.keyEncryptionAlgorithm' failed to satisfy constraint: Member must "
                f"satisfy enum value set: [{KEY_ENCRYPTION_ALGORITHM}]"
            )
        encoded = recipient.get("AttestationDocument")
        if not isinstance(encoded, str) or not encoded:
            raise validation("Recipient.AttestationDocument is required")
        try:
            document = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise validation("Recipient.AttestationDocument is not base64") from None
        if not document or len(document) > MAX_DOCUMENT_BYTES:
            raise validation(f"Recipient.AttestationDocument must be 1..{MAX_DOCUMENT_BYTES} bytes")
        if not self.roots:
            raise validation(
                "The attestation document cannot be verified: no trusted root is configured"
            )
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        try:
            result = verify_attestation(
                document,
                roots=self.roots,
                at=now,
                max_age=self.max_age,
                allow_debug=self.allow_debug,
                now=now,
            )
        except KmsApiError:
            raise
        except EnclaveAuditError as exc:
            raise validation(f"The attestation document is not valid: {exc.message}") from None
        if result.verdict is not Verdict.PASS:
            raise validation(f"The attestation document is not valid: {result.summary()}")
        if result.public_key is None:
            raise validation("The attestation document carries no public key")
        try:
            public = serialization.load_der_public_key(result.public_key)
        except (ValueError, UnsupportedAlgorithm):
            raise validation(
                "The attestation document's public key is not a DER SubjectPublicKeyInfo"
            ) from None
        if not isinstance(public, rsa.RSAPublicKey) or public.key_size < MIN_RSA_BITS:
            raise validation(
                "The attestation document's public key must be RSA with at least "
                f"{MIN_RSA_BITS} bits"
            )
        return VerifiedRecipient(
            public_key=public, pcrs=dict(result.pcrs.values), module_id=result.module_id
        )
