"""Nitro attestation documents and the result of verifying one.

:class:`AttestationDocument` is what a COSE_Sign1 attestation document says,
decoded and type-checked but not judged.  :class:`AttestationResult` is what a
relying party gets back from verification: the verdict, the document fields it
can act on (PCRs, public key, user data, nonce), the trust root that was used
and every check with its outcome.

JSON shapes (``model_dump_json(by_alias=True)``): binary fields are lowercase
hex, certificates base64 DER, times ISO 8601 UTC with milliseconds and ``Z``,
``pcrs`` a map from the index as a string to lowercase hex.  The first key is
``schema``, a versioned identifier.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from enclave_audit.errors import InvalidInput
from enclave_audit.model.digests import parse_hex
from enclave_audit.model.findings import Check, CheckOutcome, Verdict
from enclave_audit.model.measurements import PcrSet

DOCUMENT_SCHEMA: Final = "enclave-audit/nitro-attestation-document"
RESULT_SCHEMA: Final = "enclave-audit/nitro-attestation-result"


def iso_utc(value: datetime) -> str:
    """``2024-09-07T14:37:39.545Z``: UTC, millisecond precision (what NSM timestamps carry)."""
    if value.tzinfo is None:
        raise InvalidInput("timestamps must be timezone-aware")
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _hex_in(value: object) -> object:
    if isinstance(value, str):
        return parse_hex(value, what="hex field")
    return value


def _b64_in(value: object) -> object:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("certificate field is not base64") from None
    return value


def _pcrs_in(value: object) -> object:
    if isinstance(value, PcrSet):
        return value
    return PcrSet(values=value)


def _pcrs_out(value: PcrSet) -> dict[str, str]:
    return {str(index): value.hex(index) for index in value.indices()}


def _time_in(value: object) -> object:
    if isinstance(value, str) and value.endswith("Z"):
        return value[:-1] + "+00:00"
    return value


HexBytes = Annotated[
    bytes,
    BeforeValidator(_hex_in),
    PlainSerializer(lambda b: b.hex(), return_type=str),
    WithJsonSchema({"type": "string", "pattern": "^[0-9a-f]*$"}),
]
Base64Der = Annotated[
    bytes,
    BeforeValidator(_b64_in),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]
FlatPcrs = Annotated[
    PcrSet,
    BeforeValidator(_pcrs_in),
    PlainSerializer(_pcrs_out, return_type=dict[str, str]),
    WithJsonSchema({"type": "object", "additionalProperties": {"type": "string"}}),
]
UtcTime = Annotated[
    datetime,
    BeforeValidator(_time_in),
    PlainSerializer(iso_utc, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class TimeSource(StrEnum):
    """Which clock the certificate validity was judged against."""

    NOW = "now"  # the caller's current time
    DOCUMENT = "document"  # the document's own (signed) timestamp: archived documents
    EXPLICIT = "explicit"  # a time the caller named
    NONE = "none"  # no time given: validity could not be checked


class CertificateSummary(BaseModel):
    """One certificate of the chain, for display and reports."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str
    issuer: str
    serial: str
    not_before: UtcTime
    not_after: UtcTime
    sha256: str


class AttestationDocument(BaseModel):
    """A decoded, type-checked Nitro attestation document (not yet verified).

    ``payload`` and ``protected_header`` are the exact bytes from the envelope;
    the signature is checked over them, never over a re-encoding.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: Literal["enclave-audit/nitro-attestation-document"] = Field(
        default=DOCUMENT_SCHEMA, alias="schema"
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
    unknown_fields: list[str] = Field(default_factory=list)
    payload: bytes = Field(default=b"", exclude=True, repr=False)

    @property
    def is_debug(self) -> bool:
        """PCR0, PCR1 and PCR2 all present and all zero (a ``--debug-mode`` enclave)."""
        return self.pcrs.is_debug()

    @property
    def instance_id(self) -> str:
        """The parent instance id: ``module_id`` up to ``-enc``."""
        return self.module_id.split("-enc", 1)[0]


class AttestationResult(BaseModel):
    """What verification found.  Only ``verdict is Verdict.PASS`` means trusted."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: Literal["enclave-audit/nitro-attestation-result"] = Field(
        default=RESULT_SCHEMA, alias="schema"
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
    chain: list[CertificateSummary] = Field(default_factory=list)
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
        return self.model_dump(mode="json", by_alias=True)
