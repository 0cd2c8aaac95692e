"""Findings (what an audit noticed), plus the verdicts and checks of :mod:`.checks`."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

# verdicts and checks live in a module without pydantic (the fast verify path uses them)
from enclave_audit.model.checks import Check, CheckOutcome, Verdict, verdict_of

__all__ = ["Check", "CheckOutcome", "Finding", "Severity", "Verdict", "verdict_of"]


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return ["info", "low", "medium", "high", "critical"].index(self.value)


class Finding(BaseModel):
    """Something an audit noticed about an artefact, located by path."""

    model_config = ConfigDict(frozen=True)

    rule: str
    severity: Severity
    path: str
    message: str
    evidence: str = ""
