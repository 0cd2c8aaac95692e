"""Injected changes on THE reference image (Debian rootfs, python3, real kernel): slow.

The reference image's application ramdisk is rewritten with the builder's newc stream,
with one change injected, and reassembled with ``write_eif``; the diff must name the
changed file (and its ELF section) first, with the right cause and PCRs.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.eif import EifReader, write_eif
from builder.initramfs import CpioMember, iter_members
from builder.initramfs.newc import type_bits
from builder.initramfs.writer import NewcStream
from enclave_audit.fsutil import atomic_write
from enclave_audit.model.difference import Cause
from verifier.compare import compare_paths
from verifier.compare.render import headlines

Mutation = Callable[[CpioMember, bytes], tuple[bytes, int]]  # -> (data, mtime)


def _text_offset(data: bytes) -> int | None:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        text = ELFFile(io.BytesIO(data)).get_section_by_name(".text")
    except ELFError:
        return None
    if text is None or text["sh_size"] < 64:
        return None
    return int(text["sh_offset"] + text["sh_size"] // 2)


def _rewrite(
    src: Path, dest: Path, pick: Callable[[CpioMember, bytes], bool], mutate: Mutation
) -> str:
    """Copy a newc archive member by member, changing the first member ``pick`` accepts."""
    changed = ""
    with open(src, "rb") as fh, atomic_write(dest) as out:
        stream = NewcStream(out)
        for m in iter_members(fh):
            data = m.data.read(m.size) if m.data is not None else b""
            mtime = m.mtime
            if not changed and m.is_file and pick(m, data):
                data, mtime = mutate(m, data)
                changed = m.name
            mode = type_bits(m.kind) | m.perm
            stream.header(
                m.name,
                mode=mode,
                ino=m.ino,
                nlink=m.nlink,
                mtime=mtime,
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
    assert changed, "no member to change"
    return changed


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from builder.reference import reference_image

    ref = reference_image()
    work = tmp_path_factory.mktemp("ref-parts")
    return ref.eif, work


def _variant(
    eif: Path, work: Path, name: str, pick: Callable[[CpioMember, bytes], bool], mutate: Mutation
) -> tuple[Path, str]:
    with EifReader.open(eif) as r:
        r.copy_section(r.kernel, work / "kernel")
        parts = []
        for i, section in enumerate(r.ramdisks):
            part = work / f"ramdisk{i}"
            r.copy_section(section, part)
            parts.append(part)
        cmdline = r.cmdline_text()
        meta = r.metadata()
    last = parts[-1]
    changed = _rewrite(last, work / f"{name}.cpio", pick, mutate)
    out = work / f"{name}.eif"
    build = meta.get("BuildMetadata", {})
    write_eif(
        out,
        kernel=work / "kernel",
        cmdline=cmdline,
        ramdisks=[*parts[:-1], work / f"{name}.cpio"],
        name=str(meta.get("ImageName", "enclave")),
        version=str(meta.get("ImageVersion", "")),
        build_time=str(build.get("BuildTime", "1970-01-01T00:00:00Z")),
    )
    return out, changed


@pytest.mark.slow
def test_one_byte_in_an_elf_is_named_first(reference: tuple[Path, Path]) -> None:
    eif, work = reference

    def flip(m: CpioMember, data: bytes) -> tuple[bytes, int]:
        at = _text_offset(data)
        assert at is not None
        return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :], m.mtime

    variant, changed = _variant(
        eif, work, "flip", lambda m, d: d[:4] == b"\x7fELF" and _text_offset(d) is not None, flip
    )
    report = compare_paths(eif, variant)
    assert report.root is not None
    first = headlines(report.root, 1)[0]
    assert changed in first.path and ".text" in first.path, first.path
    assert first.pcrs in ((0, 2), (0, 1)), first.pcrs


@pytest.mark.slow
def test_mtime_on_the_reference_image(reference: tuple[Path, Path]) -> None:
    eif, work = reference
    variant, changed = _variant(
        eif, work, "mtime", lambda m, d: m.name.endswith(".py"), lambda m, d: (d, m.mtime + 3600)
    )
    report = compare_paths(eif, variant)
    assert report.root is not None
    node = report.root.find(changed, "mtime")
    assert node is not None and node.causes[0].cause is Cause.TIMESTAMP


@pytest.mark.slow
def test_real_kernel_version_and_config(reference: tuple[Path, Path]) -> None:
    """The reference bzImage: version string compared, xz payload opened, no IKCONFIG said so."""
    from verifier.compare.kernel import version_string

    eif, work = reference
    with EifReader.open(eif) as r:
        r.copy_section(r.kernel, work / "bzImage")
    data = (work / "bzImage").read_bytes()
    version = version_string(data)
    assert version is not None and "#1" in version
    at = data.index(version.encode())
    patched = bytearray(data)
    hash_at = at + version.index("#1") + 1
    patched[hash_at] = ord("2")
    (work / "bzImage-2").write_bytes(bytes(patched))
    root = compare_paths(work / "bzImage", work / "bzImage-2").root
    assert root is not None and root.kind.value == "kernel"
    field = root.find("version: build number")
    assert field is not None and field.right is not None and field.right.value == "2"
    assert field.causes[0].cause is Cause.BUILD_ENVIRONMENT
    assert any("CONFIG_IKCONFIG" in n for n in root.notes), root.notes
