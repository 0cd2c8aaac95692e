"""Writing EIF files exactly as nitro-cli's EifBuilder lays them out.

Sections in the order kernel, cmdline, metadata, ramdisks..., [signature],
back to back.  The header (which holds the CRC of everything after it) is
written first: the CRC comes from CRCs recorded with the inputs or from a
quick CRC pass, joined with :func:`crc32_combine`.  The inputs are then copied
once to a temp file next to the output while PCR0/1/2, the CRC (checked
against the one in the header) and the output's own SHA-256/SHA-384 are
computed, so the file is never read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.eif.format import (
    CRC_OFFSET,
    CURRENT_VERSION,
    DEFAULT_CPUS,
    DEFAULT_MEM,
    HEADER_SIZE,
    MAX_SECTIONS,
    SECTION_HEADER_SIZE,
    EifHeader,
    SectionType,
    pack_section_header,
)
from builder.eif.measure import Measurer, Role, crc32_combine
from builder.eif.pcr import pcr8_from_certificate, tpm_extend
from builder.eif.signature import sign_pcr0
from enclave_audit import __version__
from enclave_audit.errors import DigestMismatch, EifTruncated, InvalidInput
from enclave_audit.fsutil import EarlyWriteback, atomic_write, open_input, read_bytes
from enclave_audit.model.measurements import PcrSet
from enclave_audit.progress import NullProgress, ProgressSink

BUILD_TOOL = "enclave-audit"
#: nitro-cli's x86_64 default command line (blobs/x86_64/cmdline, trimmed)
NITRO_DEFAULT_CMDLINE = (
    "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux"
    " i8042.nopnp i8042.dumbkbd random.trust_cpu=on"
)
MAX_CUSTOM_METADATA = 4096
PREPASS_BUFFER = 1 << 20


def kernel_config_info(config: Path | None) -> tuple[str, str]:
    """(OperatingSystem, KernelVersion) from a kernel .config's third line, as nitro-cli."""
    if config is None:
        return "Linux", "unknown"
    lines = read_bytes(config, limit=8 << 20).decode("utf-8", "replace").splitlines()
    if len(lines) < 3:
        return "Linux", "unknown"
    words = [w for w in _split_config_line(lines[2]) if w]
    if len(words) < 3:
        return "Linux", "unknown"
    return words[1], words[3] if len(words) > 3 else words[2]


def _split_config_line(line: str) -> list[str]:
    out = [""]
    for ch in line:
        if ch in " /-":
            out.append("")
        else:
            out[-1] += ch
    return out


def metadata_json(
    *,
    name: str,
    version: str,
    build_time: str,
    operating_system: str,
    kernel_version: str,
    custom_metadata: object = None,
    docker_info: object = None,
) -> bytes:
    """The metadata section: compact JSON, fixed top-level order, nested keys sorted."""

    def dump(value: object, *, sort: bool) -> str:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort)

    custom = dump(custom_metadata, sort=True)
    if len(custom.encode()) > MAX_CUSTOM_METADATA:
        raise InvalidInput(f"custom metadata is over the {MAX_CUSTOM_METADATA}-byte limit")
    build = {
        "BuildTime": build_time,
        "BuildTool": BUILD_TOOL,
        "BuildToolVersion": __version__,
        "OperatingSystem": operating_system,
        "KernelVersion": kernel_version,
    }
    text = (
        "{"
        f'"ImageName":{dump(name, sort=False)},'
        f'"ImageVersion":{dump(version, sort=False)},'
        f'"BuildMetadata":{dump(build, sort=False)},'
        f'"DockerInfo":{dump(docker_info, sort=True)},'
        f'"CustomMetadata":{custom}'
        "}"
    )
    return text.encode("utf-8")


@dataclass(frozen=True)
class WrittenEif:
    """What writing an EIF measured: its PCRs and the file's own size and digests."""

    pcrs: PcrSet
    size: int
    sha256: str
    sha384: str


def _prepass(path: Path, size: int, update: Callable[[memoryview], object]) -> None:
    """Feed the first ``size`` bytes of an input to ``update`` (the passes before the copy)."""
    with open_input(path) as src:
        buf = bytearray(PREPASS_BUFFER)
        view = memoryview(buf)
        remaining = size
        while remaining:
            got = src.readinto(view[: min(remaining, PREPASS_BUFFER)])  # type: ignore[attr-defined]
            if not got:
                raise EifTruncated(f"{path}: input ended {remaining} bytes early")
            update(view[:got])
            remaining -= got


def _crc_of(path: Path, size: int) -> int:
    """CRC-32 of an input file (for inputs with no recorded CRC)."""
    crc = 0

    def update(chunk: memoryview) -> None:
        nonlocal crc
        crc = zlib.crc32(chunk, crc)

    _prepass(path, size, update)
    return crc


def _pcr0_of(parts: Sequence[bytes | tuple[Path, int]]) -> bytes:
    """PCR0 of the measured parts in order (for signing before the image is written)."""
    h = hashlib.sha384()
    for part in parts:
        if isinstance(part, bytes):
            h.update(part)
        else:
            _prepass(*part, h.update)
    return tpm_extend(h.digest())


def write_eif(
    out: Path,
    *,
    kernel: Path,
    cmdline: str,
    ramdisks: Sequence[Path],
    name: str,
    version: str,
    build_time: str,
    custom_metadata: object = None,
    kernel_config: Path | None = None,
    signing: tuple[Path, Path] | None = None,
    docker_info: object = None,
    known_crc32: Mapping[Path, int] | None = None,
    progress: ProgressSink | None = None,
) -> WrittenEif:
    """Write an EIF atomically, header first, hashing the file as it is written.

    The header holds the CRC of everything after it, so the CRC is worked out
    before the copy: from ``known_crc32`` (path -> CRC-32 recorded when that
    input was written, e.g. by a cache) or by a quick CRC pass over the input.
    A signed image also needs PCR0 before the copy (the signature section is
    inside the CRC), so its measured parts are hashed once beforehand.  The copy
    pass recomputes CRC and PCRs and refuses the image if either moved (an
    input changed, or a recorded CRC was wrong): nothing is left behind.
    """
    progress = progress or NullProgress()
    if not ramdisks:
        raise InvalidInput("an EIF needs at least one ramdisk")
    if "\x00" in cmdline:
        raise InvalidInput("kernel command line contains a NUL byte")
    sections_count = 3 + len(ramdisks) + (1 if signing else 0)
    if sections_count > MAX_SECTIONS:
        raise InvalidInput(f"too many ramdisks: an EIF holds at most {MAX_SECTIONS} sections")
    cert_pem = key_pem = None
    if signing is not None:
        cert_pem = read_bytes(signing[0], limit=64 << 10)
        key_pem = read_bytes(signing[1], limit=64 << 10)
    operating_system, kernel_version = kernel_config_info(kernel_config)
    cmd = cmdline.encode("utf-8")
    meta = metadata_json(
        name=name,
        version=version,
        build_time=build_time,
        operating_system=operating_system,
        kernel_version=kernel_version,
        custom_metadata=custom_metadata,
        docker_info=docker_info,
    )
    kernel = Path(kernel)
    ramdisks = [Path(r) for r in ramdisks]
    sizes: dict[Path, int] = {}
    for p in (kernel, *ramdisks):
        with open_input(p) as fh:
            sizes[p] = os.fstat(fh.fileno()).st_size
    # the sections in nitro-cli's order: files as paths, small ones as bytes
    parts: list[tuple[SectionType, Path | bytes, Role]] = [
        (SectionType.KERNEL, kernel, Role.BOOT),
        (SectionType.CMDLINE, cmd, Role.BOOT),
        (SectionType.METADATA, meta, Role.UNMEASURED),
        *(
            (SectionType.RAMDISK, r, Role.BOOT if number == 0 else Role.APP)
            for number, r in enumerate(ramdisks)
        ),
    ]
    pcr0_signed: bytes | None = None
    if cert_pem is not None and key_pem is not None:
        pcr0_signed = _pcr0_of(
            [
                part if isinstance(part, bytes) else (part, sizes[part])
                for _, part, role in parts
                if role is not Role.UNMEASURED
            ]
        )
        signature = sign_pcr0(pcr0_signed, cert_pem, key_pem)
        parts.append((SectionType.SIGNATURE, signature, Role.UNMEASURED))

    def size_of(part: Path | bytes) -> int:
        return len(part) if isinstance(part, bytes) else sizes[part]

    offsets: list[int] = []
    position = HEADER_SIZE
    for _stype, part, _role in parts:
        offsets.append(position)
        position += SECTION_HEADER_SIZE + size_of(part)
    head = EifHeader(
        version=CURRENT_VERSION,
        flags=0,
        default_mem=DEFAULT_MEM,
        default_cpus=DEFAULT_CPUS,
        num_sections=len(parts),
        section_offsets=tuple(offsets),
        section_sizes=tuple(size_of(part) for _, part, _ in parts),
        crc32=0,
    ).pack()[:CRC_OFFSET]
    known = dict(known_crc32 or {})
    crc = zlib.crc32(head)
    for stype, part, _role in parts:
        crc = zlib.crc32(pack_section_header(stype, size_of(part)), crc)
        if isinstance(part, bytes):
            crc = zlib.crc32(part, crc)
        else:
            part_crc = known[part] if part in known else _crc_of(part, sizes[part])
            crc = crc32_combine(crc, part_crc, sizes[part])

    progress.start(f"writing {Path(out).name}", total=sum(sizes.values()))
    measurer = Measurer(progress, output_digests=True)
    try:
        with atomic_write(Path(out)) as raw:
            sink = EarlyWriteback(raw)  # the final fsync finds most pages already written

            def emit(data: bytes, role: Role, *, crc: bool = True) -> None:
                sink.write(data)
                measurer.feed(data, role, crc=crc)

            emit(head, Role.UNMEASURED)
            emit(crc.to_bytes(4, "big"), Role.UNMEASURED, crc=False)
            for stype, part, role in parts:
                emit(pack_section_header(stype, size_of(part)), Role.UNMEASURED)
                if isinstance(part, bytes):
                    emit(part, role)
                    continue
                with open_input(part) as src:
                    measurer.stream(src, sizes[part], role, sink=sink, what=str(part))
            pcrs = measurer.finish()
            if measurer.crc != crc:
                changed = [p for p in known if p in sizes]
                raise DigestMismatch(
                    f"{Path(out).name}: the inputs' CRC-32 changed while the image was written"
                    f" ({crc:08x} before, {measurer.crc:08x} during the copy); an input was"
                    " modified during the build"
                    + (
                        f" or a recorded CRC is wrong ({', '.join(map(str, changed))})"
                        if changed
                        else ""
                    )
                )
            values = dict(pcrs.values)
            if pcr0_signed is not None and cert_pem is not None:
                if values[0] != pcr0_signed:
                    raise DigestMismatch(
                        f"{Path(out).name}: PCR0 changed between signing and writing"
                        " (an input was modified during the build)"
                    )
                values[8] = pcr8_from_certificate(cert_pem)
            digests = measurer.output_digests()
    finally:
        measurer.close()
        progress.done()
    return WrittenEif(
        pcrs=PcrSet(values=values),
        size=digests.size,
        sha256=digests.sha256.hex(),
        sha384=digests.sha384.hex(),
    )
