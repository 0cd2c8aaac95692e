"""Benchmark: a whole one-document ``attestation verify`` process against ``python -c pass``.

Relying parties run the verifier once per document from scripts, so what counts is the
process from start to exit.  Both commands run as subprocesses of this script with the
same interpreter, alternating, ``--runs`` times each; the figures are the medians of the
wall time and of the child's CPU time (user + system, less sensitive to other load on a
shared machine), the verify process minus the baseline, and their ratio.  The target
(issue 17) is a verify process of at most 0.15 s.

It also lists the heaviest imports of one verify process (``python -X importtime``), to
show where the start-up goes.

Usage: .venv/bin/python bench/startup.py [--runs 21] [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT.parent / "shared" / "fixtures" / "nitro" / "attestation"
DOC = DOC / "base-nitro-validator_2024-11-30_prod.cbor"
TARGET_S = 0.15


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(cmd: list[str]) -> tuple[float, float]:
    cpu0 = _child_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]}... exited {proc.returncode}")
    return wall, _child_cpu() - cpu0


def heaviest_imports(cmd: list[str], n: int = 8) -> list[tuple[str, float]]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *cmd[1:]],
        capture_output=True,
        text=True,
        check=False,
    )
    top: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            package = m.group(4).split(".")[0]
            top[package] = top.get(package, 0.0) + int(m.group(1)) / 1000
    return sorted(top.items(), key=lambda kv: -kv[1])[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--write", action="store_true", help="write bench/results/startup.md")
    args = parser.parse_args()
    baseline = [sys.executable, "-c", "pass"]
    verify = [
        sys.executable, "-m", "enclave_audit", "attestation", "verify", str(DOC),
        "--at", "document", "--quiet",
    ]  # fmt: skip
    measure(baseline)
    measure(verify)  # warm the page cache and the bytecode cache
    base_wall, base_cpu, ver_wall, ver_cpu = [], [], [], []
    for _ in range(args.runs):
        w, c = measure(baseline)
        base_wall.append(w)
        base_cpu.append(c)
        w, c = measure(verify)
        ver_wall.append(w)
        ver_cpu.append(c)
    med = statistics.median
    rows = [
        ("python -c pass (baseline)", med(base_wall), med(base_cpu)),
        ("attestation verify DOC", med(ver_wall), med(ver_cpu)),
    ]
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" load average {os.getloadavg()[0]:.1f} during the run.",
        "",
        "Command: `.venv/bin/python bench/startup.py --runs "
        f"{args.runs} --write` (medians of {args.runs} alternating runs)",
        "",
        "| process | wall s | CPU s |",
        "|---|---:|---:|",
        *(f"| {name} | {wall:.3f} | {cpu:.3f} |" for name, wall, cpu in rows),
        "",
        f"verify minus baseline: {med(ver_wall) - med(base_wall):.3f} s wall,"
        f" {med(ver_cpu) - med(base_cpu):.3f} s CPU;"
        f" verify / baseline: {med(ver_wall) / med(base_wall):.1f}x wall,"
        f" {med(ver_cpu) / max(med(base_cpu), 1e-6):.1f}x CPU.",
        f"Target: a verify process of at most {TARGET_S} s:"
        f" {'met' if med(ver_wall) <= TARGET_S else 'NOT met'} (wall),"
        f" {'met' if med(ver_cpu) <= TARGET_S else 'NOT met'} (CPU).",
        "",
        "Heaviest imports of one verify process (self time, ms, by top-level package):",
        "",
        *(f"- {name}: {ms:.0f}" for name, ms in heaviest_imports(verify)),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        (ROOT / "bench" / "results" / "startup.md").write_text(text)


if __name__ == "__main__":
    main()
