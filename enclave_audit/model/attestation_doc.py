"""Nitro attestation documents and the result of verifying one.

:class:`AttestationDocument` is what a COSE_Sign1 attestation document says,
decoded and type-checked but not judged.  :class:`AttestationResult` is what a
relying party gets back from verification: the verdict, the document fields it
can act on (PCRs, public key, user data, nonce), the trust root that was used
and every check with its outcome.

JSON shapes (``json_dict()``): binary fields are lowercase hex, certificates
base64 DER, times ISO 8601 UTC with milliseconds and ``Z``, ``pcrs`` a map from
the index as a string to lowercase hex.  The first key is ``schema``, a versioned
identifier.

These are standard dataclasses, not pydantic models, so that a one-document
``attestation verify`` process does not import pydantic (issue 17: start-up time).
Pydantic models embed them as they did the models (the field types say, through
:mod:`enclave_audit.model.lazytypes`, how pydantic validates and writes each field),
the published JSON Schemas are generated from them, and a test keeps ``json_dict()``
equal to what pydantic writes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from enclave_audit.errors import InvalidInput
from enclave_audit.model.checks import Check, CheckOutcome, Verdict
from enclave_audit.model.lazytypes import Pydantic
from enclave_audit.model.measurements import PcrSet

DOCUMENT_SCHEMA: Final = "enclave-audit/nitro-attestation-document"
RESULT_SCHEMA: Final = "enclave-audit/nitro-attestation-result"


def iso_utc(value: datetime) -> str:
    """``2024-09-07T14:37:39.545Z``: UTC, millisecond precision (what NSM timestamps carry)."""
    if value.tzinfo is None:
        raise InvalidInput("timestamps must be timezone-aware")
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


# For pydantic (models that embed these types, JSON Schemas, from_json_dict): the
# validator, serializer and schema of each are in enclave_audit.model._pydantic_types.
#: bytes as lowercase hex
HexBytes = Annotated[bytes, Pydantic("HexBytes")]
#: a DER certificate as base64
Base64Der = Annotated[bytes, Pydantic("Base64Der")]
#: a PcrSet as ``{"0": hex, ...}``
FlatPcrs = Annotated[PcrSet, Pydantic("FlatPcrs")]
#: an aware datetime as ISO 8601 UTC with milliseconds and ``Z`` (:func:`iso_utc`)
UtcTime = Annotated[datetime, Pydantic("UtcTime")]

#: pydantic refuses unknown members when it reads these types (as the models did)
_FORBID_EXTRA: Final = {"extra": "forbid"}


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _flat(pcrs: PcrSet) -> dict[str, str]:
    return {str(index): pcrs.hex(index) for index in pcrs.indices()}


class TimeSource(StrEnum):
    """Which clock the certificate validity was judged against."""

    NOW = "now"  # the caller's current time
    DOCUMENT = "document"  # the document's own (signed) timestamp: archived documents
    EXPLICIT = "explicit"  # a time the caller named
    NONE = "none"  # no time given: validity could not be checked


@dataclass(frozen=True, kw_only=True)
class CertificateSummary:
    """One certificate of the chain, for display and reports."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID_EXTRA

    subject: str
    issuer: str
    serial: str
    not_before: UtcTime
    not_after: UtcTime
    sha256: str

    def json_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": iso_utc(self.not_before),
            "not_after": iso_utc(self.not_after),
            "sha256": self.sha256,
        }


@dataclass(frozen=True, kw_only=True)
class AttestationDocument:
    """A decoded, type-checked Nitro attestation document (not yet verified).

    ``payload`` and ``protected_header`` are the exact bytes from the envelope;
    the signature is checked over them, never over a re-encoding.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID_EXTRA

    schema_: Literal["enclave-audit/nitro-attestation-document"] = field(
        default=DOCUMENT_SCHEMA, metadata={"alias": "schema"}
    )
    schema_version: Literal[1] = 1
    module_id: str
    digest: str
    timestamp: UtcTime
    timestamp_ms: int
    pcrs: FlatPcrs
    certificate: Base64Der
    cabundle: list[Base64Der]
    public_key: HexBytes | None
    user_data: HexBytes | None
    nonce: HexBytes | None
    cose_algorithm: int
    tagged: bool
    payload_map: Literal["definite", "indefinite"]
    protected_header: HexBytes
    signature: HexBytes
    unknown_fields: list[str] = field(default_factory=list)
    payload: bytes = field(default=b"", repr=False, metadata={"exclude": True})

    @property
    def is_debug(self) -> bool:
        """PCR0, PCR1 and PCR2 all present and all zero (a ``--debug-mode`` enclave)."""
        return self.pcrs.is_debug()

    @property
    def instance_id(self) -> str:
        """The parent instance id: ``module_id`` up to ``-enc``."""
        return self.module_id.split("-enc", 1)[0]

    def json_dict(self) -> dict[str, Any]:
        """The JSON document (``payload`` is left out: it is the signed bytes)."""
        return {
            "schema": self.schema_,
            "schema_version": self.schema_version,
            "module_id": self.module_id,
            "digest": self.digest,
            "timestamp": iso_utc(self.timestamp),
            "timestamp_ms": self.timestamp_ms,
            "pcrs": _flat(self.pcrs),
            "certificate": _b64(self.certificate),
            "cabundle": [_b64(der) for der in self.cabundle],
            "public_key": _hex(self.public_key),
            "user_data": _hex(self.user_data),
            "nonce": _hex(self.nonce),
            "cose_algorithm": self.cose_algorithm,
            "tagged": self.tagged,
            "payload_map": self.payload_map,
            "protected_header": self.protected_header.hex(),
            "signature": self.signature.hex(),
            "unknown_fields": list(self.unknown_fields),
        }


@dataclass(frozen=True, kw_only=True)
class AttestationResult:
    """What verification found.  Only ``verdict is Verdict.PASS`` means trusted."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID_EXTRA

    schema_: Literal["enclave-audit/nitro-attestation-result"] = field(
        default=RESULT_SCHEMA, metadata={"alias": "schema"}
    )
    schema_version: Literal[1] = 1
    verdict: Verdict
    module_id: str
    timestamp: UtcTime
    digest: str
    pcrs: FlatPcrs
    public_key: HexBytes | None
    user_data: HexBytes | None
    nonce: HexBytes | None
    root_sha256: str | None
    root_name: str | None
    verification_time: UtcTime | None
    time_source: TimeSource
    insecure_unsigned: bool = False
    chain: list[CertificateSummary] = field(default_factory=list)
    checks: list[Check]

    def check(self, name: str) -> Check | None:
        """The check called ``name``, if it is in the result."""
        for item in self.checks:
            if item.name == name:
                return item
        return None

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.outcome is CheckOutcome.FAIL]

    def not_run(self) -> list[Check]:
        return [c for c in self.checks if c.outcome is CheckOutcome.NOT_RUN]

    def summary(self) -> str:
        """One line: verdict and the first reason it is not PASS."""
        bad = self.failed() or self.not_run()
        if not bad:
            return f"{self.verdict}: {self.module_id} at {iso_utc(self.timestamp)}"
        first = bad[0]
        return f"{self.verdict}: {first.name}: {first.detail}"

    def json_dict(self) -> dict[str, Any]:
        """The JSON document (docs/schemas/nitro-attestation-result.v1.schema.json)."""
        return {
            "schema": self.schema_,
            "schema_version": self.schema_version,
            "verdict": self.verdict.value,
            "module_id": self.module_id,
            "timestamp": iso_utc(self.timestamp),
            "digest": self.digest,
            "pcrs": _flat(self.pcrs),
            "public_key": _hex(self.public_key),
            "user_data": _hex(self.user_data),
            "nonce": _hex(self.nonce),
            "root_sha256": self.root_sha256,
            "root_name": self.root_name,
            "verification_time": (
                None if self.verification_time is None else iso_utc(self.verification_time)
            ),
            "time_source": self.time_source.value,
            "insecure_unsigned": self.insecure_unsigned,
            "chain": [c.json_dict() for c in self.chain],
            "checks": [c.json_dict() for c in self.checks],
        }

    @classmethod
    def from_json_dict(cls, data: object) -> AttestationResult:
        """Read a result back from its JSON document, strictly (pydantic; not on the
        verify path).  Unknown members, a missing member or a malformed value raise
        :class:`~enclave_audit.errors.InvalidInput`."""
        from enclave_audit.model._pydantic_types import read_as

        return read_as(cls, data, what="nitro attestation result")
