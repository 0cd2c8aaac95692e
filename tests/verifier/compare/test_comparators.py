"""The format comparators one by one on real files, the engine's limits, the saved model."""

from __future__ import annotations

import gzip
import io
import lzma
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
from compare_corpus import Artefacts, FileSpec, write_cpio

from enclave_audit.errors import InvalidInput
from enclave_audit.model.difference import Cause, Change, DiffReport, NodeKind
from verifier.compare import COMPARATORS, compare_paths
from verifier.compare.kernel import version_string


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_registry_is_ordered_with_fallback_last() -> None:
    names = [c.name for c in COMPARATORS]
    assert names[0] == "eif" and names[-1] == "binary"
    assert names.index("cpio") < names.index("elf") < names.index("text")


def test_text_and_json(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", b'{"a": 1, "b": [1, 2]}\n')
    b = _write(tmp_path / "b.json", b'{"b": [1, 2], "a": 1}')
    report = compare_paths(a, b)
    assert report.root is not None and "key order" in report.root.summary
    c = _write(tmp_path / "c.json", b'{"a": 2, "b": [1, 2]}')
    root = compare_paths(a, c).root
    assert root is not None and root.unified_diff is not None
    assert '-  "a": 1,' in root.unified_diff and '+  "a": 2,' in root.unified_diff


@pytest.mark.parametrize(
    ("left", "right"),
    [
        # a reader that takes the first of two duplicate keys sees "a": 1 on the left
        (b'{"a": 1, "a": 2}', b'{"a": 2}'),
        (b'{"a": NaN}', b'{"a":  NaN}'),
        (b'{"n": ' + b"1" * 5000 + b"}", b'{"n":  ' + b"1" * 5000 + b"}"),
        (b"[" * 100_000 + b"]" * 100_000, b"[" * 100_001 + b"]" * 100_001),
    ],
    ids=["duplicate-key", "nan", "huge-integer", "deep-nesting"],
)
def test_json_that_is_not_strict_is_compared_as_text_never_benign(
    tmp_path: Path, left: bytes, right: bytes
) -> None:
    """JSON the strict parser refuses is never claimed "the same JSON value" (a benign
    key-order cause) nor a crash: it is compared as text and left unexplained."""
    a = _write(tmp_path / "a.json", left)
    b = _write(tmp_path / "b.json", right)
    root = compare_paths(a, b).root
    assert root is not None and "key order" not in root.summary
    assert root.unified_diff is not None
    assert [c.cause for c in root.causes] == [Cause.UNEXPLAINED]


def test_unified_diff_is_bounded(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.txt", "".join(f"line {i}\n" for i in range(5000)).encode())
    b = _write(tmp_path / "b.txt", "".join(f"LINE {i}\n" for i in range(5000)).encode())
    root = compare_paths(a, b).root
    assert root is not None and root.unified_diff is not None
    lines = root.unified_diff.splitlines()
    assert len(lines) == 201 and "more diff lines left out" in lines[-1]


def test_binary_first_offset(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.bin", bytes(3 << 20))
    data = bytearray(3 << 20)
    data[(2 << 20) + 5] = 1
    b = _write(tmp_path / "b.bin", bytes(data))
    root = compare_paths(a, b).root
    assert root is not None and root.kind is NodeKind.BINARY
    assert f"0x{(2 << 20) + 5:x}" in root.summary and "1 differing" in root.summary


def test_gzip_header_and_content(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.txt.gz", gzip.compress(b"same\n", mtime=1_700_000_000))
    b = _write(tmp_path / "b.txt.gz", gzip.compress(b"same\n", mtime=1_700_000_900))
    root = compare_paths(a, b).root
    assert root is not None
    assert [c.name for c in root.children] == ["mtime"]
    assert root.children[0].causes[0].cause is Cause.TIMESTAMP
    c = _write(tmp_path / "c.txt.gz", gzip.compress(b"other\n", mtime=1_700_000_000))
    root = compare_paths(a, c).root
    assert root is not None and root.find("a.txt") is not None


def test_xz_content(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.xz", lzma.compress(b"alpha\n"))
    b = _write(tmp_path / "b.xz", lzma.compress(b"beta\n"))
    root = compare_paths(a, b).root
    assert root is not None and any(n.unified_diff for n in root.walk())


def test_zip_wheel_members(tmp_path: Path) -> None:
    def wheel(path: Path, stamp: tuple[int, int, int, int, int, int], body: bytes) -> Path:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(zipfile.ZipInfo("pkg/__init__.py", stamp), b"x = 1\n")
            zf.writestr(zipfile.ZipInfo("pkg/data.txt", (2020, 1, 1, 0, 0, 0)), body)
        return path

    a = wheel(tmp_path / "a.whl", (2020, 1, 1, 0, 0, 0), b"one\n")
    b = wheel(tmp_path / "b.whl", (2026, 11, 23, 2, 0, 0), b"two\n")
    root = compare_paths(a, b).root
    assert root is not None
    stamp = root.find("pkg/__init__.py", "date_time")
    assert stamp is not None and stamp.causes[0].cause is Cause.TIMESTAMP
    assert root.find("pkg/data.txt") is not None


def test_tar_members(tmp_path: Path) -> None:
    def tar(path: Path, uid: int, order: list[str]) -> Path:
        with tarfile.open(path, "w") as tf:
            for name in order:
                info = tarfile.TarInfo(name)
                data = name.encode()
                info.size, info.uid, info.mtime = len(data), uid, 1_700_000_000
                tf.addfile(info, io.BytesIO(data))
        return path

    a = tar(tmp_path / "a.tar", 0, ["x", "y"])
    b = tar(tmp_path / "b.tar", 1000, ["y", "x"])
    root = compare_paths(a, b).root
    assert root is not None
    assert root.find("(member order)") is not None
    uid = root.find("x", "uid")
    assert uid is not None and uid.causes[0].cause is Cause.OWNERSHIP


def test_cpio_added_removed_symlink(tmp_path: Path) -> None:
    a, b = tmp_path / "a.cpio", tmp_path / "b.cpio"
    from builder.initramfs.newc import EntryKind

    write_cpio(
        a,
        {
            "bin": FileSpec(kind=EntryKind.DIRECTORY, perm=0o755),
            "bin/sh": FileSpec(kind=EntryKind.SYMLINK, perm=0o777, target="dash"),
            "gone": FileSpec(b"x"),
        },
    )
    write_cpio(
        b,
        {
            "bin": FileSpec(kind=EntryKind.DIRECTORY, perm=0o755),
            "bin/sh": FileSpec(kind=EntryKind.SYMLINK, perm=0o777, target="bash"),
            "new": FileSpec(b"y"),
        },
    )
    root = compare_paths(a, b).root
    assert root is not None
    changes = {c.name: c.change for c in root.children}
    assert changes["gone"] is Change.REMOVED and changes["new"] is Change.ADDED
    target = root.find("bin/sh", "link target")
    assert target is not None and target.left is not None and target.left.value == "dash"


def test_pyc_hash_based(tmp_path: Path, artefacts: Artefacts) -> None:
    a = _write(tmp_path / "a.pyc", artefacts.pyc)
    data = bytearray(artefacts.pyc)
    data[4:8] = struct.pack("<I", 3)  # checked-hash pyc
    data[8:16] = bytes(range(8))
    b = _write(tmp_path / "b.pyc", bytes(data))
    root = compare_paths(a, b).root
    assert root is not None and root.kind is NodeKind.PYC
    names = {c.name for c in root.children}
    assert {"flags", "invalidation", "source_hash", "source_mtime"} <= names


def test_elf_unstripped_and_comment(artefacts: Artefacts, tmp_path: Path) -> None:
    a = _write(tmp_path / "a", artefacts.elf_stripped)
    b = _write(tmp_path / "b", artefacts.elf)
    root = compare_paths(a, b).root
    assert root is not None and root.kind is NodeKind.ELF
    assert any(n.startswith("stripping differs") for n in root.notes)
    assert Cause.DEBUG_SYMBOLS in [h.cause for h in root.causes]


def test_bzimage_version_string(tmp_path: Path) -> None:
    def bzimage(version: bytes) -> bytes:
        data = bytearray(0x1000)
        data[0x1F1] = 1
        data[0x202:0x206] = b"HdrS"
        data[0x206:0x208] = struct.pack("<H", 0x020F)
        data[0x20E:0x210] = struct.pack("<H", 0x400 - 0x200)
        data[0x400 : 0x400 + len(version)] = version
        return bytes(data)

    v1 = b"6.1.0 (builder@host) #1 SMP Sat Nov 22 10:00:00 UTC 2026"
    v2 = b"6.1.0 (builder@host) #1 SMP Sun Nov 23 11:30:00 UTC 2026"
    assert version_string(bzimage(v1)) == v1.decode()
    a, b = _write(tmp_path / "a", bzimage(v1)), _write(tmp_path / "b", bzimage(v2))
    root = compare_paths(a, b).root
    assert root is not None and root.kind is NodeKind.KERNEL
    version = root.find("version: build time")
    assert version is not None and version.causes[0].cause is Cause.TIMESTAMP
    assert "KBUILD_BUILD_TIMESTAMP" in version.causes[0].evidence
    assert root.find("version: release") is None  # the release did not change
    assert any("payload" in n for n in root.notes)


def test_node_budget_and_depth(tmp_path: Path) -> None:
    files = {f"f{i:03d}": FileSpec(f"{i}".encode()) for i in range(50)}
    other = {k: FileSpec(v.data + b"!") for k, v in files.items()}
    a, b = tmp_path / "a.cpio", tmp_path / "b.cpio"
    write_cpio(a, files)
    write_cpio(b, other)
    report = compare_paths(a, b, max_nodes=10)
    assert report.stats.truncated and report.root is not None
    assert report.root.count() <= 12


def test_report_round_trip_and_schema(tmp_path: Path, artefacts: Artefacts) -> None:
    a = _write(tmp_path / "a", artefacts.elf)
    b = _write(tmp_path / "b", artefacts.elf_one_byte)
    report = compare_paths(a, b)
    text = report.to_json()
    assert DiffReport.from_json(text) == report
    with pytest.raises(InvalidInput, match="schema version 9"):
        DiffReport.from_json(text.replace('"schema_version": 2', '"schema_version": 9'))
    with pytest.raises(InvalidInput, match="not an"):
        DiffReport.from_json('{"schema": "other"}')


MAGICS = [
    b".eif",
    b"070701",
    b"\x7fELF\x02\x01\x01",
    b"\x1f\x8b\x08",
    b"\xfd7zXZ\x00",
    b"PK\x03\x04",
    b"\xa7\r\r\n",
    b"",
    b'{"a": ',
]


def test_malformed_inputs_never_crash(tmp_path: Path) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=150, deadline=None)
    @given(st.sampled_from(MAGICS), st.binary(max_size=700), st.binary(max_size=700))
    def pairs(magic: bytes, tail_a: bytes, tail_b: bytes) -> None:
        a = _write(tmp_path / "a", magic + tail_a)
        b = _write(tmp_path / "b", magic + tail_b)
        report = compare_paths(a, b)
        assert report.identical == (tail_a == tail_b)

    pairs()


def test_capability_xattrs_are_security_relevant(tmp_path: Path) -> None:
    """A file capability (pax SCHILY.xattr.security.capability; the xattr on a tree)."""
    import os

    from enclave_audit.model.difference import Significance

    def tar(path: Path, caps: str | None) -> Path:
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
            info = tarfile.TarInfo("usr/bin/ping")
            data = b"\x7fELF ping"
            info.size, info.mode, info.mtime = len(data), 0o755, 1_700_000_000
            if caps is not None:
                info.pax_headers = {"SCHILY.xattr.security.capability": caps}
            tf.addfile(info, io.BytesIO(data))
        return path

    root = compare_paths(tar(tmp_path / "a.tar", None), tar(tmp_path / "b.tar", "\x01\x00")).root
    assert root is not None
    cap = root.find("usr/bin/ping", "pax:SCHILY.xattr.security.capability")
    assert cap is not None and cap.significance is Significance.SECURITY
    # the same on unpacked trees, where the kernel would keep the xattr
    left, right = tmp_path / "l", tmp_path / "r"
    for d in (left, right):
        (d / "bin").mkdir(parents=True)
        (d / "bin" / "ping").write_bytes(b"\x7fELF ping")
    value = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw, v2
    try:
        os.setxattr(right / "bin" / "ping", "security.capability", value)
    except OSError:
        pytest.skip("cannot set security.capability here (needs CAP_SETFCAP)")
    tree = compare_paths(left, right).root
    assert tree is not None
    node = tree.find("bin/ping", "xattr security.capability")
    assert node is not None and node.significance is Significance.SECURITY


def test_a_compressed_ramdisk_is_read_whole_as_the_kernel_reads_it(tmp_path: Path) -> None:
    """gzip'd cpio followed by a plain archive: a gzip reader stops; the kernel does not."""
    from builder.initramfs.newc import EntryKind

    base, extra = tmp_path / "base.cpio", tmp_path / "extra.cpio"
    write_cpio(base, {"etc": FileSpec(kind=EntryKind.DIRECTORY, perm=0o755)})
    write_cpio(extra, {"etc/ld.so.preload": FileSpec(b"/tmp/x.so\n")})
    a = _write(tmp_path / "a.cpio.gz", gzip.compress(base.read_bytes(), mtime=0))
    b = _write(
        tmp_path / "b.cpio.gz", gzip.compress(base.read_bytes(), mtime=0) + extra.read_bytes()
    )
    root = compare_paths(a, b).root
    assert root is not None
    preload = root.find("etc/ld.so.preload")
    assert preload is not None and preload.change is Change.ADDED
    assert preload.significance is not None and preload.significance.value == "security-relevant"
