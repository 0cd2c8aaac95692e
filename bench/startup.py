"""Benchmark: a whole one-document ``attestation verify`` process against ``python -c pass``.

Relying parties run the verifier once per document from scripts, so what counts is the
process from start to exit.  Every command runs as a subprocess of this script with the
same interpreter and environment, alternating, ``--runs`` times each:

* ``python -c pass``: the baseline (interpreter start, ``site``, exit);
* ``enclave-audit attestation verify DOC --at document --quiet``: the real console
  script, as a relying party runs it (text on stdout), and the same with ``--json``;
* ``python -c "import click, cryptography.x509"``: the floor the verifier cannot go
  below while it uses click and pyca's X.509 (for the explanation, not a target).

Figures are the best and the median of the wall time and of the child's CPU time (user +
system, less sensitive to other load on a shared machine), and the ratio of each to the
baseline's.  The target (issue 17) is a verify process of at most 0.15 s (median, wall).

Bytecode: an installed package has its ``.pyc`` files (pip compiles them at install), so
the processes run with a warm bytecode cache: ``PYTHONPYCACHEPREFIX`` points at a
temporary directory that the first (unmeasured) run of each command fills, and
``PYTHONDONTWRITEBYTECODE`` is cleared for the children.  With that variable set and no
cache, every start would also compile the project's sources (about 30 ms more here).

It also lists the heaviest imports of one verify process (``python -X importtime``).

Usage: .venv/bin/python bench/startup.py [--runs 31] [--write]
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
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT.parent / "shared" / "fixtures" / "nitro" / "attestation"
DOC = DOC / "base-nitro-validator_2024-11-30_prod.cbor"
TARGET_S = 0.15


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    cpu0 = _child_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]}... exited {proc.returncode}")
    return wall, _child_cpu() - cpu0


def heaviest_imports(cmd: list[str], env: dict[str, str], n: int = 8) -> list[tuple[str, float]]:
    """Self import time by top-level package, the lowest of 5 runs per module."""
    best: dict[str, int] = {}
    for _ in range(5):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", *cmd],  # cmd: the console script and its args
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", line)
            if m:
                best[m.group(3)] = min(best.get(m.group(3), 1 << 40), int(m.group(1)))
    top: dict[str, float] = {}
    for module, us in best.items():
        package = module.split(".")[0]
        top[package] = top.get(package, 0.0) + us / 1000
    return sorted(top.items(), key=lambda kv: -kv[1])[:n]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=31)
    parser.add_argument("--write", action="store_true", help="write bench/results/startup.md")
    args = parser.parse_args()
    script = Path(sys.executable).with_name("enclave-audit")
    if not script.exists():
        raise SystemExit(f"{script}: no console script (run scripts/setup first)")
    verify = [str(script), "attestation", "verify", str(DOC), "--at", "document", "--quiet"]
    commands = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "enclave-audit attestation verify DOC": verify,
        "enclave-audit attestation verify DOC --json": [*verify, "--json"],
        'python -c "import click, cryptography.x509" (floor)': [
            sys.executable, "-c", "import click, cryptography.x509",
        ],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="startup-pycache-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        for cmd in commands.values():  # fill the bytecode cache and the page cache
            measure(cmd, env)
        load_before = os.getloadavg()[0]
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, cmd in commands.items():
                wall, cpu = measure(cmd, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
        load_after = os.getloadavg()[0]
        imports = heaviest_imports(verify, env)
    med = statistics.median
    base = "python -c pass (baseline)"
    rows = []
    for name in commands:
        w, c = walls[name], cpus[name]
        rows.append(
            f"| {name} | {min(w):.3f} | {med(w):.3f} | {min(c):.3f} | {med(c):.3f}"
            f" | {min(w) / min(walls[base]):.1f}x | {med(w) / med(walls[base]):.1f}x"
            f" | {med(c) / max(med(cpus[base]), 1e-6):.1f}x |"
        )
    name = "enclave-audit attestation verify DOC"
    wall_med, cpu_med = med(walls[name]), med(cpus[name])
    json_med = med(walls[f"{name} --json"])
    lines = [
        "# Start-up: one-document attestation verify vs python -c pass",
        "",
        f"- Command: `.venv/bin/python bench/startup.py --runs {args.runs} --write`",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared); load average"
        f" {load_before:.1f} before and {load_after:.1f} after the runs",
        f"- Python {platform.python_version()}, click {_version('click')},"
        f" cryptography {_version('cryptography')}",
        f"- DOC: `shared/fixtures/nitro/attestation/{DOC.name}` (PASS at document time);"
        " the real console script, stdout and stderr to /dev/null",
        f"- {args.runs} alternating runs of each command, warm bytecode cache"
        " (PYTHONPYCACHEPREFIX, as an installed package has its .pyc files)",
        "",
        "| process | wall best s | wall median s | CPU best s | CPU median s"
        " | best / baseline | median / baseline | CPU median / baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"verify minus baseline (medians): {wall_med - med(walls[base]):.3f} s wall,"
        f" {cpu_med - med(cpus[base]):.3f} s CPU;"
        f" verify minus the click + x509 floor: {wall_med - med(walls[list(commands)[3]]):.3f} s"
        " wall.",
        f"Target: a verify process of at most {TARGET_S} s:"
        f" {'met' if wall_med <= TARGET_S else 'NOT met'} (median wall {wall_med:.3f} s,"
        f" with --json {json_med:.3f} s),"
        f" {'met' if cpu_med <= TARGET_S else 'NOT met'} (median CPU {cpu_med:.3f} s).",
        "",
        "Heaviest imports of one verify process (self time by top-level package, ms, the"
        " lowest of 5 runs per module; `python -X importtime`):",
        "",
        *(f"- {pkg}: {ms:.0f}" for pkg, ms in imports),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        (ROOT / "bench" / "results" / "startup.md").write_text(text)


if __name__ == "__main__":
    main()
