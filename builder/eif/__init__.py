"""The Enclave Image File: layout, reading, writing, signing and measurements."""

from builder.eif.describe import EifDescription, describe_eif, section_pcrs
from builder.eif.format import EifHeader, EifSection, SectionType
from builder.eif.pcr import (
    certificate_der,
    extend_string,
    measure_parts,
    pcr8_from_certificate,
    tpm_extend,
)
from builder.eif.reader import EifReader
from builder.eif.signature import SignatureInfo, parse_signature_section, sign_pcr0
from builder.eif.writer import (
    NITRO_DEFAULT_CMDLINE,
    WrittenEif,
    metadata_json,
    write_eif,
)

__all__ = [
    "NITRO_DEFAULT_CMDLINE",
    "EifDescription",
    "EifHeader",
    "EifReader",
    "EifSection",
    "SectionType",
    "SignatureInfo",
    "WrittenEif",
    "certificate_der",
    "describe_eif",
    "extend_string",
    "measure_parts",
    "metadata_json",
    "parse_signature_section",
    "pcr8_from_certificate",
    "section_pcrs",
    "sign_pcr0",
    "tpm_extend",
    "write_eif",
]
