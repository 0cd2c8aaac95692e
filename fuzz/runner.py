"""Run every fuzz target under atheris for a fixed budget; report executions and crashes.

Each target runs in its own subprocess (``python -m fuzz.harness``) starting from
the seed corpus of :mod:`fuzz.seeds` plus whatever earlier runs added under
``OUT/corpus/TARGET``.  A crash (foreign exception, timeout, out-of-memory) stops
libFuzzer; the runner keeps the reproducer under ``OUT/crashes/``, records the
traceback and restarts the target for the rest of its budget (at most
:data:`MAX_CRASHES_PER_TARGET` times).  Results: ``OUT/results.json`` and
``OUT/results.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fuzz.targets import INPUT_TIME_LIMIT, MAX_LEN, RSS_LIMIT_MB, TARGETS, environment

ROOT = Path(__file__).resolve().parent.parent
MAX_CRASHES_PER_TARGET = 3
SCHEMA = "enclave-audit/fuzz-results/v1"
_EXECS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_DONE = re.compile(r"Done (\d+) runs")
_PEAK = re.compile(r"stat::peak_rss_mb:\s*(\d+)")
_SLOWEST = re.compile(r"stat::slowest_unit_time_sec:\s*(\d+)")
_PROGRESS = re.compile(r"^#(\d+)\s", re.MULTILINE)


@dataclass
class Crash:
    artifact: str
    kind: str
    summary: str


@dataclass
class TargetResult:
    name: str
    what: str
    seconds: float
    executions: int
    crashes: list[Crash] = field(default_factory=list)
    corpus_files: int = 0
    peak_rss_mb: int = 0
    slowest_input_s: int = 0

    @property
    def execs_per_second(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0


def write_seeds(name: str, corpus: Path) -> int:
    """Put the target's seeds into its corpus directory (content-addressed names)."""
    from fuzz.seeds import SEEDS

    corpus.mkdir(parents=True, exist_ok=True)
    seeds = SEEDS[name]()
    for data in seeds:
        (corpus / f"seed-{hashlib.sha1(data).hexdigest()}").write_bytes(data)
    return len(seeds)


def _summary(log: str) -> tuple[str, str]:
    """The crash kind and the last lines of the Python traceback libFuzzer printed."""
    if "ERROR: libFuzzer: timeout" in log:
        kind = "timeout"
    elif "out-of-memory" in log or "rss limit" in log.lower():
        kind = "out-of-memory"
    else:
        kind = "exception"
    lines = log.splitlines()
    start = next(
        (i for i, ln in enumerate(lines) if ln.startswith("=== Uncaught Python exception")), None
    )
    if start is not None:
        tb = [ln for ln in lines[start : start + 60] if ln.strip()]
        end = next((i for i, ln in enumerate(tb) if ln.startswith("==")), len(tb))
        excerpt = tb[1 : end if end > 1 else len(tb)]
        return kind, "\n".join(excerpt[-12:])
    tail = [ln for ln in lines if "ERROR" in ln or "SUMMARY" in ln]
    return kind, "\n".join(tail[-4:])


def inherited_peak_rss_mb() -> int:
    """The peak RSS (MB) a subprocess of this process starts with.

    libFuzzer checks ``-rss_limit_mb`` against the peak RSS of ``getrusage``, and Linux
    carries a process's peak RSS over fork and exec into the child: a harness started from
    a long test session that once held 2 GB would report an out-of-memory on its first
    check without allocating anything.  The limit given to libFuzzer is the budget on top
    of this floor, so each target gets the same budget whoever starts it.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def run_target(
    name: str,
    out: Path,
    *,
    seconds: float,
    runs: int | None = None,
    input_timeout: int = INPUT_TIME_LIMIT,
    rss_limit_mb: int = RSS_LIMIT_MB,
) -> TargetResult:
    """Fuzz one target for ``seconds`` (and at most ``runs`` executions when given)."""
    target = TARGETS[name]
    corpus = out / "corpus" / name
    crashes_dir = out / "crashes"
    crashes_dir.mkdir(parents=True, exist_ok=True)
    write_seeds(name, corpus)
    result = TargetResult(name, target.what, 0.0, 0)
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    env = environment()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    while len(result.crashes) < MAX_CRASHES_PER_TARGET:
        left = deadline - time.monotonic()
        if left < 1 or (runs is not None and result.executions >= runs):
            break
        args = [
            sys.executable,
            "-m",
            "fuzz.harness",
            name,
            f"-max_total_time={max(1, int(left))}",
            f"-timeout={input_timeout}",
            f"-rss_limit_mb={rss_limit_mb + inherited_peak_rss_mb()}",
            f"-max_len={MAX_LEN}",
            f"-artifact_prefix={crashes_dir}/{name}-",
            "-print_final_stats=1",
            "-close_fd_mask=1",
        ]
        if runs is not None:
            args.append(f"-runs={runs - result.executions}")
        args.append(str(corpus))
        before = set(crashes_dir.iterdir())
        proc = subprocess.run(
            args,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=left + input_timeout + 120,
            check=False,
        )
        log = proc.stderr
        execs = [int(m) for m in _EXECS.findall(log)] or [int(m) for m in _DONE.findall(log)]
        progress = [int(m) for m in _PROGRESS.findall(log)]
        result.executions += execs[-1] if execs else (progress[-1] if progress else 0)
        if peak := _PEAK.findall(log):
            result.peak_rss_mb = max(result.peak_rss_mb, int(peak[-1]))
        if slow := _SLOWEST.findall(log):
            result.slowest_input_s = max(result.slowest_input_s, int(slow[-1]))
        new = sorted(set(crashes_dir.iterdir()) - before)
        if proc.returncode == 0 and not new:
            break
        kind, summary = _summary(log)
        artifact = str(new[0]) if new else "(no reproducer written)"
        if not new and proc.returncode != 0 and "Uncaught Python exception" not in log:
            summary = f"harness exited {proc.returncode}: " + (summary or log[-2000:])
        result.crashes.append(Crash(artifact, kind, summary))
    result.seconds = round(time.monotonic() - started, 1)
    result.corpus_files = sum(1 for _ in corpus.iterdir())
    return result


def machine() -> str:
    cpus = os.cpu_count() or 0
    return (
        f"{platform.node()} {platform.machine()} {cpus} CPU(s), Python {platform.python_version()}"
    )


def markdown(results: list[TargetResult], command: str) -> str:
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {machine()}",
        "",
        "| target | input | seconds | executions | exec/s | corpus | peak RSS MB | crashes |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| `{r.name}` | {r.what} | {r.seconds:g} | {r.executions} | "
            f"{r.execs_per_second:.0f} | {r.corpus_files} | {r.peak_rss_mb} | {len(r.crashes)} |"
        )
    total_exec = sum(r.executions for r in results)
    total_crash = sum(len(r.crashes) for r in results)
    lines.append(f"| **total** | | | **{total_exec}** | | | | **{total_crash}** |")
    for r in results:
        for c in r.crashes:
            lines += [
                "",
                f"Crash in `{r.name}` ({c.kind}), reproducer `{c.artifact}`:",
                "```",
                c.summary,
                "```",
            ]
    return "\n".join(lines) + "\n"


def write_report(results: list[TargetResult], out: Path, command: str) -> None:
    from enclave_audit.fsutil import write_json_atomic, write_text_atomic

    doc = {
        "schema": SCHEMA,
        "command": command,
        "machine": machine(),
        "targets": [
            {**asdict(r), "execs_per_second": round(r.execs_per_second, 1)} for r in results
        ],
        "total_executions": sum(r.executions for r in results),
        "total_crashes": sum(len(r.crashes) for r in results),
    }
    write_json_atomic(out / "results.json", doc)
    write_text_atomic(out / "results.md", markdown(results, command))


def load_report(out: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((out / "results.json").read_text())
    return data
