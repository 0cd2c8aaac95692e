"""The reader on hostile or broken archives: one CpioError, nothing written outside."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from builder.initramfs import directory, extract, file_bytes, iter_members, symlink, write_newc
from builder.initramfs.writer import NewcStream
from enclave_audit.errors import CpioError

EPOCH = 1_700_000_000


def _raw(*members: tuple[str, int, bytes]) -> bytes:
    """An archive written with the low-level stream (no name checks)."""
    buf = io.BytesIO()
    s = NewcStream(buf)
    for i, (name, mode, data) in enumerate(members, start=1):
        s.header(name, mode=mode, ino=i, nlink=1, mtime=0, size=len(data))
        s.data_bytes(data)
    s.trailer()
    return buf.getvalue()


def _good() -> bytes:
    buf = io.BytesIO()
    write_newc(buf, [directory("d"), file_bytes("d/f", b"abc" * 100)], epoch=EPOCH)
    return buf.getvalue()


def _drain(data: bytes) -> None:
    for m in iter_members(io.BytesIO(data)):
        if m.data is not None:
            m.data.read()


def test_truncated_everywhere_raises_cpio_error() -> None:
    data = _good()
    for cut in range(0, len(data), 7):
        with pytest.raises(CpioError):
            _drain(data[:cut])


def test_bad_magic_and_gzip_hint() -> None:
    with pytest.raises(CpioError, match="gzip"):
        _drain(gzip.compress(_good(), mtime=0))
    with pytest.raises(CpioError, match="magic"):
        _drain(b"X" * 200)


def test_non_hex_field() -> None:
    data = bytearray(_good())
    data[10] = ord("g")
    with pytest.raises(CpioError, match="hexadecimal"):
        _drain(bytes(data))


def test_directory_with_data_is_refused() -> None:
    with pytest.raises(CpioError, match="cannot carry"):
        _drain(_raw(("d", 0o040755, b"xx")))


def test_dotdot_is_refused_and_nothing_escapes(tmp_path: Path) -> None:
    ramdisk = tmp_path / "evil.cpio"
    ramdisk.write_bytes(_raw(("../escaped", 0o100644, b"pwned")))
    with pytest.raises(CpioError, match=r"'\.\.'"):
        extract(ramdisk, tmp_path / "out")
    assert not (tmp_path / "escaped").exists()


def test_absolute_names_stay_inside(tmp_path: Path) -> None:
    ramdisk = tmp_path / "abs.cpio"
    ramdisk.write_bytes(_raw(("/etc-like", 0o100644, b"inside")))
    extract(ramdisk, tmp_path / "out")
    assert (tmp_path / "out" / "etc-like").read_bytes() == b"inside"


def test_write_through_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    buf = io.BytesIO()
    s = NewcStream(buf)
    target = str(outside).encode()
    s.header("link", mode=0o120777, ino=1, nlink=1, mtime=0, size=len(target))
    s.data_bytes(target)
    s.header("link/planted", mode=0o100644, ino=2, nlink=1, mtime=0, size=5)
    s.data_bytes(b"pwned")
    s.trailer()
    ramdisk = tmp_path / "evil.cpio"
    ramdisk.write_bytes(buf.getvalue())
    with pytest.raises(CpioError, match="symlink"):
        extract(ramdisk, tmp_path / "out")
    assert list(outside.iterdir()) == []


def test_symlink_then_file_replaces_link_not_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"original")
    buf = io.BytesIO()
    write_newc(buf, [symlink("x", str(victim))], epoch=EPOCH)
    first = buf.getvalue()[:-124]  # drop the trailer
    second = _raw(("x", 0o100644, b"overwritten"))
    ramdisk = tmp_path / "r.cpio"
    ramdisk.write_bytes(first + second)
    extract(ramdisk, tmp_path / "out")
    assert victim.read_bytes() == b"original"
    assert (tmp_path / "out" / "x").read_bytes() == b"overwritten"


def test_missing_trailer() -> None:
    data = _good()
    cut = data.index(b"070701", len(data) - 200)
    with pytest.raises(CpioError, match="TRAILER"):
        _drain(data[:cut])
