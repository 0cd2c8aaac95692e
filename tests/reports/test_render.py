"""Report rendering: escaping, read-back, and a real headless Chromium check with a screenshot."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

import pytest
from conftest import ROOT, assert_one_line_error, need, run_cli

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


# --- headless Chromium ------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--remote-allow-origins=*",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cdp:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})
            self.events.append(message)

    def drain(self, seconds: float) -> None:
        self.ws.settimeout(seconds)
        try:
            while True:
                self.events.append(json.loads(self.ws.recv()))
        except Exception:
            pass
        self.ws.settimeout(30)


def _png_pixel(png: bytes, x: int, y: int) -> tuple[int, int, int]:
    """RGB of one pixel of a non-interlaced 8-bit RGB/RGBA PNG (what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    color_type = 6
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, _h, depth, color_type, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color_type in (2, 6)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 4 if color_type == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    for row in range(y + 1):
        start = row * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        prev = line
    i = x * bpp
    return prev[i], prev[i + 1], prev[i + 2]


@pytest.mark.chromium
@pytest.mark.parametrize("verdict", [Verdict.PASS, Verdict.FAIL])
def test_report_in_headless_chromium(tmp_path: Path, verdict: Verdict):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    need(chromium is not None, "headless Chromium not installed (apt-get install chromium)")
    assert chromium is not None
    page = tmp_path / "report.html"
    page.write_text(render(sample_report(verdict), Format.HTML))
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    proc = subprocess.Popen(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--remote-debugging-port={port}",
            "--window-size=1280,1400",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        targets = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    targets = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert targets, "Chromium did not expose a page over the DevTools protocol"
        cdp = Cdp(targets[0]["webSocketDebuggerUrl"])
        cdp.call("Runtime.enable")
        cdp.call("Log.enable")
        cdp.call("Page.enable")
        cdp.call("Page.navigate", url=page.as_uri())
        cdp.drain(2.0)
        errors = [
            e
            for e in cdp.events
            if e.get("method") == "Runtime.exceptionThrown"
            or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        ]
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
        shot = cdp.call("Page.captureScreenshot", format="png")
        png = __import__("base64").b64decode(shot["data"])
        out_dir = Path(os.environ.get("ENCLAVE_AUDIT_SCREENSHOTS", ROOT / "out" / "screenshots"))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"report-{verdict.value}.png").write_bytes(png)
        # the banner's pixels carry the verdict colour: green for PASS, red for FAIL
        dpr = cdp.call("Runtime.evaluate", expression="devicePixelRatio", returnByValue=True)
        scale = float(dpr["result"]["value"])
        r, g, b = _png_pixel(png, int(probe["x"] * scale), int(probe["y"] * scale))
        expected = {"PASS": (0x1F, 0x7A, 0x3A), "FAIL": (0xB3, 0x26, 0x1E)}[verdict.value]
        assert max(abs(r - expected[0]), abs(g - expected[1]), abs(b - expected[2])) < 12, (r, g, b)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
