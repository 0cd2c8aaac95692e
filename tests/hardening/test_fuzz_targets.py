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


def test_a_large_parent_does_not_make_every_target_run_out_of_memory(tmp_path: Path) -> None:
    """Linux hands a child its parent's peak RSS: the runner's limit must not count it.

    Found in CI: after the test session's peak RSS had passed 2 GiB, every target stopped
    at its first RSS check with ``out-of-memory (used: 2097Mb; limit: 2048Mb)``.
    """
    import subprocess
    import sys

    from fuzz.targets import RSS_LIMIT_MB

    script = (
        "import resource, sys\n"
        f"big = bytearray({RSS_LIMIT_MB + 256} * 1024 * 1024)\n"
        "for i in range(0, len(big), 4096): big[i] = 1\n"
        "del big\n"
        "from fuzz.runner import inherited_peak_rss_mb, run_target\n"
        f"assert inherited_peak_rss_mb() > {RSS_LIMIT_MB}\n"
        f"r = run_target('cbor', __import__('pathlib').Path(sys.argv[1]), seconds={BUDGET})\n"
        "print(r.executions, [c.summary for c in r.crashes])\n"
        "sys.exit(1 if r.crashes or not r.executions else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
