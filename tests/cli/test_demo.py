"""``enclave-audit demo``: the whole story through the console script.

The end-to-end run builds (or reuses from the cache) the reference image, so it is
``slow``; it needs root for the chroot simulation.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need, need_tool, run_cli


def test_help_has_a_runnable_example() -> None:
    result = run_cli(["demo", "--help"])
    assert result.exit_code == 0
    assert "enclave-audit demo -o demo-out/" in result.stdout


def _leftovers(marker: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [line for line in ps.stdout.splitlines() if marker in line and "pytest" not in line]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "the chroot simulation needs root")
    need_tool("unshare", "util-linux")
    out = tmp_path / "demo-out"
    prebuilt = os.environ.get("ENCLAVE_AUDIT_REFERENCE_EIF")  # an image built from this tree
    image = ["--image", prebuilt] if prebuilt else []
    result = run_cli(["demo", "-o", str(out), *image], timeout=5400)
    assert result.exit_code == 0, result.stderr[-3000:]
    answer_line = next(line for line in result.stdout.splitlines() if line.startswith("A: "))
    assert "Paris" in answer_line
    assert str(out) in result.stderr  # it says where its outputs and report are
    report = json.loads((out / "demo-report.json").read_text())
    assert (report["schema"], report["schema_version"]) == ("enclave-audit/demo-report", 1)
    assert "Paris" in report["answer"]
    assert "AccessDenied" in (report["tampered_refused_by_kms"] or "")
    assert "refused" in (report["tampered_refused_by_client"] or "")
    assert all(step["ok"] for step in report["steps"])
    # the answer came from the image: the enclave ran the image's own python in a chroot
    log = (out / "enclave" / "enclave.log").read_text()
    assert '"event": "ready"' in log and '"event": "model-measured"' in log
    # nothing the proxy relayed is plaintext
    traffic = b"".join(p.read_bytes() for p in (out / "proxy-capture").glob("*.bin"))
    for needle in (report["question"], report["answer"].strip()):
        assert needle.encode() not in traffic
    assert b"TrentService.Decrypt" in traffic
    # everything it started is stopped
    assert _leftovers(str(out)) == []
    assert not list((out / "enclave").glob("run/*.sock"))
