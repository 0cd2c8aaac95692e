"""Debian archives read directly: the sources-line grammar, Release and Packages indices."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import need_tool
from local_archive import DebianArchive, gpg_key, make_deb, serve

from builder.inputs.apt import load_suite, parse_source_line
from builder.inputs.fetch import FetchFailed
from enclave_audit.errors import SpecInvalid, TrustError


@pytest.mark.parametrize(
    "line",
    [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian-security bookworm-security main contrib",
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
        " https://deb.debian.org/debian bookworm main",
        "deb http://127.0.0.1:8080/debian/ bookworm-updates main",
    ],
)
def test_source_lines_in_the_grammar(line: str) -> None:
    src = parse_source_line(line)
    assert src.line.split()[-1] in ("main", "contrib")
    assert not src.uri.endswith("/")


@pytest.mark.parametrize(
    "line",
    [
        "--setup-hook=touch /tmp/pwned",
        "deb --setup-hook=touch bookworm main",
        "deb http://deb.debian.org/debian --customize-hook=id main",
        "deb http://deb.debian.org/debian bookworm",
        "deb file:///etc bookworm main",
        "deb copy:///tmp/repo bookworm main",
        "deb http://deb.debian.org/debian bookworm main;touch",
        "deb http://deb.debian.org/debian bookworm $(id)",
        "deb [trusted=yes bookworm main",
        "deb [--x=y] http://deb.debian.org/debian bookworm main",
        "deb-src http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian`id` bookworm main",
    ],
)
def test_source_lines_outside_the_grammar_are_refused(line: str) -> None:
    with pytest.raises(SpecInvalid, match="mirror"):
        parse_source_line(line)


def test_archive_name_is_what_snapshot_calls_it() -> None:
    assert parse_source_line("deb http://deb.debian.org/debian bookworm main").archive == "debian"
    sec = parse_source_line("deb http://security.debian.org/debian-security bookworm-security main")
    assert sec.archive == "debian-security"


def test_index_read_and_signature_checked(tmp_path: Path, debtools: None) -> None:
    need_tool("gpg", "gpg")
    key = gpg_key(tmp_path / "gnupg")
    other = gpg_key(tmp_path / "other")
    debs = [make_deb(tmp_path, "alpha", "1.0-1"), make_deb(tmp_path, "alpha", "1:0.9-1")]
    archive = DebianArchive(tmp_path / "debian")
    archive.add_suite("bookworm", debs, key=key)
    with serve(archive.root) as server:
        src = parse_source_line(f"deb {server.url} bookworm main")
        index = load_suite(src, keyring=key.keyring)
        assert index.release.signed
        rec = index.lookup("alpha", "1.0-1")
        assert rec is not None and rec.filename == "pool/bookworm/alpha_1.0-1_all.deb"
        # Debian version order, not string order: the epoch wins
        newest = index.newest("alpha")
        assert newest is not None and newest.version == "1:0.9-1"
        with pytest.raises(TrustError, match="signature does not verify"):
            load_suite(src, keyring=other.keyring)
        # a Packages file that is not the one the Release lists is refused
        packages = archive.root / "dists/bookworm/main/binary-amd64/Packages.xz"
        packages.write_bytes(packages.read_bytes()[:-1] + b"\0")
        with pytest.raises(FetchFailed, match="sha256 its Release lists"):
            load_suite(src)


def test_unreachable_archive_is_a_fetch_failure() -> None:
    src = parse_source_line("deb http://127.0.0.1:9/debian bookworm main")
    with pytest.raises(FetchFailed):
        load_suite(src)
