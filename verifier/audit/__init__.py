"""Binary audit of an enclave image: ELF hardening, permissions, tools, secrets, cmdline, SBOM.

::

    from verifier.audit import audit_image, load_policy, write_sbom
    report = audit_image(Path("enclave.eif"), load_policy(None))
    write_sbom(report, SbomFormat.SPDX, Path("sbom.spdx.json"))
"""

from __future__ import annotations

from pathlib import Path

from enclave_audit.fsutil import write_json_atomic
from verifier.audit.policy import DEFAULT_POLICY, AuditPolicy, load_policy
from verifier.audit.report import ImageAuditReport
from verifier.audit.scan import audit_image, cmdline_findings
from verifier.sbom import SbomFormat, cyclonedx_document, spdx_document

#: when the image carries no build time, SBOMs use this fixed time (deterministic output)
EPOCH_TIME = "1970-01-01T00:00:00Z"


def write_sbom(report: ImageAuditReport, fmt: SbomFormat, out: Path) -> None:
    """Write the image's SBOM (SPDX 2.3 or CycloneDX 1.5 JSON) atomically."""
    name = Path(report.image).name
    created = report.build_time or EPOCH_TIME
    match fmt:
        case SbomFormat.SPDX:
            doc = spdx_document(
                report.packages, image_name=name, image_sha256=report.image_sha256, created=created
            )
        case SbomFormat.CYCLONEDX:
            doc = cyclonedx_document(
                report.packages, image_name=name, image_sha256=report.image_sha256, created=created
            )
    write_json_atomic(out, doc)


__all__ = [
    "DEFAULT_POLICY",
    "AuditPolicy",
    "ImageAuditReport",
    "SbomFormat",
    "audit_image",
    "cmdline_findings",
    "load_policy",
    "write_sbom",
]
