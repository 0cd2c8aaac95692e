"""repro-test through the CLI: a control and a build varying >= 5 things give the same EIF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import _schema_validator, json_schema_for, run_cli

from builder.pipeline import BuildResult

pytestmark = pytest.mark.slow


def test_repro_test_two_runs_identical(reference_image: BuildResult, tmp_path: Path) -> None:
    out = tmp_path / "repro"
    result = run_cli(["repro-test", "--runs", "2", "--json", "-o", str(out)], timeout=3600)
    assert result.exit_code == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["reproducible"] is True
    tested = [v for v in report["variations"] if v["tested"]]
    assert len(tested) >= 5
    assert all(v["eif_identical"] and v["pcrs_equal"] for v in tested)
    saved = json.loads((out / "repro-report.json").read_text())
    assert list(saved)[:2] == ["schema", "schema_version"]
    _schema_validator(json_schema_for(saved) or "").validate(saved)
    # the rebuilds equal the reference image itself (same commit, same epoch)
    control = report["runs"][0]
    ref_pcrs = {f"PCR{k}": reference_image.pcrs.hex(k) for k in reference_image.pcrs.indices()}
    assert control["pcrs"] == ref_pcrs
