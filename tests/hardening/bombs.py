"""Decompression and size bombs, built for real (zipfile, zlib, the project's cpio and EIF writers).

Each builder writes its inputs into a directory and returns their paths; the inputs are
the examples from the hostile-input review (issue 18, "Decompression and size bombs"):

* :func:`zip_pair`: two small zips (about 590 KB each) whose 18 members inflate to 32 MiB
  of zeros each; ``diff`` once held every member of both sides in memory (1.35 GB RSS);
* :func:`nested_gzip_pair`: gzip inside gzip, about 2 KB, inflating to 1 GiB per
  side, which ``diff`` followed without a cap;
* :func:`gzip_elf_eif`: a 515 KB EIF whose gzip'd ramdisk holds a 500 MB "ELF" (a real
  hardened ELF followed by zeros), which ``audit`` read whole into memory (2.16 GB RSS),
  then passed.

Used by ``tests/hardening/test_bombs.py`` and ``bench/bomb_rss.py``.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

MIB = 1 << 20
GIB = 1 << 30

HARDENED_C = r"""
#include <stdio.h>
int main(int argc, char **argv) { (void)argv; printf("%d\n", argc); return 0; }
"""


def _zeros(total: int, tail: bytes = b"") -> Iterator[bytes]:
    """``total`` bytes: zeros, ending with ``tail``."""
    left = total - len(tail)
    chunk = bytes(min(MIB, left))
    while left > 0:
        n = min(len(chunk), left)
        yield chunk[:n]
        left -= n
    if tail:
        yield tail


def _deflate(chunks: Iterator[bytes], *, gzip_header: bool) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, 31 if gzip_header else -15)
    out = bytearray()
    for chunk in chunks:
        out += co.compress(chunk)
    out += co.flush()
    return bytes(out)


def zip_pair(root: Path, *, members: int = 18, member_size: int = 32 * MIB) -> tuple[Path, Path]:
    """Two zips of ``members`` deflated members of zeros; the last byte of each differs."""
    paths = []
    for side, tail in (("a", b"\x01"), ("b", b"\x02")):
        path = root / f"bomb-{side}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for i in range(members):
                info = zipfile.ZipInfo(f"data/part{i:02d}.bin", (2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as member:
                    for chunk in _zeros(member_size, tail):
                        member.write(chunk)
        paths.append(path)
    return paths[0], paths[1]


def nested_gzip(inner_size: int, tail: bytes, levels: int = 2) -> bytes:
    """``levels`` gzip layers around ``inner_size`` bytes of zeros ending in ``tail``."""
    data = _deflate(_zeros(inner_size, tail), gzip_header=True)
    for _ in range(levels - 1):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    return data


def nested_gzip_pair(root: Path, *, inner_size: int = GIB) -> tuple[Path, Path]:
    """Two triple-gzipped files inflating to ``inner_size`` bytes each (the last byte differs)."""
    a, b = root / "nested-a.gz", root / "nested-b.gz"
    a.write_bytes(nested_gzip(inner_size, b"\x01"))
    b.write_bytes(nested_gzip(inner_size, b"\x02"))
    return a, b


def hardened_elf(root: Path) -> bytes:
    """A small PIE with full RELRO, NX, stack protector and FORTIFY (gcc)."""
    src = root / "hardened.c"
    src.write_text(HARDENED_C)
    out = root / "hardened"
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-fPIE",
            "-pie",
            "-fstack-protector-strong",
            "-D_FORTIFY_SOURCE=2",
            "-Wl,-z,relro,-z,now",
            "-s",
            "-o",
            str(out),
            str(src),
        ],
        check=True,
    )
    return out.read_bytes()


def _stand_in_kernel(root: Path) -> Path:
    path = root / "kernel.bin"
    path.write_bytes(b"\x4d\x5a" + bytes(range(256)) * 64)
    return path


def gzip_elf_eif(root: Path, *, elf_size: int = 500 * 1000 * 1000) -> Path:
    """An EIF whose second ramdisk is a gzip'd cpio with one ``elf_size``-byte "ELF".

    The member is a real hardened ELF padded with zeros to ``elf_size`` bytes (the
    kernel and lief ignore bytes no header points at), so the file audits clean unless
    its size is noticed.
    """
    from builder.eif import write_eif
    from builder.initramfs.newc import EntryKind, type_bits
    from builder.initramfs.writer import NewcStream

    elf = hardened_elf(root)
    boot = root / "boot.cpio"
    with open(boot, "wb") as fh:
        stream = NewcStream(fh)
        init = b"#!/bin/sh\nexec /rootfs/usr/bin/app\n"
        stream.header(
            "init", mode=type_bits(EntryKind.FILE) | 0o755, ino=1, nlink=1, mtime=0, size=len(init)
        )
        stream.data_bytes(init)
        stream.trailer()
    app = root / "app.cpio.gz"
    with open(app, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        stream = NewcStream(gz)  # type: ignore[arg-type]
        for ino, name in enumerate(("rootfs", "rootfs/usr", "rootfs/usr/bin"), 1):
            stream.header(
                name, mode=type_bits(EntryKind.DIRECTORY) | 0o755, ino=ino, nlink=2, mtime=0, size=0
            )
        stream.header(
            "rootfs/usr/bin/app",
            mode=type_bits(EntryKind.FILE) | 0o755,
            ino=9,
            nlink=1,
            mtime=0,
            size=elf_size,
        )
        stream.data(_Padded(elf, elf_size), elf_size, "rootfs/usr/bin/app")
        stream.trailer()
    eif = root / "bomb.eif"
    write_eif(
        eif,
        kernel=_stand_in_kernel(root),
        cmdline="console=ttyS0 reboot=k panic=30 pci=off nomodules",
        ramdisks=[boot, app],
        name="bomb",
        version="1.0",
        build_time="2026-11-23T00:00:00Z",
    )
    return eif


class _Padded(io.RawIOBase):
    """``head`` then zeros, ``size`` bytes in all, without holding them."""

    def __init__(self, head: bytes, size: int) -> None:
        self._head = head
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        view = memoryview(buffer)
        done = 0
        if self._pos < len(self._head):
            part = self._head[self._pos : self._pos + n]
            view[: len(part)] = part
            done = len(part)
        view[done:n] = bytes(n - done)
        self._pos += n
        return n


def have_gcc() -> bool:
    return shutil.which("gcc") is not None


def sizes(*paths: Path) -> str:
    return ", ".join(f"{p.name} {os.path.getsize(p)} B" for p in paths)
