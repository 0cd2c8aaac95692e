"""The audit report document (schema-versioned JSON, first key names the schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from enclave_audit.errors import ReportInvalid
from enclave_audit.model._versioning import load_versioned
from enclave_audit.model.findings import Check, Finding, Severity, Verdict
from verifier.audit.policy import WaivedFinding, Waiver
from verifier.binaries import BinaryInfo
from verifier.sbom import Package

AUDIT_SCHEMA: Literal["enclave-audit/audit"] = "enclave-audit/audit"
AUDIT_SCHEMA_VERSION = 1


class ImageAuditReport(BaseModel):
    """What ``enclave-audit audit`` found in one image, and its verdict under a policy."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: Literal["enclave-audit/audit"] = Field(default=AUDIT_SCHEMA, alias="schema")
    schema_version: int = AUDIT_SCHEMA_VERSION
    image: str
    image_sha256: str
    verdict: Verdict
    policy: str
    fail_on: Severity
    checks: list[Check]
    findings: list[Finding]
    #: findings a waiver of the policy accepted, each with the waiver's reason
    waived: list[WaivedFinding] = []
    #: waivers of the policy that matched no finding
    unused_waivers: list[Waiver] = []
    suppressed: int
    kernel_version: str | None
    build_time: str | None  # from the EIF metadata (used as the SBOM creation time)
    cmdline: str
    files: int
    binaries: list[BinaryInfo]
    packages: list[Package]

    def to_json(self) -> str:
        """JSON text; names that came as undecodable bytes are written visibly (``\\xNN``)."""
        from enclave_runtime.strictjson import dumps_model

        return dumps_model(self, indent=2)

    def counts(self) -> dict[str, int]:
        """Findings per severity (most severe first), and how many were waived."""
        out = {s.value: 0 for s in sorted(Severity, key=lambda s: -s.rank)}
        for f in self.findings:
            out[f.severity.value] += 1
        out["waived"] = len(self.waived)
        return out

    def summary(self) -> str:
        """``0 critical, 0 high, 0 medium, 2 low, 40 info; 5 waived``."""
        counts = self.counts()
        waived = counts.pop("waived")
        return ", ".join(f"{n} {name}" for name, n in counts.items()) + f"; {waived} waived"

    def failing(self) -> list[Finding]:
        return [f for f in self.findings if f.severity.rank >= self.fail_on.rank]

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "audit report") -> ImageAuditReport:
        return load_versioned(
            cls,
            text,
            schema=AUDIT_SCHEMA,
            version=AUDIT_SCHEMA_VERSION,
            source=source,
            error=ReportInvalid,
        )
