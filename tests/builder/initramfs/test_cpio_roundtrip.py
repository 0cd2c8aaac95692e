"""The newc writer and reader: round trips, normalization, GNU cpio interop."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import need_tool
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.initramfs import (
    EntryKind,
    char_device,
    directory,
    file_bytes,
    iter_members,
    list_members,
    plan_tree,
    symlink,
    write_newc,
    write_ramdisk,
)
from builder.initramfs.entries import Entry
from enclave_audit.errors import CpioError

EPOCH = 1_700_000_000


def _archive(entries: list[Entry], epoch: int = EPOCH) -> bytes:
    buf = io.BytesIO()
    write_newc(buf, entries, epoch=epoch)
    return buf.getvalue()


def _members(data: bytes) -> list[tuple[str, EntryKind, int, bytes | str | None]]:
    out: list[tuple[str, EntryKind, int, bytes | str | None]] = []
    for m in iter_members(io.BytesIO(data)):
        payload: bytes | str | None
        if m.is_file:
            assert m.data is not None
            payload = m.data.read()
        else:
            payload = m.link_target
        out.append((m.name, m.kind, m.perm, payload))
    return out


def test_bootstrap_layout_round_trip() -> None:
    data = _archive(
        [
            file_bytes("init", b"\x7fELF-ish", 0o755, mtime=EPOCH + 99),
            directory("dev"),
            char_device("dev/console", 5, 1),
        ]
    )
    members = list(iter_members(io.BytesIO(data)))
    assert [m.name for m in members] == ["dev", "dev/console", "init"]
    assert [m.ino for m in members] == [1, 2, 3]
    console = members[1]
    assert console.kind is EntryKind.CHAR_DEVICE
    assert (console.rdev_major, console.rdev_minor) == (5, 1)
    init = members[2]
    assert init.mtime == EPOCH  # clamped
    assert (init.uid, init.gid, init.nlink) == (0, 0, 1)
    assert init.size == 8
    assert members[0].nlink == 2
    assert len(data) % 4 == 0
    assert data.endswith(b"TRAILER!!!\0\0\0\0")


def test_sorting_is_componentwise_and_input_order_free() -> None:
    entries = [
        directory("a"),
        file_bytes("a-b", b"1"),
        file_bytes("a/z", b"2"),
        directory("a/b"),
        file_bytes("a/b/c", b"3"),
    ]
    one = _archive(entries)
    two = _archive(list(reversed(entries)))
    assert one == two
    assert [m[0] for m in _members(one)] == ["a", "a/b", "a/b/c", "a/z", "a-b"]


def test_missing_parent_and_duplicates_are_refused() -> None:
    with pytest.raises(CpioError, match="parent directory"):
        _archive([file_bytes("x/y", b"")])
    with pytest.raises(CpioError, match="twice"):
        _archive([file_bytes("x", b""), file_bytes("x", b"1")])


def _make_tree(root: Path, order: list[str]) -> None:
    root.mkdir()
    for name in order:
        if name == "dir":
            (root / "dir").mkdir(exist_ok=True)
            (root / "dir" / "inner.txt").write_bytes(b"inner\n")
        elif name == "file":
            (root / "file.bin").write_bytes(os.urandom(0) + b"x" * 5000)
        elif name == "link":
            (root / "link").symlink_to("file.bin")
        elif name == "hard":
            (root / "hard-a").write_bytes(b"same inode\n")
            os.link(root / "hard-a", root / "hard-b")


def test_tree_is_independent_of_creation_order_and_mtimes(tmp_path: Path) -> None:
    _make_tree(tmp_path / "one", ["dir", "file", "link", "hard"])
    _make_tree(tmp_path / "two", ["hard", "link", "file", "dir"])
    os.utime(tmp_path / "two" / "file.bin", (EPOCH + 5000, EPOCH + 5000))
    a = _archive(plan_tree(tmp_path / "one", "rootfs"))
    b = _archive(plan_tree(tmp_path / "two", "rootfs"))
    assert a == b
    hard = [m for m in iter_members(io.BytesIO(a)) if m.name.startswith("rootfs/hard-")]
    assert [m.nlink for m in hard] == [2, 2]
    assert hard[0].ino == hard[1].ino
    assert [m.size for m in hard] == [0, 11]  # data on the last name, as GNU cpio does


def test_gnu_cpio_extracts_our_archive(tmp_path: Path) -> None:
    cpio = need_tool("cpio")
    _make_tree(tmp_path / "src", ["dir", "file", "link", "hard"])
    ramdisk = tmp_path / "r.cpio"
    write_ramdisk(ramdisk, plan_tree(tmp_path / "src"), epoch=EPOCH)
    out = tmp_path / "out"
    out.mkdir()
    with open(ramdisk, "rb") as fh:
        subprocess.run([cpio, "-idm", "--quiet"], stdin=fh, cwd=out, check=True)
    assert (out / "dir" / "inner.txt").read_bytes() == b"inner\n"
    assert os.readlink(out / "link") == "file.bin"
    assert (out / "hard-b").read_bytes() == b"same inode\n"
    assert os.stat(out / "hard-a").st_ino == os.stat(out / "hard-b").st_ino
    assert int(os.stat(out / "file.bin").st_mtime) <= EPOCH


def test_reader_reads_gnu_cpio_archive_with_hard_links(tmp_path: Path) -> None:
    cpio = need_tool("cpio")
    _make_tree(tmp_path / "src", ["dir", "file", "link", "hard"])
    names = b"\n".join([b".", b"dir", b"dir/inner.txt", b"file.bin", b"link", b"hard-a", b"hard-b"])
    for fmt in ("newc", "crc"):
        made = subprocess.run(
            [cpio, "-o", "-H", fmt, "--quiet"],
            input=names,
            cwd=tmp_path / "src",
            capture_output=True,
            check=True,
        ).stdout
        got = {m[0]: m for m in _members(made)}
        assert got["link"][3] == "file.bin"
        assert got["file.bin"][3] == b"x" * 5000
        sizes = sorted(len(got[n][3] or b"") for n in ("hard-a", "hard-b"))  # type: ignore[arg-type]
        assert sizes == [0, 11]


def test_crc_checksum_mismatch_is_detected(tmp_path: Path) -> None:
    cpio = need_tool("cpio")
    (tmp_path / "f").write_bytes(b"hello world")
    made = bytearray(
        subprocess.run(
            [cpio, "-o", "-H", "crc", "--quiet"],
            input=b"f",
            cwd=tmp_path,
            capture_output=True,
            check=True,
        ).stdout
    )
    i = made.index(b"hello world")
    made[i] ^= 1
    with pytest.raises(CpioError, match="checksum"):
        _members(bytes(made))


def test_extract_round_trip(tmp_path: Path) -> None:
    from builder.initramfs import extract

    _make_tree(tmp_path / "src", ["dir", "file", "link", "hard"])
    ramdisk = tmp_path / "r.cpio"
    entries = [*plan_tree(tmp_path / "src", "rootfs"), char_device("console", 5, 1)]
    write_ramdisk(ramdisk, entries, epoch=EPOCH)
    result = extract(ramdisk, tmp_path / "out")
    root = tmp_path / "out" / "rootfs"
    assert (root / "dir" / "inner.txt").read_bytes() == b"inner\n"
    assert os.readlink(root / "link") == "file.bin"
    assert os.stat(root / "hard-a").st_ino == os.stat(root / "hard-b").st_ino
    assert (root / "hard-a").read_bytes() == b"same inode\n"
    assert result.skipped_devices == ["console"]
    assert len(list_members(ramdisk)) == result.members


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.text(alphabet="abcXYZ019-_.é", min_size=1, max_size=12).filter(
            lambda s: s not in (".", "..")
        ),
        st.binary(max_size=300),
        max_size=12,
    )
)
def test_property_round_trip(files: dict[str, bytes]) -> None:
    entries = [file_bytes(name, data, 0o640) for name, data in files.items()]
    data = _archive(entries)
    assert _archive(list(reversed(entries))) == data
    got = {m[0]: m[3] for m in _members(data)}
    assert got == files


def test_symlink_entry_round_trip() -> None:
    data = _archive([symlink("lib64", "usr/lib64")])
    (m,) = list(iter_members(io.BytesIO(data)))
    assert m.is_symlink and m.link_target == "usr/lib64" and m.perm == 0o777


def test_gnu_cpio_reproducible_mode_matches_layout_fields(tmp_path: Path) -> None:
    """Our reader agrees with GNU cpio's own listing of our archive."""
    cpio = need_tool("cpio")
    if shutil.which("cpio") is None:
        pytest.skip("cpio")
    _make_tree(tmp_path / "src", ["dir", "file", "link"])
    ramdisk = tmp_path / "r.cpio"
    write_ramdisk(ramdisk, plan_tree(tmp_path / "src"), epoch=EPOCH)
    with open(ramdisk, "rb") as fh:
        listing = subprocess.run([cpio, "-t", "--quiet"], stdin=fh, capture_output=True, check=True)
    assert listing.stdout.decode().split() == [m.name for m in list_members(ramdisk)]
