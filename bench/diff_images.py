"""Benchmark: ``enclave-audit diff`` of two large EIFs that differ in one file.

Baselines, measured in the same run on the same machine:

* hashing both images once (sha256, streamed 1 MiB chunks) -- the floor for any tool
  that must look at every byte; goal: the diff within 1.5x of it;
* diffoscope on the same pair unpacked to directories; goal: at least 10x faster.

Peak memory: VmHWM of each process (/proc/<pid>/status; ru_maxrss would include the
memory of this parent at fork time), our diff in a fresh interpreter,
and tracemalloc's peak for the Python heap of our diff.

Usage::

    nice -n 10 .venv/bin/python bench/diff_images.py [--size-mb 500] [--out bench/results/diff.md]
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.eif import write_eif
from builder.initramfs import directory, extract, file_path, write_ramdisk
from enclave_audit.fsutil import hash_file

HELLO = r"""
#include <stdio.h>
__attribute__((noinline)) int compute(int x) { return x * 3 + 7; }
int main(int argc, char **argv) { (void)argv; printf("%d\n", compute(argc)); return 0; }
"""

CHILD = r"""
import json, sys, time, tracemalloc
from pathlib import Path
from verifier.compare import compare_paths
if sys.argv[3] == "trace":
    tracemalloc.start()
t = time.perf_counter()
report = compare_paths(Path(sys.argv[1]), Path(sys.argv[2]))
elapsed = time.perf_counter() - t
peak = tracemalloc.get_traced_memory()[1] if sys.argv[3] == "trace" else 0
from verifier.compare.render import headlines
first = headlines(report.root, 1)[0] if report.root else None
print(json.dumps({"seconds": elapsed, "tracemalloc_peak": peak,
                  "maxrss_kib": int(next(l.split()[1] for l in open("/proc/self/status")
                                         if l.startswith("VmHWM:"))),
                  "first": " > ".join(first.path[1:]) if first else None,
                  "nodes": report.stats.nodes}))
"""


def make_tree(root: Path, size_mb: int, seed: int) -> None:
    """A rootfs-like tree: many small files, some large ones, an ELF built by gcc."""
    rng = np.random.default_rng(seed)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "lib" / "data").mkdir(parents=True)
    (root / "etc").mkdir()
    total = size_mb << 20
    written = 0
    i = 0
    while written < total:
        # 70% of the bytes in files of 1-16 MiB, the rest in 4-64 KiB files
        big = i % 10 == 0
        size = int(rng.integers(1 << 20, 16 << 20)) if big else int(rng.integers(4 << 10, 64 << 10))
        size = min(size, total - written)
        data = rng.bytes(size)
        sub = root / "usr" / "lib" / "data" / f"d{i % 50:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:05d}.bin").write_bytes(data)
        written += size
        i += 1
    (root / "hello.c").write_text(HELLO)
    subprocess.run(
        ["gcc", "-g", "-O1", "-o", str(root / "usr" / "bin" / "hello"), "hello.c"],
        cwd=root,
        check=True,
    )
    (root / "hello.c").unlink()
    (root / "etc" / "config.txt").write_text("mode=production\n")


def entries_of(root: Path) -> list:
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out.append(directory(rel) if p.is_dir() else file_path(rel, p, mtime=1_700_000_000))
    return out


def image(root: Path, work: Path, name: str) -> Path:
    ramdisk = work / f"{name}.cpio"
    write_ramdisk(ramdisk, entries_of(root), epoch=1_700_000_000)
    kernel = work / "kernel.bin"
    if not kernel.exists():
        kernel.write_bytes(np.random.default_rng(7).bytes(8 << 20))
    boot = work / "boot.cpio"
    if not boot.exists():
        write_ramdisk(boot, [directory("dev")], epoch=1_700_000_000)
    eif = work / f"{name}.eif"
    write_eif(
        eif,
        kernel=kernel,
        cmdline="reboot=k panic=30",
        ramdisks=[boot, ramdisk],
        name="bench",
        version="1",
        build_time="2026-11-23T00:00:00Z",
    )
    ramdisk.unlink()
    return eif


def hash_both(a: Path, b: Path) -> float:
    """Seconds to SHA-256 both files: the cheapest possible "are they equal" check."""
    t = time.perf_counter()
    for path in (a, b):
        hash_file(path, ("sha256",))
    return time.perf_counter() - t


def ours(a: Path, b: Path, mode: str = "time") -> dict:
    """Our diff in a fresh interpreter: compare time (after imports) and process wall time."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(a), str(b), mode],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(proc.stdout)
    result["process_seconds"] = time.perf_counter() - t
    return result


def diffoscope(a: Path, b: Path, limit: float) -> tuple[float, int, bool]:
    """Wall time, peak RSS (KiB, VmHWM polled every 20 ms) of diffoscope, and whether it
    timed out."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        ["diffoscope", "--no-progress", "--text", os.devnull, str(a), str(b)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    hwm = 0
    while True:
        hwm = max(hwm, _vm_hwm(proc.pid))
        pid, _status, _usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = 0  # reaped here; keep Popen from waiting again
            return time.perf_counter() - t, hwm, False
        if time.perf_counter() - t > limit:
            proc.kill()
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            return time.perf_counter() - t, hwm, True
        time.sleep(0.02)


def _vm_hwm(pid: int) -> int:
    """Peak resident set (KiB) of a running process, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--diffoscope-timeout", type=float, default=1800)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "diff.md")
    args = ap.parse_args()
    if shutil.which("diffoscope") is None:
        sys.exit("diffoscope not installed: apt-get install -y diffoscope-minimal")
    with tempfile.TemporaryDirectory(prefix="diff-bench-") as tmp:
        work = Path(tmp)
        tree_a = work / "tree-a"
        make_tree(tree_a, args.size_mb, seed=1)
        tree_b = work / "tree-b"
        shutil.copytree(tree_a, tree_b)
        hello = bytearray((tree_b / "usr" / "bin" / "hello").read_bytes())
        from elftools.elf.elffile import ELFFile

        with open(tree_a / "usr" / "bin" / "hello", "rb") as fh:
            elf = ELFFile(fh)
            text = elf.get_section_by_name(".text")
            sym = next(
                s for s in elf.get_section_by_name(".symtab").iter_symbols() if s.name == "compute"
            )
            off = sym["st_value"] - text["sh_addr"] + text["sh_offset"] + 3
        hello[off] ^= 1
        (tree_b / "usr" / "bin" / "hello").write_bytes(bytes(hello))
        a, b = image(tree_a, work, "a"), image(tree_b, work, "b")
        shutil.rmtree(tree_a)
        shutil.rmtree(tree_b)
        size = a.stat().st_size
        hash_both(a, b)  # warm the page cache
        hashes, runs = [], []
        for _ in range(args.runs):  # interleaved, so both see the same machine load
            hashes.append(hash_both(a, b))
            runs.append(ours(a, b))
        traced = ours(a, b, "trace")
        # the same pair unpacked, for diffoscope (and for our directory mode)
        from builder.eif import EifReader

        dirs = []
        for eif, name in ((a, "ua"), (b, "ub")):
            with EifReader.open(eif) as r:
                r.copy_section(r.ramdisks[1], work / f"{name}.cpio")
            extract(work / f"{name}.cpio", work / name, preserve_owner=False)
            (work / f"{name}.cpio").unlink()
            dirs.append(work / name)
        ours_dirs = [ours(dirs[0], dirs[1]) for _ in range(args.runs)]
        traced_dirs = ours(dirs[0], dirs[1], "trace")
        d_time, d_rss, d_timeout = diffoscope(dirs[0], dirs[1], args.diffoscope_timeout)
    best_hash = min(hashes)
    best = min(runs, key=lambda r: r["seconds"])
    best_dirs = min(ours_dirs, key=lambda r: r["seconds"])
    version = subprocess.run(
        ["diffoscope", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    rss = best["maxrss_kib"] / 1024
    rss_dirs = best_dirs["maxrss_kib"] / 1024
    timed_out = " (timed out)" if d_timeout else ""
    heap = traced["tracemalloc_peak"] / 2**20
    heap_dirs = traced_dirs["tracemalloc_peak"] / 2**20
    lines = [
        "# `enclave-audit diff` benchmark",
        "",
        f"Command: `nice -n 10 .venv/bin/python bench/diff_images.py --size-mb {args.size_mb}"
        f" --runs {args.runs}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python"
        f" {platform.python_version()}, {version}; page cache warm; best of {args.runs}.",
        "",
        f"Pair: two EIFs of {size / 1e6:.0f} MB (8 MiB kernel blob, boot ramdisk, application"
        " ramdisk of random files, 1-16 MiB and 4-64 KiB) that differ in one byte of"
        " `compute()` in `usr/bin/hello` (gcc -g).",
        "",
        "| measurement | wall time (s) | ratio | peak RSS (MiB) |",
        "| --- | ---: | ---: | ---: |",
        f"| sha256 of both images once (baseline) | {best_hash:.2f} | 1.00x | - |",
        f"| `enclave-audit diff a.eif b.eif` (comparison; process"
        f" {best['process_seconds']:.2f} s) | {best['seconds']:.2f} |"
        f" {best['seconds'] / best_hash:.2f}x of hashing | {rss:.0f} |",
        f"| `enclave-audit diff` on the unpacked directories | {best_dirs['seconds']:.2f} |"
        f" {best_dirs['seconds'] / best_hash:.2f}x of hashing | {rss_dirs:.0f} |",
        f"| `diffoscope` on the unpacked directories | {d_time:.2f}{timed_out} |"
        f" {d_time / best_dirs['seconds']:.1f}x our comparison time,"
        f" {d_time / best_dirs['process_seconds']:.1f}x our whole process"
        f" ({best_dirs['process_seconds']:.2f} s with interpreter start and imports)"
        f" | {d_rss / 1024:.0f} |",
        "",
        f"Our diff's Python heap peak (tracemalloc, separate run): {heap:.1f}"
        f" MiB for the images, {heap_dirs:.1f} MiB for the directories;"
        f" {best['nodes']} difference nodes.",
        f"First difference named (images): `{best['first']}`.",
        "",
        "The machine is shared (2 CPUs, other builds running): absolute times vary up to 2x"
        " between runs, so the hashing baseline and our diff run interleaved and each keeps its"
        " best time.",
        "",
        "Goals: within 1.5x of hashing: "
        + ("met" if best["seconds"] <= 1.5 * best_hash else "NOT met")
        + f" ({best['seconds'] / best_hash:.2f}x); at least 10x faster than diffoscope: "
        + ("met" if d_time >= 10 * best_dirs["seconds"] else "NOT met")
        + f" on comparison time ({d_time / best_dirs['seconds']:.1f}x), "
        + ("met" if d_time >= 10 * best_dirs["process_seconds"] else "NOT met")
        + f" process against process ({d_time / best_dirs['process_seconds']:.1f}x; both include"
        " their interpreter start; ours imports pydantic and pyelftools).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
