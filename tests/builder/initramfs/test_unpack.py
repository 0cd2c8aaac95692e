"""The kernel's view of an initramfs: concatenated archives, compressed segments, paths
resolved as the kernel resolves them, hard links, and what cannot be read.

Archives are written with the builder's own newc stream; compressed segments with
Python's gzip/bz2/lzma and the real ``lz4``/``zstd`` tools where a test needs a format
the reader does not decompress.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import subprocess

import pytest

from builder.initramfs.newc import EntryKind, type_bits
from builder.initramfs.unpack import (
    KernelView,
    PathResolver,
    UnreadableRamdisk,
    iter_initramfs,
    normalise,
)
from builder.initramfs.writer import NewcStream
from enclave_audit.limits import ByteBudget, LimitExceeded

F, D, L = EntryKind.FILE, EntryKind.DIRECTORY, EntryKind.SYMLINK


def archive(*members: tuple) -> bytes:
    """(name, kind, perm, data[, ino, nlink]) -> one newc archive with its trailer."""
    out = io.BytesIO()
    stream = NewcStream(out)
    for i, m in enumerate(members, 1):
        name, kind, perm, data = m[:4]
        ino = m[4] if len(m) > 4 else i
        nlink = m[5] if len(m) > 5 else (2 if kind is D else 1)
        stream.header(
            name, mode=type_bits(kind) | perm, ino=ino, nlink=nlink, mtime=0, size=len(data)
        )
        if data:
            stream.data_bytes(data)
    stream.trailer()
    return out.getvalue()


def unpacked(blob: bytes, **kw: object) -> list[tuple[str, str, int]]:
    return [
        (u.member.name, u.path, u.archive)
        for u in iter_initramfs(io.BytesIO(blob), **kw)  # type: ignore[arg-type]
    ]


BASE = archive(("bin", D, 0o755, b""), ("bin/true", F, 0o755, b"\x7fELF..."))
HIDDEN = archive(("bin/sh", F, 0o4777, b"#!/evil"), ("etc/ssl/key.pem", F, 0o600, b"k"))


def test_a_second_archive_after_the_trailer_is_unpacked() -> None:
    got = unpacked(BASE + HIDDEN)
    assert [p for _, p, _ in got] == ["bin", "bin/true", "bin/sh", "etc/ssl/key.pem"]
    assert [a for *_, a in got] == [0, 0, 1, 1]


@pytest.mark.parametrize("pad", [0, 4, 512, 4096 + 4])
def test_zero_padding_between_archives(pad: int) -> None:
    got = unpacked(BASE + bytes(pad) + HIDDEN + bytes(pad))
    assert [p for _, p, _ in got][-2:] == ["bin/sh", "etc/ssl/key.pem"]


@pytest.mark.parametrize(
    ("method", "compress"),
    [
        ("gzip", lambda b: gzip.compress(b, mtime=0)),
        ("bzip2", bz2.compress),
        ("xz", lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)),
        ("lzma", lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE)),
    ],
)
def test_compressed_segments(method: str, compress: object) -> None:
    blob = BASE + compress(HIDDEN + archive(("etc/x", F, 0o644, b"x")))  # type: ignore[operator]
    items = list(iter_initramfs(io.BytesIO(blob)))
    assert [u.path for u in items] == ["bin", "bin/true", "bin/sh", "etc/ssl/key.pem", "etc/x"]
    assert {u.segment.compression for u in items[2:]} == {method}
    assert [u.archive for u in items] == [0, 0, 1, 1, 2]


def test_a_compressed_segment_followed_by_more_archives() -> None:
    blob = gzip.compress(BASE, mtime=0) + bytes(3) + HIDDEN
    got = unpacked(blob)
    assert [p for _, p, _ in got] == ["bin", "bin/true", "bin/sh", "etc/ssl/key.pem"]


def test_decompressed_members_can_be_read_again_from_the_spool(tmp_path) -> None:  # type: ignore[no-untyped-def]
    blob = BASE + gzip.compress(HIDDEN, mtime=0)
    items = list(iter_initramfs(io.BytesIO(blob), spool_dir=tmp_path))
    sh = items[2]
    assert sh.segment.store is not None
    with open(sh.segment.store, "rb") as fh:
        fh.seek(sh.member.data_offset)
        assert fh.read(sh.member.size) == b"#!/evil"


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("bin/./gdbserver", "bin/gdbserver"),
        ("sbin//tcpdump", "sbin/tcpdump"),
        ("usr/bin/../../opt/suidtool", "opt/suidtool"),
        ("../../../etc/ld.so.preload", "etc/ld.so.preload"),
        ("/init", "init"),
        ("./", ""),
    ],
)
def test_names_are_resolved_like_the_kernel_path_walk(name: str, path: str) -> None:
    assert normalise(name) == path
    got = unpacked(archive((name, F, 0o755, b"x")))
    assert got[0][1] == path


def test_symlinked_parent_directories_are_followed() -> None:
    blob = archive(
        ("usr", D, 0o755, b""),
        ("usr/lib", D, 0o755, b""),
        ("lib", L, 0o777, b"usr/lib"),
        ("x", L, 0o777, b"/etc"),
        ("lib/libevil.so", F, 0o755, b"so"),
        ("x/ld.so.preload", F, 0o644, b"/usr/lib/libevil.so"),
        ("lib", F, 0o644, b"no longer a link"),
        ("lib/other", F, 0o644, b"o"),
    )
    paths = [p for _, p, _ in unpacked(blob)]
    assert "usr/lib/libevil.so" in paths and "etc/ld.so.preload" in paths
    assert paths[-1] == "lib/other"  # the link was replaced by a file: no longer followed


def test_symlink_loops_stop() -> None:
    resolver = PathResolver()
    blob = archive(("a", L, 0o777, b"b"), ("b", L, 0o777, b"a"))
    for _ in iter_initramfs(io.BytesIO(blob), resolver=resolver):
        pass
    assert resolver.resolve("a/x") == "a/x"


def test_hard_links_share_one_inode_with_the_last_mode() -> None:
    blob = archive(
        ("usr/bin/su", F, 0o4755, b"", 77, 2),
        ("tmp/.x", F, 0o4755, b"\x7fELF su", 77, 2),
    )
    view = KernelView()
    items = list(iter_initramfs(io.BytesIO(blob)))
    for u in items:
        view.apply(u, "ramdisk[0]")
    assert items[1].link_to == "usr/bin/su"
    inode = view.paths["tmp/.x"]
    assert inode is view.paths["usr/bin/su"]
    assert inode.names == ["usr/bin/su", "tmp/.x"] and inode.perm == 0o4755
    assert inode.size == len(b"\x7fELF su")


def test_hard_link_table_is_forgotten_at_each_trailer() -> None:
    first = archive(("a", F, 0o644, b"1", 5, 2))
    second = archive(("b", F, 0o644, b"2", 5, 2))
    items = list(iter_initramfs(io.BytesIO(first + second)))
    assert items[1].link_to is None


def test_a_later_member_replaces_an_earlier_one() -> None:
    view = KernelView()
    blob = archive(("init", F, 0o755, b"good")) + archive(("init", F, 0o755, b"evil"))
    items = list(iter_initramfs(io.BytesIO(blob)))
    for u in items:
        view.apply(u, "r")
    assert [u.archive for u in items] == [0, 1] and list(view.paths) == ["init"]


@pytest.mark.parametrize(
    "tail",
    [b"JUNK", b"\x00\x00\x00070701"],  # not a header; a header at a misaligned offset
)
def test_junk_after_an_archive_is_unreadable(tail: bytes) -> None:
    with pytest.raises(UnreadableRamdisk, match="offset"):
        unpacked(BASE + tail)


@pytest.mark.parametrize("tool", ["lz4", "zstd"])
def test_unsupported_compression_is_unreadable(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")
    args = [tool, "-l", "-c"] if tool == "lz4" else [tool, "-q", "-c"]
    compressed = subprocess.run(args, input=HIDDEN, capture_output=True, check=True).stdout
    with pytest.raises(UnreadableRamdisk, match=tool):
        unpacked(BASE + compressed)


def test_truncated_compressed_segment_is_unreadable() -> None:
    data = gzip.compress(HIDDEN, mtime=0)
    with pytest.raises(UnreadableRamdisk, match="gzip"):
        unpacked(BASE + data[: len(data) // 2])


def test_decompression_is_charged_to_the_budget() -> None:
    big = archive(("zeros", F, 0o644, bytes(4 << 20)))
    budget = ByteBudget(1 << 20, "decompressed bytes", "--max-decompressed")
    with pytest.raises(LimitExceeded, match="--max-decompressed"):
        unpacked(gzip.compress(big, mtime=0), budget=budget)
    roomy = ByteBudget(8 << 20, "decompressed bytes", "--max-decompressed")
    assert unpacked(gzip.compress(big, mtime=0), budget=roomy)[0][1] == "zeros"
    assert roomy.used == len(big)
