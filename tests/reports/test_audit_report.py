"""The rebuild report: verdict first, the PCR table across expected and rebuilt, the diff."""

from __future__ import annotations

from enclave_audit.model.difference import Cause, CauseHint, Change, DiffNode, NodeKind, Side
from enclave_audit.model.findings import Check, CheckOutcome, Verdict
from enclave_audit.model.measurements import PcrSet
from reports.audit_report import verify_report
from reports.render import Format, render
from verifier.rebuild import VerifyResult

A, B = b"\xaa" * 48, b"\xbb" * 48


def _result(verdict: Verdict, rebuilt: PcrSet, diff: DiffNode | None) -> VerifyResult:
    return VerifyResult(
        manifest="build-manifest.json",
        name="enclave",
        version="1.0",
        verdict=verdict,
        checks=[Check(name="PCR2", outcome=CheckOutcome.FAIL if diff else CheckOutcome.PASS)],
        expected_from="manifest",
        expected=PcrSet(values={0: A, 1: A, 2: A}),
        rebuilt=rebuilt,
        diff=diff,
    )


def test_failed_rebuild_names_the_file_and_cause_in_the_summary():
    leaf = DiffNode(
        path=("enclave.eif", "ramdisk[1]", "rootfs/app/main.py"),
        kind=NodeKind.MEMBER,
        change=Change.METADATA,
        left=Side.of(value="mtime 1700000000"),
        right=Side.of(value="mtime 1700000999"),
        summary="mtime differs",
        causes=(CauseHint(cause=Cause.TIMESTAMP, evidence="mtime is the build time"),),
        pcrs=(0, 2),
    )
    root = DiffNode(
        path=("enclave.eif",),
        kind=NodeKind.IMAGE,
        change=Change.CONTENT,
        left=None,
        right=None,
        summary="PCR0, PCR2 differ",
        pcrs=(0, 2),
        children=(leaf,),
    )
    report = verify_report(_result(Verdict.FAIL, PcrSet(values={0: B, 1: A, 2: B}), root))
    assert report.verdict is Verdict.FAIL
    assert "PCR0, PCR2 differ" in report.summary and "rootfs/app/main.py" in report.summary
    assert report.pcr_mismatches() == [0, 2]
    html = render(report, Format.HTML)
    assert html.index('id="verdict"') < html.index("pcr-table") < html.index("Differences")
    assert "timestamp" in render(report, Format.MARKDOWN)


def test_passing_rebuild():
    report = verify_report(_result(Verdict.PASS, PcrSet(values={0: A, 1: A, 2: A}), None))
    assert report.verdict is Verdict.PASS and report.pcr_mismatches() == []
    assert "reproduced" in report.summary
