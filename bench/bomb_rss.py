"""Peak RSS of ``diff`` and ``audit`` on the decompression and size bombs (RELIABILITY.md).

Builds the three bombs of ``tests/hardening/bombs.py`` in a temporary directory and runs
the real console command on each under ``/usr/bin/time -f %M`` (peak resident set of
that process, KiB), printing one row per bomb: command, exit code, peak RSS, seconds and
the verdict line the command printed.

Usage::

    .venv/bin/python bench/bomb_rss.py [--only zip|nested|eif] [--extra-args ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "hardening"))

import bombs


def measure(cmd: list[str]) -> tuple[int, int, float, str]:
    """(exit code, peak RSS KiB, seconds, last meaningful output line)."""
    started = time.monotonic()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "RSSKIB=%M", *cmd], capture_output=True, text=True, check=False
    )
    seconds = time.monotonic() - started
    rss = 0
    lines = []
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("RSSKIB="):
            rss = int(line.split("=", 1)[1])
        elif line.strip():
            lines.append(line.strip())
    verdict = next(
        (x for x in lines if any(k in x for k in ("INCONCLUSIVE", "PASS", "FAIL", "error:"))),
        lines[0] if lines else "",
    )
    return done.returncode, rss, seconds, verdict[:160]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["zip", "nested", "eif"], action="append")
    args = parser.parse_args()
    exe = shutil.which("enclave-audit", path=str(Path(sys.executable).parent)) or "enclave-audit"
    chosen = args.only or ["zip", "nested", "eif"]
    with tempfile.TemporaryDirectory(prefix="bombs-") as tmp:
        root = Path(tmp)
        rows = []
        if "zip" in chosen:
            a, b = bombs.zip_pair(root)
            rows.append(("zip pair " + bombs.sizes(a, b), [exe, "diff", str(a), str(b)]))
        if "nested" in chosen:
            a, b = bombs.nested_gzip_pair(root)
            rows.append(("nested gzip " + bombs.sizes(a, b), [exe, "diff", str(a), str(b)]))
        if "eif" in chosen:
            eif = bombs.gzip_elf_eif(root)
            rows.append(("gzip'd 500 MB ELF " + bombs.sizes(eif), [exe, "audit", str(eif)]))
        for label, cmd in rows:
            rc, rss, seconds, verdict = measure(cmd)
            shown = " ".join(["enclave-audit", *cmd[1:2], *(Path(c).name for c in cmd[2:])])
            print(
                f"| {label} | `{shown}` | exit {rc} | {rss / 1024:.0f} MiB | {seconds:.1f} s"
                f" | {verdict} |"
            )


if __name__ == "__main__":
    main()
