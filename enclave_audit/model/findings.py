"""Verdicts, checks and findings: what every verification returns."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Verdict(StrEnum):
    """An explicit verdict.  Only PASS is ever treated as success."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"

    @classmethod
    def combine(cls, outcomes: list[CheckOutcome]) -> Verdict:
        """FAIL if any check failed; INCONCLUSIVE if any could not run or none ran; else PASS."""
        if not outcomes:
            return cls.INCONCLUSIVE
        if any(o is CheckOutcome.FAIL for o in outcomes):
            return cls.FAIL
        if any(o is CheckOutcome.NOT_RUN for o in outcomes):
            return cls.INCONCLUSIVE
        return cls.PASS


class CheckOutcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_RUN = "not-run"
    SKIPPED = "skipped"  # deliberately not asked for (e.g. no expected nonce given)


class Check(BaseModel):
    """One check that ran (or could not), with a one-line explanation."""

    model_config = ConfigDict(frozen=True)

    name: str
    outcome: CheckOutcome
    detail: str = ""


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


def verdict_of(checks: list[Check]) -> Verdict:
    return Verdict.combine([c.outcome for c in checks if c.outcome is not CheckOutcome.SKIPPED])
