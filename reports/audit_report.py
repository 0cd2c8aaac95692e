"""Audit reports of an independent rebuild (``verify``), optionally with the binary audit."""

from __future__ import annotations

from datetime import UTC, datetime

from enclave_audit.model.manifest import BuildManifest
from enclave_audit.model.measurements import PcrSet
from enclave_audit.model.report import AuditReport, PcrRow, ReportInput, SbomSummary
from verifier.audit.report import ImageAuditReport
from verifier.rebuild import VerifyResult
from verifier.sbom import Ecosystem

NOTABLE_PACKAGES = ("python3", "libc6", "openssl", "libssl3", "cryptography", "numpy", "cbor2")


def _row(source: str, role: str, pcrs: PcrSet) -> PcrRow:
    return PcrRow.model_validate(
        {"source": source, "role": role, "pcrs": {str(i): pcrs.hex(i) for i in pcrs.indices()}}
    )


def _summary(result: VerifyResult) -> str:
    if result.verdict.value == "PASS":
        return (
            f"{result.name} {result.version}: the independent rebuild reproduced PCR0/1/2"
            f" ({result.expected_from})"
        )
    differing = result.expected.differences(result.rebuilt) if result.rebuilt is not None else []
    failed = [c.name for c in result.checks if c.outcome.value == "fail"]
    head = f"{result.name} {result.version}: {result.verdict.value}"
    if differing:
        head += ": PCR" + ", PCR".join(map(str, differing)) + " differ"
    if result.diff is not None:
        first = next(iter(result.diff.leaves()), None)
        if first is not None:
            head += f"; first difference: {' / '.join(first.path[1:]) or first.summary}"
    elif failed:
        head += f"; failed: {', '.join(failed)}"
    return head


def verify_report(
    result: VerifyResult,
    *,
    manifest: BuildManifest | None = None,
    audit: ImageAuditReport | None = None,
    generated_at: datetime | None = None,
) -> AuditReport:
    """One report for the rebuild: verdict first, PCR table, differences, findings, pins."""
    rows = [_row(f"expected ({result.expected_from})", "expected", result.expected)]
    if result.rebuilt is not None:
        rows.append(_row("independent rebuild", "rebuild", result.rebuilt))
    inputs = (
        [
            ReportInput(name=i.name, version=i.version, origin=i.origin, sha256=i.sha256)
            for i in manifest.inputs
        ]
        if manifest is not None
        else []
    )
    digests = {}
    if result.rebuilt_eif_sha256:
        digests["sha256 (rebuild)"] = result.rebuilt_eif_sha256
    if result.expected_eif_sha256:
        digests["sha256 (expected)"] = result.expected_eif_sha256
    sbom = None
    findings = []
    notes = list(result.notes)
    if audit is not None:
        findings = list(audit.findings)
        debs = [p for p in audit.packages if p.ecosystem is Ecosystem.DEBIAN]
        pys = [p for p in audit.packages if p.ecosystem is Ecosystem.PYPI]
        sbom = SbomSummary(
            format="packages found in the image",
            debian_packages=len(debs),
            python_distributions=len(pys),
            notable=[f"{p.name} {p.version}" for p in audit.packages if p.name in NOTABLE_PACKAGES],
        )
        notes.append(f"binary audit under {audit.policy}: {audit.verdict.value}")
    when = generated_at or datetime.now(UTC)
    return AuditReport(
        title=f"Independent rebuild of {result.name} {result.version}",
        generated_at=when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        verdict=result.verdict,
        summary=_summary(result),
        subject_name=result.rebuilt_eif or result.name,
        subject_digests=digests,
        inputs=inputs,
        pcr_table=rows,
        differences=result.diff,
        findings=findings,
        sbom=sbom,
        attestation_checks=list(result.checks),
        notes=notes,
    )
