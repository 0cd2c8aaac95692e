"""The audit report: one model that every renderer (HTML, Markdown, JSON, text) reads.

Saved as schema-versioned JSON; :func:`AuditReport.from_json` reads it back so a
report can be re-rendered without recomputing anything.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from enclave_audit.errors import ReportInvalid
from enclave_audit.model._versioning import load_versioned
from enclave_audit.model.difference import DiffNode
from enclave_audit.model.findings import Check, Finding, Verdict

SCHEMA: Final = "enclave-audit/report"
SCHEMA_VERSION: Final = 1


_PCR_INDEX = re.compile(r"^([0-9]|[12][0-9]|3[01])$")
_HEX = re.compile(r"^([0-9a-f]{2}){0,64}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReportInput(_Frozen):
    name: str
    version: str = ""
    origin: str = ""
    sha256: str = ""


class PcrRow(_Frozen):
    """One column source of the PCR table: the builder, a rebuild, a document, the policy."""

    source: str
    role: Literal["builder", "rebuild", "attestation", "policy", "candidate", "expected"]
    pcrs: dict[str, str]  # "0" -> lowercase hex

    @field_validator("pcrs")
    @classmethod
    def _pcr_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _PCR_INDEX.match(key):
                raise ValueError(f"PCR key {key[:20]!r} is not an index 0..31")
            if not _HEX.match(value):
                raise ValueError(f"PCR{key} is not lowercase hex")
        return v

    def value(self, index: int) -> str | None:
        return self.pcrs.get(str(index))


class SignedStatementEntry(_Frozen):
    kind: str  # "provenance" | "vsa"
    source: str  # file name
    signer: str
    subject: str
    verdict: str
    accepted: bool
    detail: str = ""


class SbomSummary(_Frozen):
    format: str = ""
    debian_packages: int = 0
    python_distributions: int = 0
    notable: list[str] = Field(default_factory=list)


class GateSection(_Frozen):
    decision: Literal["approved", "refused"]
    reason: str
    threshold: int
    agreeing: list[str]
    dissenting: list[str]
    rejected: list[str]
    applied: bool = False
    log_entry_hash: str | None = None


class AuditReport(_Frozen):
    schema_: Literal["enclave-audit/report"] = Field(default=SCHEMA, alias="schema")
    schema_version: Literal[1] = SCHEMA_VERSION
    title: str
    generated_at: str
    verdict: Verdict
    summary: str
    subject_name: str = ""
    subject_digests: dict[str, str] = Field(default_factory=dict)
    inputs: list[ReportInput] = Field(default_factory=list)
    pcr_table: list[PcrRow] = Field(default_factory=list)
    differences: DiffNode | None = None
    findings: list[Finding] = Field(default_factory=list)
    sbom: SbomSummary | None = None
    attestations: list[SignedStatementEntry] = Field(default_factory=list)
    attestation_checks: list[Check] = Field(default_factory=list)
    policy_diff: str | None = None
    gate: GateSection | None = None
    notes: list[str] = Field(default_factory=list)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def pcr_indices(self) -> list[int]:
        indices = {int(k) for row in self.pcr_table for k in row.pcrs}
        return sorted(indices)

    def pcr_mismatches(self) -> list[int]:
        """Indices where the rows that carry a value disagree."""
        out = []
        for index in self.pcr_indices():
            values = {row.value(index) for row in self.pcr_table if row.value(index) is not None}
            if len(values) > 1:
                out.append(index)
        return out

    def to_json(self) -> str:
        from enclave_runtime.strictjson import dumps_model

        return dumps_model(self, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "report") -> AuditReport:
        return load_versioned(
            cls, text, schema=SCHEMA, version=SCHEMA_VERSION, source=source, error=ReportInvalid
        )
