"""Reading EIF files: strict structural validation, streamed section access.

Nothing here loads a whole image: sections are read in bounded chunks, and only
the small ones (cmdline, metadata, signature) can be read whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from builder.eif.format import (
    HEADER_SIZE,
    MAGIC,
    MAX_SECTIONS,
    MAX_SIGNATURE_SIZE,
    MAX_SMALL_SECTION,
    SECTION_HEADER_SIZE,
    SUPPORTED_VERSIONS,
    EifHeader,
    EifSection,
    SectionType,
    unpack_section_header,
)
from enclave_audit.errors import (
    EifBadMagic,
    EifError,
    EifSectionOverrun,
    EifSizeMismatch,
    EifTruncated,
    EifUnknownSection,
    EifUnsupportedVersion,
    InvalidInput,
)
from enclave_audit.fsutil import CHUNK, atomic_write, open_input
from enclave_runtime import strictjson


class EifReader:
    """An opened, structurally validated EIF.  Use :meth:`open` as a context manager."""

    def __init__(self, path: Path, fh: IO[bytes]) -> None:
        self.path = Path(path)
        self._fh = fh
        self.file_size = os.fstat(fh.fileno()).st_size
        self.header = self._read_header()
        self.sections = self._read_sections()
        self._check_composition()

    @classmethod
    def open(cls, path: Path) -> EifReader:
        fh = open_input(Path(path))
        try:
            return cls(Path(path), fh)
        except BaseException:
            fh.close()
            raise

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> EifReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- validation ----------------------------------------------------------

    def _read_header(self) -> EifHeader:
        name = self.path.name
        if self.file_size < 4:
            raise EifTruncated(f"{name}: {self.file_size} bytes, too short to be an EIF")
        self._fh.seek(0)
        raw = self._fh.read(HEADER_SIZE)
        if raw[:4] != MAGIC:
            raise EifBadMagic(
                f"{name}: wrong magic {raw[:4].hex()} (an EIF starts with '.eif')",
                hint=_not_an_eif_hint(raw),
            )
        if len(raw) < HEADER_SIZE:
            raise EifTruncated(
                f"{name}: {self.file_size} bytes, shorter than the {HEADER_SIZE}-byte EIF header"
            )
        header = EifHeader.unpack(raw)
        if header.version not in SUPPORTED_VERSIONS:
            raise EifUnsupportedVersion(
                f"{name}: EIF version {header.version} is not supported (2, 3 or 4)"
            )
        if not 1 <= header.num_sections <= MAX_SECTIONS:
            raise EifError(f"{name}: header declares {header.num_sections} sections (1..32)")
        count = header.num_sections
        if any(header.section_offsets[count:]) or any(header.section_sizes[count:]):
            raise EifSizeMismatch(
                f"{name}: header has non-zero offsets or sizes beyond its {count} sections"
            )
        return header

    def _read_sections(self) -> list[EifSection]:
        name = self.path.name
        h = self.header
        count = h.num_sections
        # 1. the header's tables alone: contiguous, in order, inside the file
        expected = HEADER_SIZE
        for i in range(count):
            offset, size = h.section_offsets[i], h.section_sizes[i]
            if offset != expected:
                if offset < expected:
                    raise EifSectionOverrun(
                        f"{name}: section {i - 1} ({h.section_sizes[i - 1]} bytes at offset"
                        f" {h.section_offsets[i - 1]}) runs into section {i} at offset {offset}"
                    )
                raise EifSizeMismatch(
                    f"{name}: section {i} at offset {offset}, expected {expected}"
                    " (sections must be contiguous)"
                )
            expected = offset + SECTION_HEADER_SIZE + size
        if self.file_size < expected:
            last = count - 1
            if h.section_sizes[last] > self.file_size:
                # only the last section reaches past the end, by more than the whole file
                raise EifSectionOverrun(
                    f"{name}: section {last} declares {h.section_sizes[last]} bytes, more than"
                    f" the whole file ({self.file_size} bytes)"
                )
            raise EifTruncated(
                f"{name}: file is {self.file_size} bytes but its sections end at {expected}"
                " (truncated)"
            )
        if self.file_size > expected:
            raise EifSectionOverrun(
                f"{name}: {self.file_size - expected} bytes after the last section"
            )
        # 2. each section header agrees with the table and has a known type
        sections: list[EifSection] = []
        for i in range(count):
            offset = h.section_offsets[i]
            self._fh.seek(offset)
            raw = self._fh.read(SECTION_HEADER_SIZE)
            if len(raw) != SECTION_HEADER_SIZE:
                raise EifTruncated(f"{name}: section {i} header cut off at offset {offset}")
            stype, _flags, size = unpack_section_header(raw)
            try:
                section_type = SectionType(stype)
            except ValueError:
                raise EifUnknownSection(
                    f"{name}: section {i} has unknown type {stype} (valid: 1-5)"
                ) from None
            if size != h.section_sizes[i]:
                raise EifSizeMismatch(
                    f"{name}: section {i} ({section_type.label}) header says {size} bytes,"
                    f" the EIF header says {h.section_sizes[i]}"
                )
            sections.append(EifSection(i, section_type, offset, size))
        return sections

    def _check_composition(self) -> None:
        name = self.path.name
        counts = dict.fromkeys(SectionType, 0)
        for s in self.sections:
            counts[s.type] += 1
        if counts[SectionType.KERNEL] != 1:
            raise EifError(f"{name}: {counts[SectionType.KERNEL]} kernel sections, expected 1")
        if counts[SectionType.CMDLINE] != 1:
            raise EifError(f"{name}: {counts[SectionType.CMDLINE]} cmdline sections, expected 1")
        if counts[SectionType.RAMDISK] < 1:
            raise EifError(f"{name}: no ramdisk section")
        if counts[SectionType.SIGNATURE] > 1:
            raise EifError(f"{name}: more than one signature section")
        if counts[SectionType.METADATA] > 1:
            raise EifError(f"{name}: more than one metadata section")
        if self.header.version >= 4 and counts[SectionType.METADATA] != 1:
            raise EifError(f"{name}: EIF v4 requires a metadata section")
        for s in self.sections:
            if s.type in (SectionType.CMDLINE, SectionType.METADATA) and s.size > MAX_SMALL_SECTION:
                raise EifError(f"{name}: {s.type.label} section of {s.size} bytes is implausible")
            if s.type is SectionType.SIGNATURE and s.size > MAX_SIGNATURE_SIZE:
                raise EifError(
                    f"{name}: signature section of {s.size} bytes exceeds {MAX_SIGNATURE_SIZE}"
                )
        kernel_index = next(s.index for s in self.sections if s.type is SectionType.KERNEL)
        first_ramdisk = next(s.index for s in self.sections if s.type is SectionType.RAMDISK)
        if first_ramdisk < kernel_index:
            raise EifError(f"{name}: a ramdisk comes before the kernel")

    # --- access ----------------------------------------------------------------

    def _one(self, section_type: SectionType) -> EifSection:
        return next(s for s in self.sections if s.type is section_type)

    @property
    def kernel(self) -> EifSection:
        return self._one(SectionType.KERNEL)

    @property
    def cmdline(self) -> EifSection:
        return self._one(SectionType.CMDLINE)

    @property
    def ramdisks(self) -> list[EifSection]:
        return [s for s in self.sections if s.type is SectionType.RAMDISK]

    @property
    def metadata_section(self) -> EifSection | None:
        return next((s for s in self.sections if s.type is SectionType.METADATA), None)

    @property
    def signature(self) -> EifSection | None:
        return next((s for s in self.sections if s.type is SectionType.SIGNATURE), None)

    @property
    def handle(self) -> IO[bytes]:
        return self._fh

    def read(self, section: EifSection, *, limit: int = MAX_SMALL_SECTION) -> bytes:
        """A small section's bytes (cmdline, metadata, signature, small ramdisks)."""
        if section.size > limit:
            raise InvalidInput(
                f"{self.path.name}: section {section.index} is {section.size} bytes;"
                " stream it with iter_chunks()"
            )
        self._fh.seek(section.data_offset)
        data = self._fh.read(section.size)
        if len(data) != section.size:
            raise EifTruncated(f"{self.path.name}: section {section.index} cut off")
        return data

    def iter_chunks(self, section: EifSection, chunk: int = CHUNK) -> Iterator[bytes]:
        """Stream a section's data in bounded chunks."""
        remaining = section.size
        position = section.data_offset
        while remaining:
            self._fh.seek(position)
            data = self._fh.read(min(chunk, remaining))
            if not data:
                raise EifTruncated(f"{self.path.name}: section {section.index} cut off")
            yield data
            remaining -= len(data)
            position += len(data)

    def section_stream(self, section: EifSection) -> IO[bytes]:
        """A file object positioned at the section's data (read at most ``section.size``)."""
        self._fh.seek(section.data_offset)
        return self._fh

    def copy_section(self, section: EifSection, dest: Path) -> None:
        """Write a section's data to ``dest`` atomically."""
        with atomic_write(dest) as out:
            for chunk in self.iter_chunks(section):
                out.write(chunk)

    def cmdline_text(self) -> str:
        raw = self.read(self.cmdline)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EifError(f"{self.path.name}: cmdline is not UTF-8") from None

    def metadata(self) -> dict[str, Any]:
        section = self.metadata_section
        if section is None:
            return {}
        raw = self.read(section)
        return strictjson.loads_object(
            raw, what=f"{self.path.name}: metadata section", error=EifError
        )


def _not_an_eif_hint(head: bytes) -> str | None:
    """What the file looks like instead, when that is recognisable (a ramdisk, a kernel)."""
    if head[:2] == b"\x1f\x8b":
        what = "a gzip file (a compressed ramdisk?)"
    elif head[:6] in (b"070701", b"070702"):
        what = "a cpio archive (a ramdisk)"
    elif head[:4] == b"\x7fELF":
        what = "an ELF file (a kernel or a binary?)"
    elif len(head) > 0x206 and head[0x202:0x206] == b"HdrS":
        what = "a Linux bzImage kernel"
    elif head.lstrip()[:1] == b"{":
        what = "JSON"
    else:
        return None
    return (
        f"this is {what}, not an EIF; to compare ramdisks or files use 'enclave-audit diff',"
        " to build an EIF from a kernel and ramdisks 'enclave-audit eif assemble'"
    )
