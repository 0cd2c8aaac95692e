"""Report rendering: escaping, read-back, and a real headless Chromium check with a screenshot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chromium import open_page, pixel_at, screenshot
from conftest import assert_one_line_error, run_cli

from enclave_audit.model.difference import Cause, CauseHint, Change, DiffNode, NodeKind, Side
from enclave_audit.model.findings import Check, CheckOutcome, Finding, Severity, Verdict
from enclave_audit.model.report import AuditReport, GateSection, PcrRow, SignedStatementEntry
from reports.render import Format, render

PCR_A = "ab" * 48
PCR_B = "cd" * 48
EVIL = '<script>alert("x")</script>|`'


def sample_report(verdict: Verdict = Verdict.FAIL) -> AuditReport:
    leaf = DiffNode(
        path=("enclave.eif", "ramdisk[1]", "rootfs/usr/bin/server", ".text", "main"),
        kind=NodeKind.SYMBOL,
        change=Change.CONTENT,
        left=Side.of(value="e8 00 00"),
        right=Side.of(value="e8 00 01"),
        summary="1 byte differs in main",
        causes=(CauseHint(cause=Cause.UNKNOWN, evidence="code change"),),
        pcrs=(0, 2),
    )
    member = DiffNode(
        path=("enclave.eif", "ramdisk[1]", "rootfs/usr/bin/server"),
        kind=NodeKind.MEMBER,
        change=Change.CONTENT,
        left=Side.of(digest="sha256:" + "1" * 64, size=100),
        right=Side.of(digest="sha256:" + "2" * 64, size=100),
        summary=f"file content differs {EVIL}",
        pcrs=(0, 2),
        children=(leaf,),
    )
    root = DiffNode(
        path=("enclave.eif",),
        kind=NodeKind.IMAGE,
        change=Change.CONTENT,
        left=None,
        right=None,
        summary="PCR0 and PCR2 differ",
        pcrs=(0, 2),
        children=(member,),
    )
    return AuditReport(
        title="Independent rebuild of enclave.eif",
        generated_at="2026-11-23T12:00:00Z",
        verdict=verdict,
        summary=f"PCR2 differs: rootfs/usr/bin/server .text {EVIL}",
        subject_name="enclave.eif",
        subject_digests={"sha256": "3" * 64},
        pcr_table=[
            PcrRow(source="builder", role="builder", pcrs={"0": PCR_A, "1": PCR_A, "2": PCR_A}),
            PcrRow(
                source="rebuild (alice)", role="rebuild", pcrs={"0": PCR_B, "1": PCR_A, "2": PCR_B}
            ),
        ],
        differences=root,
        findings=[
            Finding(rule="elf.no-pie", severity=Severity.HIGH, path="/usr/bin/x", message=EVIL)
        ],
        attestations=[
            SignedStatementEntry(
                kind="vsa",
                source="alice.json",
                signer="alice",
                subject="s",
                verdict="PASS",
                accepted=True,
            )
        ],
        attestation_checks=[Check(name="chain", outcome=CheckOutcome.PASS, detail="ok")],
        policy_diff='--- a\n+++ b\n+ "kms:RecipientAttestation:ImageSha384"',
        gate=GateSection(
            decision="refused",
            reason="only 1 of 2",
            threshold=2,
            agreeing=["alice"],
            dissenting=[],
            rejected=["bob.json: bad signature"],
        ),
        notes=["note"],
    )


def test_html_is_escaped_self_contained_and_complete():
    html = render(sample_report(), Format.HTML)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "http://" not in html and "https://" not in html  # no external assets
    assert 'id="verdict"' in html and 'id="pcr-table"' in html
    assert "rootfs/usr/bin/server" in html and "<details" in html
    assert html.index("PCR0") < html.index("Differences")


def test_markdown_escapes_table_breakers():
    md = render(sample_report(), Format.MARKDOWN)
    assert "**FAIL**" in md
    assert "<script>" not in md and "\\<script\\>" in md
    assert "| PCR0 ⚠ |" in md and "| PCR1 |" in md


def test_json_round_trip_and_cli_rerender(tmp_path: Path):
    report = sample_report()
    saved = tmp_path / "report.json"
    saved.write_text(render(report, Format.JSON))
    assert AuditReport.from_json(saved.read_text()) == report
    out = tmp_path / "again.html"
    result = run_cli(["report", str(saved), "--format", "html", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == render(report, Format.HTML)
    md = run_cli(["report", str(saved), "--format", "markdown"])
    assert md.exit_code == 0 and "**FAIL**" in md.stdout


def test_unknown_schema_version_is_refused(tmp_path: Path):
    data = json.loads(render(sample_report(), Format.JSON))
    data["schema_version"] = 99
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps(data))
    assert_one_line_error(run_cli(["report", str(bad)]), 61, "schema version 99")
    bad.write_text("{nope")
    assert_one_line_error(run_cli(["report", str(bad)]), 61, "not valid json")


@pytest.mark.chromium
@pytest.mark.parametrize("verdict", [Verdict.PASS, Verdict.FAIL])
def test_report_in_headless_chromium(tmp_path: Path, verdict: Verdict):
    page = tmp_path / "report.html"
    page.write_text(render(sample_report(verdict), Format.HTML))
    with open_page(page) as (cdp, errors):
        assert errors == [], errors
        probe = cdp.call(
            "Runtime.evaluate",
            returnByValue=True,
            expression="""(() => {
              const v = document.getElementById('verdict');
              const t = document.getElementById('pcr-table');
              const r = v.getBoundingClientRect();
              const shown = r.width > 0 && r.height > 0 && r.top < innerHeight;
              return {text: v.innerText, visible: shown,
                      x: r.left + 12, y: r.top + r.height / 2,
                      bg: getComputedStyle(v).backgroundColor,
                      rows: t.rows.length, table: t.innerText, scripts: document.scripts.length};
            })()""",
        )["result"]["value"]
        assert probe["visible"] and probe["text"].startswith(verdict.value)
        assert probe["rows"] == 4 and PCR_A in probe["table"] and PCR_B in probe["table"]
        assert probe["scripts"] == 0  # the injected <script> text stayed text
        png = screenshot(cdp, f"report-{verdict.value}.png")
        # the banner's pixels carry the verdict colour: green for PASS, red for FAIL
        r, g, b = pixel_at(cdp, png, probe["x"], probe["y"])
        expected = {"PASS": (0x1F, 0x7A, 0x3A), "FAIL": (0xB3, 0x26, 0x1E)}[verdict.value]
        assert max(abs(r - expected[0]), abs(g - expected[1]), abs(b - expected[2])) < 12, (r, g, b)
