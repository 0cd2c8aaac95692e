"""Every fuzz target runs under atheris for a short budget in CI without a crash.

The long runs (``python -m fuzz run --seconds 60``) are recorded in RELIABILITY.md;
this keeps every target runnable and crash-free on each change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fuzz.runner import run_target
from fuzz.targets import TARGETS

#: seconds per target in CI (18 targets: about a minute and a half with start-up)
BUDGET = float(os.environ.get("ENCLAVE_AUDIT_FUZZ_SECONDS", "3"))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_runs_without_crash(name: str, tmp_path: Path) -> None:
    result = run_target(name, tmp_path, seconds=BUDGET)
    assert result.executions > 0, f"{name}: the harness executed nothing"
    details = "\n\n".join(f"{c.kind} {c.artifact}\n{c.summary}" for c in result.crashes)
    assert not result.crashes, f"{name}: {len(result.crashes)} crash(es)\n{details}"
    assert result.corpus_files >= 1
