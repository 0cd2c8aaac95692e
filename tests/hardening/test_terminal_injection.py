"""Terminal and markup injection (issue 18): untrusted strings are data at every output.

Each example from the outside test runs through the real CLI: a hostile module_id, cpio
member names and symlink targets, EIF metadata and command line, a model id and a
statement subject.  None may reach the terminal as a control sequence (clear screen,
OSC window title, hyperlink), none may be read as rich markup (``[link=...]`` hid the
real value; a stray ``[/]`` made several verbs exit 70 with MarkupError), and the value
must still be shown, escaped.  Markdown and HTML outputs escape the same strings.

The property at the end drives arbitrary text through the CLI's rendering layer (the
same function is the ``terminal_render`` fuzz target).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import CliResult, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import render_untrusted, terminal_unsafe

sys.path.append(str(Path(__file__).resolve().parent.parent / "verifier" / "nitro"))

#: clear screen, OSC window title, a hyperlink in rich markup, a stray closing tag, a
#: forged verdict, CSI as one C1 byte, a right-to-left override and a carriage return
HOSTILE = (
    "\x1b[2J\x1b]0;owned\x07[link=https://evil.example]i-legit[/link]"
    " [bold green]PASS[/] [/] \x9b2J \u202egnp.exe\r"
)
SHOWN = "[link=https://evil.example]i-legit[/link]"
ESCAPED = "\\x1b[2J"
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def assert_shown_as_data(result: CliResult, *, expect_shown: bool = True) -> None:
    """No internal error, no control character on either stream, the value visible."""
    assert result.exit_code != 70, result.stderr
    assert "MarkupError" not in result.stderr and "Traceback" not in result.stderr
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        found = UNSAFE.search(text)
        assert found is None, f"{name} carries {found.group(0)!r}: {text[:2000]!r}"
    if expect_shown:
        both = result.stdout + result.stderr
        assert SHOWN in both and ESCAPED in both, both[:3000]


# --- module_id -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_document(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from nitro_sim import BASE_TIME, build_pki, default_fields, sign_document

    pki = build_pki()
    doc = sign_document(pki.leaf.key, default_fields(pki, module_id=HOSTILE))
    folder = tmp_path_factory.mktemp("doc")
    (folder / "doc.cbor").write_bytes(doc)
    (folder / "root.pem").write_bytes(pki.root.pem)
    assert BASE_TIME + timedelta(minutes=1) > BASE_TIME
    return folder / "doc.cbor", folder / "root.pem"


def test_module_id_in_attestation_show(hostile_document: tuple[Path, Path]) -> None:
    doc, _ = hostile_document
    assert_shown_as_data(run_cli(["attestation", "show", str(doc)]))


def test_module_id_in_attestation_verify(hostile_document: tuple[Path, Path]) -> None:
    doc, root = hostile_document
    result = run_cli(["attestation", "verify", str(doc), "--root", str(root), "--at", "document"])
    assert_shown_as_data(result)
    first = result.stdout.splitlines()[0]
    assert first.startswith(("PASS ", "FAIL ")) and SHOWN in first  # the value, not a link


def test_module_id_in_errors_and_json(hostile_document: tuple[Path, Path]) -> None:
    doc, _ = hostile_document
    # the pinned AWS root refuses the simulated chain: the error line names the module id
    result = run_cli(["attestation", "verify", str(doc), "--at", "document", "--json"])
    assert result.exit_code not in (0, 70)
    assert_shown_as_data(result, expect_shown=False)
    assert json.loads(result.stdout)["module_id"] == HOSTILE  # JSON keeps the exact value


# --- cpio member names and symlink targets -----------------------------------------------


def newc(members: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive written by hand: (name, mode, data) with any bytes in the name."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*members, ("TRAILER!!!", 0, b"")], 1):
        raw = name.encode("utf-8", "surrogateescape") + b"\0"
        fields = [ino if name != "TRAILER!!!" else 0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0]
        header = b"070701" + b"".join(b"%08x" % f for f in fields) + b"%08x" % len(raw) + b"0" * 8
        out += header + raw
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


@pytest.fixture(scope="module")
def hostile_ramdisks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cpio")
    name = f"etc/{HOSTILE}<script>alert(1)</script>"
    left = newc([("etc", 0o40755, b""), (name, 0o100644, b"one\n"), ("link", 0o120777, b"/a")])
    right = newc(
        [
            ("etc", 0o40755, b""),
            (name, 0o100644, b"two\n"),
            ("link", 0o120777, f"/{HOSTILE}".encode()),
        ]
    )
    (folder / "left.cpio").write_bytes(left)
    (folder / "right.cpio").write_bytes(right)
    return folder / "left.cpio", folder / "right.cpio"


def test_cpio_names_and_symlink_targets_in_diff(hostile_ramdisks: tuple[Path, Path]) -> None:
    left, right = hostile_ramdisks
    result = run_cli(["diff", str(left), str(right)])
    assert result.exit_code == 1, result.stderr
    assert_shown_as_data(result)
    assert "link" in result.stdout


def test_cpio_names_in_markdown_and_html(
    hostile_ramdisks: tuple[Path, Path], tmp_path: Path
) -> None:
    left, right = hostile_ramdisks
    md, html = tmp_path / "d.md", tmp_path / "d.html"
    result = run_cli(["diff", str(left), str(right), "--markdown", str(md), "--html", str(html)])
    assert result.exit_code == 1, result.stderr
    markdown = md.read_text()
    # inside a fenced code block (longer than any backtick run in it) text is literal
    prose = re.sub(r"^(`{3,})diff\n.*?^\1$", "", markdown, flags=re.M | re.S)
    assert "```diff" in markdown and "```diff" not in prose
    for text in (prose, html.read_text()):
        assert not UNSAFE.search(text), text
        assert "<script>" not in text
    assert not UNSAFE.search(markdown)
    assert "&lt;script&gt;" in html.read_text()
    assert "\\[link=https://evil.example\\]" in markdown and "\\<script\\>" in markdown


# --- EIF metadata and the kernel command line ---------------------------------------------


@pytest.fixture(scope="module")
def hostile_eif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("eif")
    (folder / "bzImage").write_bytes(os.urandom(4096))
    (folder / "ramdisk.cpio").write_bytes(newc([("init", 0o100755, b"#!/bin/sh\n")]))
    (folder / "meta.json").write_text(json.dumps({"note": HOSTILE}))
    result = run_cli(
        [
            "eif",
            "assemble",
            "--kernel",
            str(folder / "bzImage"),
            "--ramdisk",
            str(folder / "ramdisk.cpio"),
            "--cmdline",
            f"console=ttyS0 {HOSTILE}",
            "--name",
            HOSTILE,
            "--version",
            HOSTILE,
            "--metadata",
            str(folder / "meta.json"),
            "-o",
            str(folder / "hostile.eif"),
        ]
    )
    assert result.exit_code == 0, result.stderr
    return folder / "hostile.eif"


def test_eif_metadata_in_describe(hostile_eif: Path) -> None:
    result = run_cli(["describe-eif", str(hostile_eif)])
    assert result.exit_code == 0, result.stderr
    assert_shown_as_data(result)
    image_name = next(line for line in result.stdout.splitlines() if "ImageName" in line)
    assert SHOWN in image_name


def test_cmdline_in_audit(hostile_eif: Path) -> None:
    result = run_cli(["audit", str(hostile_eif)])
    assert_shown_as_data(result)
    cmdline = next(line for line in result.stdout.splitlines() if "cmdline:" in line)
    assert SHOWN in cmdline and ESCAPED in cmdline


def test_cmdline_in_sarif_and_json(hostile_eif: Path, tmp_path: Path) -> None:
    sarif = tmp_path / "a.sarif"
    result = run_cli(["audit", str(hostile_eif), "--format", "sarif", "-o", str(sarif), "--json"])
    assert_shown_as_data(result, expect_shown=False)
    assert json.loads(result.stdout)["cmdline"] == f"console=ttyS0 {HOSTILE}"
    assert not UNSAFE.search(sarif.read_text())  # JSON escapes: \u001b, not ESC


# --- model ids ------------------------------------------------------------------------------


def test_model_id_in_model_info(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"weights" * 100)
    (tmp_path / "model.key").write_bytes(bytes(range(32)))
    encrypted = tmp_path / "model.cimf"
    result = run_cli(
        [
            "model",
            "encrypt",
            str(tmp_path / "model.bin"),
            "-o",
            str(encrypted),
            "--key-file",
            str(tmp_path / "model.key"),
            "--model-id",
            HOSTILE,
            "--model-version",
            HOSTILE,
        ]
    )
    assert result.exit_code == 0, result.stderr
    assert_shown_as_data(run_cli(["model", "info", str(encrypted)]))


# --- statement subjects ------------------------------------------------------------------------


def test_statement_subject_in_attest_verify(tmp_path: Path) -> None:
    from verifier.attest.signing import sign_payload, signer_for_uri

    keys = run_cli(["keys", "generate", "--prefix", str(tmp_path / "k")])
    assert keys.exit_code == 0, keys.stderr
    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(b"the artifact")
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [
            {"name": HOSTILE, "digest": {"sha256": hashlib.sha256(b"the artifact").hexdigest()}}
        ],
        "predicateType": "https://example.com/predicate/v1",
        "predicate": {"note": HOSTILE},
    }
    payload = json.dumps(statement).encode()
    signed = sign_payload(payload, signer_for_uri(f"file:{tmp_path / 'k.key'}"))
    bundle = tmp_path / "s.sigstore.json"
    bundle.write_bytes(signed.bundle)
    public = tmp_path / "k.pub"
    result = run_cli(
        ["attest", "verify", str(bundle), "--artifact", str(artifact), "--key", str(public)]
    )
    assert result.exit_code == 0, result.stderr
    assert_shown_as_data(result)


# --- the rendering layer, for any text ---------------------------------------------------------


@settings(
    max_examples=int(os.environ.get("ENCLAVE_AUDIT_RENDER_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.one_of(
        st.text(),
        st.text(alphabet=st.sampled_from(list("\x1b\x07\x9b[]/=;:\\\r\n\t\u202e\u200b abc"))),
        st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")),
    )
)
def test_any_text_through_the_rendering_layer_is_data(text: str) -> None:
    output = render_untrusted(text)
    assert terminal_unsafe(output) is None, (text, output)
