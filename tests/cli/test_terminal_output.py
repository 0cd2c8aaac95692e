"""What a CI log, a terminal and a browser see.

* Through a pipe (every ``run_cli`` is one, and ``COLUMNS=40`` pretends a narrow
  terminal): full hashes on one line each, paths and diff lines never cut, stage
  lines with elapsed times on stderr, nothing on stderr with ``--quiet``.
* Under tmux (a real terminal): a progress bar that updates, then clean final output.
* The diff's HTML in headless Chromium, like the report's: verdict banner, PCR table,
  cause badges, colours, no script.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chromium import open_page, pixel_at, screenshot
from conftest import ROOT, need_tool, run_cli

from builder.eif import write_eif

HEX96 = re.compile(r"\b[0-9a-f]{96}\b")
STAGE = re.compile(r"^\[\+ *[0-9]+\.[0-9]s\] .+")
NARROW = {"COLUMNS": "40", "LINES": "10"}
SIGNIFICANCE_ORDER = ["SECURITY-RELEVANT", "UNEXPLAINED", "BENIGN", "DERIVED"]
NITRO = ROOT.parent / "shared" / "fixtures" / "nitro" / "attestation"


def newc(members: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*members, ("TRAILER!!!", 0, b"")], 1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        out += b"070701" + b"".join(b"%08x" % f for f in fields) + raw
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


DEEP = "/".join(["a-rather-long-directory-name"] * 8) + "/library-with-a-long-name.so.1"


@pytest.fixture(scope="module")
def eifs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pipes")
    (root / "bzImage").write_bytes(os.urandom(8192))
    for side, content in (("left", b"one\n"), ("right", b"two\n")):
        (root / f"{side}.cpio").write_bytes(newc([(DEEP, 0o100644, content)]))
        write_eif(
            root / f"{side}.eif",
            kernel=root / "bzImage",
            cmdline="console=ttyS0",
            ramdisks=[root / f"{side}.cpio"],
            name="t",
            version="1",
            build_time="2025-01-01T00:00:00Z",
        )
    return root / "left.eif", root / "right.eif"


def test_describe_eif_through_a_pipe_keeps_each_pcr_on_one_line(eifs: tuple[Path, Path]) -> None:
    result = run_cli(["describe-eif", str(eifs[0])], env=NARROW)
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for pcr in ("PCR0", "PCR1", "PCR2"):
        assert HEX96.search(lines[pcr]), lines[pcr]
    # what `describe-eif x.eif | grep PCR0` shows: the whole value
    grep = subprocess.run(
        f"{sys.executable} -m enclave_audit describe-eif {eifs[0]} | grep PCR0",
        shell=True, capture_output=True, text=True, env={**os.environ, **NARROW}, check=False,
    )  # fmt: skip
    assert len(grep.stdout.splitlines()) == 1 and HEX96.search(grep.stdout), grep.stdout


def test_attestation_verify_through_a_pipe_keeps_all_16_pcrs_whole() -> None:
    doc = NITRO / "base-nitro-validator_2024-11-30_prod.cbor"
    result = run_cli(["attestation", "verify", str(doc), "--at", "document"], env=NARROW)
    assert result.exit_code == 0, result.stderr
    pcr_lines = [line for line in result.stdout.splitlines() if re.match(r"PCR\d+ ", line)]
    assert len(pcr_lines) == 16
    assert all(HEX96.search(line) for line in pcr_lines), pcr_lines
    # the root's fingerprint and every check's detail stay on their lines too
    assert any(re.search(r"\([0-9a-f]{64}\)$", line) for line in result.stdout.splitlines())


def test_diff_through_a_pipe_cuts_nothing(eifs: tuple[Path, Path]) -> None:
    result = run_cli(["diff", str(eifs[0]), str(eifs[1])], env=NARROW)
    assert result.exit_code == 1, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.endswith("PCRs affected: PCR0, PCR1"), first
    assert any(DEEP in line for line in result.stdout.splitlines())
    assert "-one" in result.stdout and "+two" in result.stdout
    assert all(not line.endswith("…") for line in result.stdout.splitlines())


def test_long_paths_in_errors_stay_on_one_line(tmp_path: Path) -> None:
    missing = tmp_path / DEEP / "enclave.eif"
    result = run_cli(["describe-eif", str(missing)], env=NARROW)
    assert result.exit_code == 6
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0]


def test_stage_lines_on_stderr_and_quiet(eifs: tuple[Path, Path]) -> None:
    result = run_cli(["diff", str(eifs[0]), str(eifs[1]), "--json"])
    stages = [line for line in result.stderr.splitlines() if STAGE.match(line)]
    assert stages, result.stderr
    assert any("comparing" in line for line in stages)
    json.loads(result.stdout)  # stdout stays the document
    described = run_cli(["describe-eif", str(eifs[0])])
    stages = [line for line in described.stderr.splitlines() if STAGE.match(line)]
    assert any(line.endswith("KiB)") and "measuring" in line for line in stages), stages
    for quiet in (["-q", "describe-eif", str(eifs[0])], ["describe-eif", str(eifs[0]), "--quiet"]):
        silent = run_cli(quiet)
        assert silent.exit_code == 0 and silent.stderr == "", silent.stderr
    env_quiet = run_cli(["describe-eif", str(eifs[0])], env={"ENCLAVE_AUDIT_QUIET": "1"})
    assert env_quiet.stderr == ""


def test_help_without_a_subcommand_and_the_exit_code_table() -> None:
    bare = run_cli([])
    assert bare.exit_code == 0 and bare.stdout.startswith("Usage: enclave-audit")
    assert max(len(line) for line in bare.stdout.splitlines()) <= 100
    table = bare.stdout[bare.stdout.index("Exit codes:") :].splitlines()
    assert re.match(r"^\s+0  success", table[1]) and re.match(r"^\s+70  internal", table[-6])
    assert "_ENCLAVE_AUDIT_COMPLETE=bash_source" in bare.stdout
    for group in ("attest", "eif", "keys", "model", "attestation"):
        shown = run_cli([group])
        assert shown.exit_code == 0 and shown.stdout.startswith(f"Usage: enclave-audit {group}")
        assert "Commands:" in shown.stdout and "error" not in shown.stderr


def test_hints_for_the_common_mistakes(tmp_path: Path) -> None:
    doc = NITRO / "base-nitro-validator_2024-11-30_prod.cbor"
    expired = run_cli(["attestation", "verify", str(doc)])
    assert expired.exit_code == 23
    error = next(line for line in expired.stderr.splitlines() if line.startswith("error:"))
    assert len(error) < 300 and "expired" in error
    assert "hint:" in expired.stderr and "--at document" in expired.stderr
    ramdisk = tmp_path / "ramdisk.cpio"
    ramdisk.write_bytes(newc([("init", 0o100755, b"x")]))
    wrong = run_cli(["describe-eif", str(ramdisk)])
    assert wrong.exit_code == 12 and "hint: this is a cpio archive" in wrong.stderr
    arn = run_cli(["pcr", "--role-arn", "arn:aws:iam::12345678901:role/x"])
    assert arn.exit_code == 3 and "hint:" in arn.stderr
    iid = run_cli(["pcr", "--instance-id", "i-0123456789ABCDEF0"])
    assert iid.exit_code == 3 and "i-0123456789abcdef0" in iid.stderr


# --- a real terminal ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_eif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tty")
    (root / "bzImage").write_bytes(os.urandom(8192))
    ramdisk = root / "ramdisk.bin"
    with ramdisk.open("wb") as fh:  # real bytes: the bar must have work to show
        block = os.urandom(1 << 20)
        for _ in range(int(os.environ.get("ENCLAVE_AUDIT_TTY_MIB", "320"))):
            fh.write(block)
    eif = root / "big.eif"
    write_eif(
        eif,
        kernel=root / "bzImage",
        cmdline="console=ttyS0",
        ramdisks=[ramdisk],
        name="big",
        version="1",
        build_time="2025-01-01T00:00:00Z",
    )
    ramdisk.unlink()
    return eif


def test_terminal_session_under_tmux(big_eif: Path) -> None:
    tmux = need_tool("tmux", "tmux")
    socket = f"enclave-audit-test-{os.getpid()}"
    exe = Path(sys.executable).with_name("enclave-audit")
    base = [tmux, "-L", socket]
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    subprocess.run(
        [*base, "new-session", "-d", "-s", "t", "-x", "160", "-y", "48",
         "bash --norc --noprofile"],
        check=True, env=env,
    )  # fmt: skip
    screens: list[str] = []
    try:
        subprocess.run(
            [*base, "send-keys", "-t", "t",
             f"clear; {exe} describe-eif {big_eif}; echo __DONE__ $?", "Enter"],
            check=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            shot = subprocess.run(
                [*base, "capture-pane", "-p", "-t", "t"], capture_output=True, text=True, check=True
            ).stdout
            screens.append(shot)
            if re.search(r"^__DONE__ \d+", shot, re.M):
                break
            time.sleep(0.05)
    finally:
        subprocess.run([*base, "kill-server"], check=False)
    final = screens[-1]
    assert re.search(r"^__DONE__ 0$", final, re.M), final
    bars = [s for s in screens if "measuring big.eif" in s and "━" in s]
    assert len(bars) >= 2, f"no progress bar seen in {len(screens)} screens"
    amounts = {
        re.search(r"([0-9.]+)/([0-9.]+) [MG]B", s).group(1)
        for s in bars
        if re.search(r"([0-9.]+)/([0-9.]+) [MG]B", s)
    }
    assert len(amounts) >= 2, f"the bar did not move: {amounts}"
    # clean final output: the bar is gone, the table is there with whole PCRs
    leftovers = [line for line in final.splitlines() if "measuring" in line or "━╸" in line]
    assert not leftovers, leftovers
    lines = final.splitlines()
    for pcr in ("PCR0", "PCR1", "PCR2"):
        row = next(line for line in lines if line.lstrip().startswith(pcr))
        assert HEX96.search(row), row


# --- the diff's HTML in a browser -------------------------------------------------------------


@pytest.mark.chromium
def test_diff_html_in_headless_chromium(eifs: tuple[Path, Path], tmp_path: Path) -> None:
    page = tmp_path / "diff.html"
    result = run_cli(["diff", str(eifs[0]), str(eifs[1]), "--html", str(page), "-q"])
    assert result.exit_code == 1, result.stderr
    with open_page(page) as (cdp, errors):
        assert errors == [], errors
        probe = cdp.call(
            "Runtime.evaluate",
            returnByValue=True,
            expression="""(() => {
              const v = document.getElementById('verdict');
              const t = document.getElementById('pcr-table');
              const r = v.getBoundingClientRect();
              const badges = [...document.querySelectorAll('.cause')];
              const mismatch = [...t.querySelectorAll('tr.mismatch')]
                .map(x => x.cells[0].innerText);
              const shown = r.width > 0 && r.height > 0 && r.top < innerHeight;
              return {text: v.innerText, visible: shown,
                      x: r.left + 12, y: r.top + r.height / 2, rows: t.rows.length,
                      mismatch: mismatch, badges: badges.map(b => b.innerText),
                      badgeBg: badges.length ? getComputedStyle(badges[0]).backgroundColor : '',
                      first: [...document.querySelectorAll('#headlines li .sig')]
                        .map(s => s.innerText),
                      sigBg: [...document.querySelectorAll('#headlines li .sig')]
                        .map(s => getComputedStyle(s).backgroundColor),
                      scripts: document.scripts.length,
                      pre: [...document.querySelectorAll('pre .add, pre .del')].length};
            })()""",
        )["result"]["value"]
        assert probe["visible"] and probe["text"].startswith("DIFFERENT")
        assert probe["rows"] == 4 and probe["mismatch"] == ["PCR0", "PCR1"]
        # schema 2: a difference without evidence of a benign cause is "unexplained", and the
        # headlines rank it (with its significance label, coloured) before anything benign
        assert "unexplained" in probe["badges"] and probe["badgeBg"] not in ("", "rgba(0, 0, 0, 0)")
        assert probe["first"] and probe["first"][0] in ("SECURITY-RELEVANT", "UNEXPLAINED")
        assert probe["first"] == sorted(probe["first"], key=SIGNIFICANCE_ORDER.index)
        assert all(bg not in ("", "rgba(0, 0, 0, 0)") for bg in probe["sigBg"])
        assert probe["scripts"] == 0 and probe["pre"] >= 2
        png = screenshot(cdp, "diff.png")
        r, g, b = pixel_at(cdp, png, probe["x"], probe["y"])
        assert max(abs(r - 0xB3), abs(g - 0x26), abs(b - 0x1E)) < 12, (r, g, b)  # the red banner


@pytest.mark.slow
def test_build_through_a_pipe_prints_stage_lines(tmp_path: Path) -> None:
    """The reference build (warm cache: seconds; cold: the kernel is built first, minutes)."""
    out = tmp_path / "out"
    result = run_cli(["build", "-o", str(out)], env=NARROW, timeout=5400)
    assert result.exit_code == 0, result.stderr[-3000:]
    stages = [line for line in result.stderr.splitlines() if STAGE.match(line)]
    names = " ".join(stages)
    for stage in ("inputs: locating", "ramdisk: bootstrap-ramdisk", "writing enclave.eif"):
        assert stage in names, result.stderr
    assert any(re.search(r": done in [0-9.]+ s$", line) for line in stages)
    stamps = [float(re.match(r"^\[\+ *([0-9.]+)s\]", line).group(1)) for line in stages]  # type: ignore[union-attr]
    assert stamps == sorted(stamps)
    # the measurements on stdout: whole PCRs, one per line, whatever COLUMNS says
    measurements = json.loads(result.stdout)["Measurements"]
    assert all(HEX96.fullmatch(measurements[f"PCR{i}"]) for i in (0, 1, 2))
    assert all(len(line) < 120 for line in result.stdout.splitlines())
    quiet = run_cli(["build", "-o", str(tmp_path / "again"), "--quiet"], timeout=5400)
    assert quiet.exit_code == 0 and not [ln for ln in quiet.stderr.splitlines() if STAGE.match(ln)]
