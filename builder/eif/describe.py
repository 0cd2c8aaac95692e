"""``describe-eif``: measure an EIF in one pass and report it as nitro-cli does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from builder.eif.format import CRC_OFFSET, HEADER_SIZE, SECTION_HEADER_SIZE, SectionType
from builder.eif.measure import Measurer, Role
from builder.eif.pcr import pcr8_from_certificate
from builder.eif.reader import EifReader
from builder.eif.signature import SignatureInfo, parse_signature_section
from enclave_audit.errors import EifSignatureInvalid
from enclave_audit.model.measurements import PcrSet
from enclave_audit.progress import NullProgress, ProgressSink


class SectionSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    type: str
    offset: int
    size: int
    pcrs: list[int]


class EifDescription(BaseModel):
    """Everything ``describe-eif`` reports, plus the section table."""

    model_config = ConfigDict(frozen=True)

    path: str
    version: int
    arch: str
    file_size: int
    pcrs: PcrSet
    crc_ok: bool
    stored_crc: int
    computed_crc: int
    is_signed: bool
    signature_ok: bool | None
    signature_detail: str | None
    signing_certificate: dict[str, Any] | None
    metadata: dict[str, Any]
    cmdline: str
    sections: list[SectionSummary]

    def to_nitro(self) -> dict[str, Any]:
        """The JSON object ``nitro-cli describe-eif`` prints, keys in its order."""
        out: dict[str, Any] = {
            "EifVersion": self.version,
            "Measurements": self.pcrs.to_nitro(),
            "IsSigned": self.is_signed,
        }
        if self.is_signed:
            out["SigningCertificate"] = self.signing_certificate
        out["CheckCRC"] = self.crc_ok
        if self.is_signed:
            out["SignatureCheck"] = bool(self.signature_ok)
        out["ImageName"] = self.metadata.get("ImageName")
        out["ImageVersion"] = self.metadata.get("ImageVersion")
        build = self.metadata.get("BuildMetadata")
        meta: dict[str, Any] = dict(build) if isinstance(build, dict) else {}
        meta["DockerInfo"] = self.metadata.get("DockerInfo")
        custom = self.metadata.get("CustomMetadata")
        if isinstance(custom, dict):
            meta.update(custom)
        out["Metadata"] = meta
        return out


def _pcrs_of(section_type: SectionType, ramdisk_number: int) -> list[int]:
    if section_type in (SectionType.KERNEL, SectionType.CMDLINE):
        return [0, 1]
    if section_type is SectionType.RAMDISK:
        return [0, 1] if ramdisk_number == 0 else [0, 2]
    return []


def section_pcrs(reader: EifReader) -> dict[int, list[int]]:
    """Section index -> the PCRs its data feeds."""
    out: dict[int, list[int]] = {}
    ramdisk_number = 0
    for s in reader.sections:
        out[s.index] = _pcrs_of(s.type, ramdisk_number)
        if s.type is SectionType.RAMDISK:
            ramdisk_number += 1
    return out


def describe_eif(path: Path, progress: ProgressSink | None = None) -> EifDescription:
    """Validate, measure and check an EIF, reading it once."""
    progress = progress or NullProgress()
    with EifReader.open(path) as reader:
        progress.start(f"measuring {Path(path).name}", total=reader.file_size)
        measurer = Measurer(progress)
        fh = reader.handle
        signature_bytes: bytes | None = None
        try:
            fh.seek(0)
            head = fh.read(HEADER_SIZE)
            measurer.feed(head[:CRC_OFFSET], Role.UNMEASURED)
            progress.advance(HEADER_SIZE)
            ramdisk_number = 0
            for s in reader.sections:
                fh.seek(s.header_offset)
                measurer.feed(fh.read(SECTION_HEADER_SIZE), Role.UNMEASURED)
                if s.type in (SectionType.KERNEL, SectionType.CMDLINE):
                    role = Role.BOOT
                elif s.type is SectionType.RAMDISK:
                    role = Role.BOOT if ramdisk_number == 0 else Role.APP
                    ramdisk_number += 1
                else:
                    role = Role.UNMEASURED
                if s.type is SectionType.SIGNATURE:
                    signature_bytes = fh.read(s.size)
                    measurer.feed(signature_bytes, role)
                else:
                    measurer.stream(fh, s.size, role, what=f"section {s.index}")
            pcrs = measurer.finish()
        finally:
            measurer.close()
            progress.done()
        computed_crc = measurer.crc
        pcr_values = dict(pcrs.values)
        signature: SignatureInfo | None = None
        signature_detail: str | None = None
        signature_ok: bool | None = None
        if signature_bytes is not None:
            try:
                signature = parse_signature_section(signature_bytes)
            except EifSignatureInvalid as exc:
                signature_detail = exc.message
                signature_ok = False
            else:
                pcr_values[8] = pcr8_from_certificate(signature.certificate_pem)
                signature_ok = signature.covers(pcr_values[0])
                if not signature.cose_valid:
                    signature_detail = signature.detail
                elif signature.signed_pcr0 is None:
                    signature_detail = "signed payload is not a PcrInfo for PCR0"
                elif signature.signed_pcr0 != pcr_values[0]:
                    signature_detail = "signature covers a different PCR0 than this image's"
                else:
                    signature_detail = "signature covers this image's PCR0"
        pcr_map = section_pcrs(reader)
        return EifDescription(
            path=str(path),
            version=reader.header.version,
            arch=reader.header.arch,
            file_size=reader.file_size,
            pcrs=PcrSet(values=pcr_values),
            crc_ok=computed_crc == reader.header.crc32,
            stored_crc=reader.header.crc32,
            computed_crc=computed_crc,
            is_signed=signature_bytes is not None,
            signature_ok=signature_ok,
            signature_detail=signature_detail,
            signing_certificate=signature.describe_certificate() if signature else None,
            metadata=reader.metadata(),
            cmdline=reader.cmdline_text(),
            sections=[
                SectionSummary(
                    index=s.index,
                    type=s.type.label,
                    offset=s.header_offset,
                    size=s.size,
                    pcrs=pcr_map[s.index],
                )
                for s in reader.sections
            ],
        )
