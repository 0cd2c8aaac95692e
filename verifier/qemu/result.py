"""The result of booting an EIF under QEMU: guest PCRs next to ours, checks, timings."""

from __future__ import annotations

import base64
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from enclave_audit.model.attestation_doc import AttestationResult, FlatPcrs
from enclave_audit.model.findings import Check, Verdict

SCHEMA: Final = "enclave-audit/qemu-boot/v1"

#: what an emulated document cannot show; always listed in the result.
NOT_CHECKED = (
    "COSE signature (QEMU's NSM does not sign: algorithm -1, zero signature)",
    "certificate chain to the AWS Nitro root (the certificate and cabundle are zero bytes)",
    "that the image runs on Nitro hardware (this is software emulation under TCG)",
)


class PcrComparison(BaseModel):
    """One PCR: what we computed, what the guest's NSM reported, and where ours came from."""

    model_config = ConfigDict(frozen=True)

    index: int
    expected: str
    guest: str | None
    source: str
    match: bool


class BootTimings(BaseModel):
    """Seconds from QEMU's start (wall clock on the host)."""

    model_config = ConfigDict(frozen=True)

    first_output_s: float | None
    kernel_banner_s: float | None
    attestation_s: float
    qemu_exit_s: float | None
    total_s: float


class QemuBootResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_: Literal["enclave-audit/qemu-boot/v1"] = Field(default=SCHEMA, alias="schema")
    verdict: Verdict
    eif: str
    eif_sha256: str
    qemu_version: str
    accelerator: str
    module_id: str
    nonce: str | None
    expected_pcrs: FlatPcrs
    guest_pcrs: FlatPcrs
    comparisons: list[PcrComparison]
    checks: list[Check]
    attestation: AttestationResult
    insecure_unsigned: bool = True
    not_checked: list[str] = Field(default_factory=lambda: list(NOT_CHECKED))
    vsock_device_started: bool
    vsock_heartbeat: bool | None
    vsock_document_match: bool | None
    vsock_request_ok: bool | None = None
    vsock_error: str | None = None
    timings: BootTimings
    document: bytes = Field(repr=False)
    serial_tail: list[str] = Field(default_factory=list)

    @field_serializer("document")
    def _b64(self, v: bytes) -> str:
        return base64.b64encode(v).decode("ascii")

    def mismatched(self) -> list[int]:
        return [c.index for c in self.comparisons if not c.match]

    def json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
