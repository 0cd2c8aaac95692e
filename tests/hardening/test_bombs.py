"""Decompression and size bombs: bounded bytes decompressed and bytes held in memory.

Each example from the hostile-input review is reproduced at its real size and run through
the real console command, with its peak resident set measured (``VmHWM`` of the command's
own process):

* a pair of small zips whose members inflate to 32 MiB of zeros each: ``diff`` once held
  every member of both sides in memory (1.24 GB RSS measured on main);
* gzip in gzip, under 2 KB, inflating to 1 GiB per side: ``diff`` followed it uncapped;
* a 505 KB EIF whose gzip'd ramdisk holds a 500 MB "ELF": ``audit`` held it whole
  (2.0 GB RSS) and then passed.

Now the budgets hold, the result is INCONCLUSIVE (never PASS, never "identical"), and the
message names the limit and the flag that raises it.  A property test then drives random
nested compressions through the same readers (``compare_paths`` and ``audit_image``) with
small budgets: what is decompressed never exceeds the budget by more than one buffer, and
a budget that is hit is always reported.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import need_tool
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

import bombs

from enclave_audit.limits import GIB, MIB, Limits
from enclave_audit.model.findings import Verdict
from verifier.audit import audit_image, load_policy
from verifier.compare import compare_paths

#: runs the console command in this interpreter and records its peak RSS (VmHWM, KiB)
LAUNCH = r"""
import sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    from enclave_audit.cli import main
    sys.argv = ["enclave-audit", *sys.argv[2:]]
    code = main()
finally:
    hwm = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    out.write_text(hwm)
sys.exit(code)
"""

#: the peak RSS every bomb must stay under (the interpreter, lief and rich included)
RSS_CEILING_MIB = 400


def run_measured(args: list[str], tmp_path: Path) -> tuple[int, str, str, int]:
    """(exit code, stdout, stderr, peak RSS in MiB) of ``enclave-audit ARGS``."""
    hwm = tmp_path / "vmhwm"
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, str(hwm), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr, int(hwm.read_text()) // 1024


@pytest.fixture(scope="module")
def bomb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bombs")


def test_zip_pair_diff_stays_bounded_and_is_inconclusive(bomb_dir: Path, tmp_path: Path) -> None:
    a, b = bombs.zip_pair(bomb_dir)
    assert a.stat().st_size < 600_000 and b.stat().st_size < 600_000
    code, out, err, rss = run_measured(["diff", str(a), str(b), "--json"], tmp_path)
    assert code == 1, err
    report = json.loads(out)
    assert report["verdict"] == "INCONCLUSIVE"
    assert any("--max-decompressed" in m for m in report["stats"]["limits_reached"])
    assert report["stats"]["bytes_decompressed"] <= GIB + 2 * MIB
    assert rss < RSS_CEILING_MIB, f"peak RSS {rss} MiB (main: 1241 MiB)"


def test_nested_gzip_diff_is_capped(bomb_dir: Path, tmp_path: Path) -> None:
    a, b = bombs.nested_gzip_pair(bomb_dir)
    assert a.stat().st_size < 2600 and b.stat().st_size < 2600
    code, out, err, rss = run_measured(["diff", str(a), str(b)], tmp_path)
    assert code == 1, err
    assert "INCONCLUSIVE" in out and "--max-decompressed" in out
    assert "decompressed bytes limit of 1 GiB reached" in out
    assert rss < RSS_CEILING_MIB
    # raising the limit is what the message says to do, and it is honoured
    small = run_measured(["diff", str(a), str(b), "--json", "--max-decompressed", "64M"], tmp_path)
    report = json.loads(small[1])
    assert report["stats"]["bytes_decompressed"] <= 64 * MIB + 2 * MIB
    assert report["verdict"] == "INCONCLUSIVE"


def test_gzip_elf_eif_audit_is_bounded_and_never_passes(bomb_dir: Path, tmp_path: Path) -> None:
    need_tool("gcc", "gcc")
    eif = bombs.gzip_elf_eif(bomb_dir)
    assert eif.stat().st_size < 600_000
    code, out, err, rss = run_measured(["audit", str(eif), "--json"], tmp_path)
    report = json.loads(out)
    assert report["verdict"] == "INCONCLUSIVE" and code == 1, (report["checks"], err)
    details = " ".join(c["detail"] for c in report["checks"])
    assert "--max-memory" in details and "500000000-byte" in details
    assert rss < RSS_CEILING_MIB, f"peak RSS {rss} MiB (main: 2016 MiB)"
    # with room for it, the same file is analysed (and found hardened)
    roomy = audit_image(eif, load_policy(None), limits=Limits(memory=600 * MIB))
    assert roomy.verdict is Verdict.PASS
    assert [b.path for b in roomy.binaries] == ["ramdisk[1]/rootfs/usr/bin/app"]


def test_a_decompression_budget_hit_in_audit_is_inconclusive(bomb_dir: Path) -> None:
    need_tool("gcc", "gcc")
    eif = bomb_dir / "bomb.eif"
    if not eif.exists():
        eif = bombs.gzip_elf_eif(bomb_dir)
    report = audit_image(eif, load_policy(None), limits=Limits(decompressed=100 * MIB))
    assert report.verdict is Verdict.INCONCLUSIVE
    assert any("--max-decompressed" in c.detail for c in report.checks)


# --- the property, through the same readers ---------------------------------------------------

LAYERS = st.lists(st.sampled_from(["gzip", "xz", "bz2", "zip"]), min_size=1, max_size=3)


def wrap(data: bytes, layers: list[str]) -> bytes:
    for layer in layers:
        if layer == "gzip":
            data = gzip.compress(data, mtime=0)
        elif layer == "xz":
            data = lzma.compress(data)
        elif layer == "bz2":
            data = bz2.compress(data)
        else:
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("inner", data)
                zf.writestr("copy", data)
            data = out.getvalue()
    return data


def test_diff_never_decompresses_past_its_budget(tmp_path: Path) -> None:
    budget = 4 * MIB

    @settings(max_examples=25, deadline=None)
    @given(LAYERS, st.integers(min_value=1, max_value=24 * MIB), st.integers(0, 255))
    def pairs(layers: list[str], size: int, tail: int) -> None:
        a, b = tmp_path / "a.bin", tmp_path / "b.bin"
        a.write_bytes(wrap(bytes(size - 1) + b"\x00", layers))
        b.write_bytes(wrap(bytes(size - 1) + bytes([tail | 1]), layers))
        report = compare_paths(a, b, limits=Limits(decompressed=budget, memory=1 * MIB))
        used = report.stats.bytes_decompressed
        assert used <= budget + 2 * MIB, (layers, size, used)
        if report.stats.limits_reached:
            assert report.verdict == "INCONCLUSIVE"
            assert all("--max-" in m for m in report.stats.limits_reached)
        else:
            assert report.verdict == "DIFFERENT"

    pairs()


def test_audit_never_passes_past_its_budget(tmp_path: Path) -> None:
    from builder.eif import write_eif
    from builder.initramfs.newc import EntryKind, type_bits
    from builder.initramfs.writer import NewcStream

    kernel = tmp_path / "kernel.bin"
    kernel.write_bytes(b"\x4d\x5a" + bytes(range(256)) * 64)
    boot = tmp_path / "boot.cpio"
    with open(boot, "wb") as fh:
        s = NewcStream(fh)
        s.header("init", mode=type_bits(EntryKind.FILE) | 0o755, ino=1, nlink=1, mtime=0, size=3)
        s.data_bytes(b"#!x")
        s.trailer()

    @settings(max_examples=15, deadline=None)
    @given(st.sampled_from(["gzip", "xz", "bz2"]), st.integers(1, 12 * MIB))
    def images(layer: str, size: int) -> None:
        raw = io.BytesIO()
        s = NewcStream(raw)
        s.header(
            "data.bin", mode=type_bits(EntryKind.FILE) | 0o644, ino=1, nlink=1, mtime=0, size=size
        )
        s.data(io.BytesIO(bytes(size)), size, "data.bin")
        s.trailer()
        app = tmp_path / "app.cpio.z"
        app.write_bytes(wrap(raw.getvalue(), [layer]))
        eif = tmp_path / "image.eif"
        write_eif(
            eif,
            kernel=kernel,
            cmdline="console=ttyS0",
            ramdisks=[boot, app],
            name="p",
            version="1",
            build_time="2023-11-14T22:13:20Z",
        )
        report = audit_image(eif, load_policy(None), limits=Limits(decompressed=4 * MIB))
        if len(raw.getvalue()) > 4 * MIB:
            assert report.verdict is Verdict.INCONCLUSIVE
            assert any("--max-decompressed" in c.detail for c in report.checks)
        else:
            assert report.verdict is not Verdict.INCONCLUSIVE, report.checks

    images()
