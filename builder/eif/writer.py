"""Writing EIF files exactly as nitro-cli's EifBuilder lays them out.

Sections in the order kernel, cmdline, metadata, ramdisks..., [signature],
back to back.  Inputs are streamed once: copied to a temp file next to the
output while PCR0/1/2 and the sections' CRC are computed; the header (which
holds the CRC and, for a signed image, the signature size) is written last and
the CRC of header and sections is combined with :func:`crc32_combine`.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
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
from builder.eif.pcr import pcr8_from_certificate
from builder.eif.signature import sign_pcr0
from enclave_audit import __version__
from enclave_audit.errors import InvalidInput
from enclave_audit.fsutil import atomic_write, open_input, read_bytes
from enclave_audit.model.measurements import PcrSet
from enclave_audit.progress import NullProgress, ProgressSink

BUILD_TOOL = "enclave-audit"
#: nitro-cli's x86_64 default command line (blobs/x86_64/cmdline, trimmed)
NITRO_DEFAULT_CMDLINE = (
    "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux"
    " i8042.nopnp i8042.dumbkbd random.trust_cpu=on"
)
MAX_CUSTOM_METADATA = 4096


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
    progress: ProgressSink | None = None,
) -> PcrSet:
    """Write an EIF atomically; returns its PCRs (0, 1, 2 and 8 when signed)."""
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
    inputs = [Path(kernel), *map(Path, ramdisks)]
    sizes = {}
    for p in inputs:
        with open_input(p) as fh:
            sizes[p] = os.fstat(fh.fileno()).st_size
    plan: list[tuple[SectionType, int]] = [
        (SectionType.KERNEL, sizes[Path(kernel)]),
        (SectionType.CMDLINE, len(cmd)),
        (SectionType.METADATA, len(meta)),
        *[(SectionType.RAMDISK, sizes[Path(r)]) for r in ramdisks],
    ]
    progress.start(f"writing {Path(out).name}", total=sum(sizes.values()))
    measurer = Measurer(progress)
    try:
        with atomic_write(Path(out)) as fh:
            fh.write(bytes(HEADER_SIZE))  # placeholder, rewritten at the end

            def section(stype: SectionType, size: int) -> None:
                header = pack_section_header(stype, size)
                fh.write(header)
                measurer.feed(header, Role.UNMEASURED)

            section(SectionType.KERNEL, sizes[Path(kernel)])
            with open_input(Path(kernel)) as src:
                measurer.stream(src, sizes[Path(kernel)], Role.BOOT, sink=fh, what="kernel")
            section(SectionType.CMDLINE, len(cmd))
            fh.write(cmd)
            measurer.feed(cmd, Role.BOOT)
            section(SectionType.METADATA, len(meta))
            fh.write(meta)
            measurer.feed(meta, Role.UNMEASURED)
            for number, ramdisk in enumerate(ramdisks):
                section(SectionType.RAMDISK, sizes[Path(ramdisk)])
                with open_input(Path(ramdisk)) as src:
                    measurer.stream(
                        src,
                        sizes[Path(ramdisk)],
                        Role.BOOT if number == 0 else Role.APP,
                        sink=fh,
                        what=f"ramdisk {Path(ramdisk).name}",
                    )
            pcrs = measurer.finish()
            values = dict(pcrs.values)
            if cert_pem is not None and key_pem is not None:
                signature = sign_pcr0(values[0], cert_pem, key_pem)
                section(SectionType.SIGNATURE, len(signature))
                fh.write(signature)
                measurer.feed(signature, Role.UNMEASURED)
                plan.append((SectionType.SIGNATURE, len(signature)))
                values[8] = pcr8_from_certificate(cert_pem)
            offsets: list[int] = []
            position = HEADER_SIZE
            for _stype, size in plan:
                offsets.append(position)
                position += SECTION_HEADER_SIZE + size
            header = EifHeader(
                version=CURRENT_VERSION,
                flags=0,
                default_mem=DEFAULT_MEM,
                default_cpus=DEFAULT_CPUS,
                num_sections=len(plan),
                section_offsets=tuple(offsets),
                section_sizes=tuple(size for _, size in plan),
                crc32=0,
            )
            head = header.pack()[:CRC_OFFSET]
            crc = crc32_combine(zlib.crc32(head), measurer.crc, measurer.crc_length)
            fh.seek(0)
            fh.write(head + crc.to_bytes(4, "big"))
    finally:
        measurer.close()
        progress.done()
    return PcrSet(values=values)
