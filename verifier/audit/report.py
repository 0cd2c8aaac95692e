"""The audit report document (schema-versioned JSON, first key names the schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from enclave_audit.errors import ReportInvalid
from enclave_audit.model._versioning import load_versioned
from enclave_audit.model.findings import Check, Finding, Severity, Verdict
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
    suppressed: int
    kernel_version: str | None
    build_time: str | None  # from the EIF metadata (used as the SBOM creation time)
    cmdline: str
    files: int
    binaries: list[BinaryInfo]
    packages: list[Package]

    def to_json(self) -> str:
        """JSON text; names that came as undecodable bytes are written visibly (``\\xNN``)."""
        from enclave_audit.strictjson import dumps_model

        return dumps_model(self, indent=2)

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
