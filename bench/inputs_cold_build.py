"""Benchmark: a cold build from an exported input set vs a cold build from the mirrors.

Both builds start from an empty cache (``ENCLAVE_AUDIT_CACHE`` pointed at a new
directory): the kernel, init, root filesystem, ramdisks and EIF are all built again. The
only difference is where the pinned inputs come from: the spec's Debian mirrors and PyPI
(the baseline), or an input set exported from the baseline's manifest, read inside a new
network namespace (``unshare --net``) so that no byte can come from anywhere else. The
figures are the two builds' wall times and their per-step timings, the time to export the
set, and its size.

Usage:  .venv/bin/python bench/inputs_cold_build.py [--write] [--keep DIR]
(root: the native backend runs mmdebstrap in root mode and the second build runs under
unshare)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "inputs.md"
EXE = str(Path(sys.executable).with_name("enclave-audit"))


def _run(argv: list[str], cache: Path, *, offline: bool = False) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if k != "ENCLAVE_AUDIT_STORE"}
    env["ENCLAVE_AUDIT_CACHE"] = str(cache)
    prefix = ["unshare", "--net", "--"] if offline else []
    started = time.perf_counter()
    done = subprocess.run([*prefix, EXE, *argv], env=env, cwd=ROOT, capture_output=True,
                          check=False)  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    out = done.stdout.decode()
    return seconds, (json.loads(out) if out.strip().startswith("{") else {})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true", help="write bench/results/inputs.md")
    parser.add_argument("--keep", type=Path, help="keep the work directory here")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-inputs-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    mirrors_cache, set_cache = work / "cache-mirrors", work / "cache-inputs"
    for d in (mirrors_cache, set_cache):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    base = ["build", "--json", "--spec", "reference_enclave/enclave.toml"]
    t_mirrors, r_mirrors = _run([*base, "-o", str(work / "out-mirrors")], mirrors_cache)
    manifest = work / "out-mirrors" / "build-manifest.json"
    inputs = work / "inputs.tar"
    t_export, exported = _run(
        ["inputs", "export", "--manifest", str(manifest), "-o", str(inputs), "--json"],
        mirrors_cache,
    )
    t_set, r_set = _run([*base, "--inputs", str(inputs), "-o", str(work / "out-set")], set_cache,
                        offline=True)  # fmt: skip
    identical = (work / "out-mirrors" / "enclave.eif").read_bytes() == (
        work / "out-set" / "enclave.eif"
    ).read_bytes()
    steps = sorted(set(r_mirrors["timings"]) | set(r_set["timings"]))
    lines = [
        "# Pinned inputs: cold build from an input set vs from the mirrors (issue #20)",
        "",
        "Command: `.venv/bin/python bench/inputs_cold_build.py --write` (as root)",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs),"
        f" Python {platform.python_version()}",
        "",
        "Both builds start from an empty cache; the second reads its inputs only from the"
        " input set, inside `unshare --net` (no network at all).",
        "",
        f"- input set: **{exported['inputs']} inputs, {exported['bytes'] / 1e6:.1f} MB**"
        f" (exported in {t_export:.1f} s from the first build's store)",
        f"- cold build from the mirrors: **{t_mirrors:.0f} s**",
        f"- cold build from the input set, offline: **{t_set:.0f} s**"
        f" -> **{t_set / t_mirrors:.2f}x** the baseline",
        f"- EIFs byte-identical: **{identical}**",
        "",
        "| step | from mirrors (s) | from input set (s) |",
        "| --- | ---: | ---: |",
        *(
            f"| {s} | {r_mirrors['timings'].get(s, 0):.1f} | {r_set['timings'].get(s, 0):.1f} |"
            for s in steps
        ),
        "",
        "Fetching happens inside the steps that read the bytes (the kernel source in"
        " `kernel`, the .debs in `rootfs`, the wheels in `wheels`); `inputs` is the up-front"
        " location of every pin (index reads from the mirrors, or the set's index).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        RESULTS.write_text(text)
    if not identical:
        sys.exit("the two EIFs differ")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
