"""SIGKILL the KMS, the accelerator, the builder and the gate's log writer; nothing is lost.

Short CI variants (2 kills each) of the scenarios in fuzz/faults.py; the long runs
(``python -m fuzz faults --runs 20``) are recorded in RELIABILITY.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fuzz.faults import SCENARIOS

RUNS = int(os.environ.get("ENCLAVE_AUDIT_FAULT_RUNS", "2"))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_kill_and_restart_loses_nothing(scenario: str, tmp_path: Path) -> None:
    result = SCENARIOS[scenario](tmp_path, runs=RUNS)
    assert result.runs == RUNS
    assert result.lost == 0, (result.lost, result.notes)
    assert not result.unclear_errors, result.unclear_errors[:3]
