"""Verdicts and checks: what every verification returns.

Plain classes (no pydantic at import time): the one-document ``attestation verify``
path uses them and must start fast.  Pydantic models that embed a :class:`Check`
(reports, rebuild and QEMU results) validate, serialize and describe it as the
standard dataclass it is: ``{"name": ..., "outcome": ..., "detail": ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


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


@dataclass(frozen=True, kw_only=True)
class Check:
    """One check that ran (or could not), with a one-line explanation."""

    # pydantic: its own settings, not those of the model that embeds it (unknown members
    # are ignored, as they were when this was a pydantic model)
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "ignore"}

    name: str
    outcome: CheckOutcome
    detail: str = ""

    def __post_init__(self) -> None:
        # what the pydantic model this replaces enforced: text fields, a known outcome
        # (given as the enum or its value), so a check can never carry a stray verdict
        _require_text(self.name, "name")
        _require_text(self.detail, "detail")
        object.__setattr__(self, "outcome", CheckOutcome(self.outcome))

    def json_dict(self) -> dict[str, Any]:
        """The JSON form (what pydantic writes for it inside a model)."""
        return {"name": self.name, "outcome": self.outcome.value, "detail": self.detail}


def _require_text(value: object, field: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"Check.{field} must be text, not {type(value).__name__}")


def verdict_of(checks: list[Check]) -> Verdict:
    return Verdict.combine([c.outcome for c in checks if c.outcome is not CheckOutcome.SKIPPED])
