"""Each cause classifier on a small real pair: a benign cause needs evidence, and says what
it matched, against what, and how sure it is; without evidence the difference is
unexplained; a changed host, URL, key, digest or instruction is never benign."""

from __future__ import annotations

import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import need_tool
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_audit.model.difference import Cause, Confidence, DiffNode, NodeKind, Significance
from verifier.compare import compare_paths
from verifier.compare.binary import byte_node
from verifier.compare.causes import classify, detect_strings
from verifier.compare.evidence import Evidence
from verifier.compare.nodes import field_node
from verifier.compare.text import text_node

NOW = 1_800_000_000.0
BUILT = 1_763_800_000  # 2025-11-22: both sides' recorded build time


def built() -> Evidence:
    """Both sides recorded a build time (an EIF BuildTime, a manifest's epoch)."""
    ev = Evidence()
    ev.left.add_time(BUILT, "EIF BuildTime")
    ev.right.add_time(BUILT, "EIF BuildTime")
    return ev


def with_dirs(left: str, right: str) -> Evidence:
    ev = Evidence()
    ev.left.add_build_dir(left, "DW_AT_comp_dir")
    ev.right.add_build_dir(right, "DW_AT_comp_dir")
    return ev


def classified(node: DiffNode, evidence: Evidence | None = None) -> DiffNode:
    return classify(node, evidence, now=NOW)


def causes_of(node: DiffNode, evidence: Evidence | None = None) -> list[Cause]:
    return [h.cause for h in classified(node, evidence).causes]


def significance(node: DiffNode, evidence: Evidence | None = None) -> Significance:
    result = classified(node, evidence).significance
    assert result is not None
    return result


def text(a: str, b: str) -> DiffNode:
    node = text_node(("f.txt",), a, b, limit=200)
    assert node is not None
    return node


def test_unix_time_in_bytes_inside_the_build_window() -> None:
    t = BUILT + 3600
    a = b"\x00" * 40 + struct.pack("<I", t) + b"\x00" * 20
    b = b"\x00" * 40 + struct.pack("<I", t + 5400) + b"\x00" * 20
    node = byte_node(("blob",), a, b)
    assert node is not None
    h = classified(node, built()).causes[0]
    assert h.cause is Cause.TIMESTAMP and h.confidence is Confidence.MEDIUM
    assert "little-endian u32" in h.evidence and "EIF BuildTime" in h.against
    assert significance(node, built()) is Significance.BENIGN


def test_clock_shaped_bytes_without_a_recorded_build_time_are_unexplained() -> None:
    t = BUILT + 3600
    a = b"\x00" * 40 + struct.pack("<I", t) + b"\x00" * 20
    b = b"\x00" * 40 + struct.pack("<I", t + 5400) + b"\x00" * 20
    node = byte_node(("blob",), a, b)
    assert node is not None
    result = classified(node)
    assert result.significance is Significance.UNEXPLAINED
    assert result.causes[0].cause is Cause.UNEXPLAINED
    assert not any(h.explains for h in result.causes)


def test_big_endian_and_64_bit_clocks() -> None:
    for fmt in (">I", "<Q"):
        a = b"\x11" * 8 + struct.pack(fmt, BUILT) + b"\x22" * 8
        b = b"\x11" * 8 + struct.pack(fmt, BUILT + 86400) + b"\x22" * 8
        node = byte_node(("blob",), a, b)
        assert node is not None
        assert causes_of(node, built())[0] is Cause.TIMESTAMP


def test_clocks_outside_the_window_are_not_build_clocks() -> None:
    t = 3_300_000_000  # 2074
    a = b"\x00" * 8 + struct.pack("<I", t) + b"\x00" * 8
    b = b"\x00" * 8 + struct.pack("<I", t + 2) + b"\x00" * 8
    node = byte_node(("blob",), a, b)
    assert node is not None
    assert significance(node, built()) is Significance.UNEXPLAINED


def test_a_clock_must_cover_every_differing_byte() -> None:
    a = b"\x00" * 8 + struct.pack("<I", BUILT) + b"\x00" * 4 + b"AAAA"
    b = b"\x00" * 8 + struct.pack("<I", BUILT + 60) + b"\x00" * 4 + b"BBBB"
    node = byte_node(("blob",), a, b)
    assert node is not None
    assert significance(node, built()) is Significance.UNEXPLAINED


def test_dates_in_text() -> None:
    iso = text("built: 2025-11-23 02:00:00\n", "built: 2025-11-24 09:13:00\n")
    assert causes_of(iso, built()) == [Cause.TIMESTAMP]
    c_style = text("Built Nov 23 2025 02:00:00\n", "Built Nov 24 2025 10:00:00\n")
    assert causes_of(c_style, built())[0] is Cause.TIMESTAMP
    assert causes_of(text("epoch=1763865600\n", "epoch=1763869200\n"), built())[0] is (
        Cause.TIMESTAMP
    )
    # without a recorded build time, a date-shaped change is not explained away
    assert significance(iso) is Significance.UNEXPLAINED


def test_expiry_dates_far_from_the_build_are_unexplained() -> None:
    node = text("not_after=2031-01-01\n", "not_after=2036-01-01\n")
    assert significance(node, built()) is Significance.UNEXPLAINED


def test_build_paths_need_recorded_build_directories() -> None:
    tmp = text("src=/tmp/build-a1/src/main.c\n", "src=/tmp/build-z9/src/main.c\n")
    h = classified(tmp, with_dirs("/tmp/build-a1", "/tmp/build-z9")).causes[0]
    assert h.cause is Cause.BUILD_PATH and h.confidence is Confidence.HIGH
    assert "/tmp/build-a1" in h.against and "DW_AT_comp_dir" in h.against
    assert significance(tmp) is Significance.UNEXPLAINED  # nothing recorded: no claim
    other = text("exec /usr/bin/python3\n", "exec /usr/bin/perl\n")
    assert significance(other, with_dirs("/tmp/a", "/tmp/b")) is Significance.UNEXPLAINED


def test_toolchain_versions() -> None:
    hints = detect_strings("GCC: (Debian 12.2.0-14) 12.2.0", "GCC: (Debian 13.1.0-1) 13.1.0")
    assert hints[0].cause is Cause.TOOLCHAIN and "12.2.0" in hints[0].evidence
    assert causes_of(text("Python 3.11.2\n", "Python 3.11.9\n")) == [Cause.TOOLCHAIN]
    # a dependency's version is a real change, not the toolchain
    assert significance(text("libfoo 1.2.3\n", "libfoo 1.2.4\n")) is Significance.UNEXPLAINED
    # compiler flags are not a version string
    flags = field_node(
        ("x", "DWARF", "main.c"), "DW_AT_producer", "GNU C17 12.2.0 -O2", "GNU C17 12.2.0 -O0"
    )
    assert significance(flags) is Significance.UNEXPLAINED


def test_locale() -> None:
    assert causes_of(text("ratio: 1.5\n", "ratio: 1,5\n")) == [Cause.LOCALE]
    assert causes_of(text("LANG=en_US.UTF-8\n", "LANG=C.UTF-8\n")) == [Cause.LOCALE]
    assert causes_of(text("B\nZ\na\nc\n", "a\nB\nc\nZ\n")) == [Cause.LOCALE]


def test_file_order_of_lines() -> None:
    h = classified(text("b\nc\na\n", "c\na\nb\n")).causes[0]
    assert h.cause is Cause.FILE_ORDER and h.confidence is Confidence.HIGH
    assert "permutation" in h.matched


@pytest.mark.parametrize(
    ("a", "b", "what"),
    [
        ("kms.us-east-1.amazonaws.com", "kms.attacker.example.net", "host name"),
        ("url=https://models.example.com/m.bin", "url=https://evil.example.org/m.bin", "URL"),
        ("peer 10.0.0.12:8443", "peer 10.0.9.12:8443", "IP address"),
        (
            "sha256=" + "ab" * 32,
            "sha256=" + "cd" * 32,
            "digest",
        ),
        (f"key_id={uuid.uuid4()}", f"key_id={uuid.uuid4()}", "identifier"),
        (
            "token=AKIAabcdEFGH1234567890ZZzzYYyy0987654321",
            "token=AKIAqwerTYUI0987654321aaBBccDD1234567890",
            "key",
        ),
    ],
)
def test_hosts_urls_addresses_keys_and_digests_are_never_benign(a: str, b: str, what: str) -> None:
    # even with every piece of evidence a benign classifier could want
    ev = built()
    ev.left.add_build_dir("/tmp/a", "x")
    ev.right.add_build_dir("/tmp/b", "x")
    node = classified(text(a + "\n", b + "\n"), ev)
    assert node.significance is Significance.UNEXPLAINED
    assert node.causes[0].cause is Cause.REAL and what in node.causes[0].evidence
    assert not any(h.explains for h in node.causes)


def test_a_change_only_partly_explained_is_unexplained() -> None:
    node = text("built 2025-11-23 02:00:00\nthreads=4\n", "built 2025-11-23 05:00:00\nthreads=64\n")
    result = classified(node, built())
    assert result.significance is Significance.UNEXPLAINED
    partial = [h for h in result.causes if h.cause is Cause.TIMESTAMP]
    assert partial and partial[0].confidence is Confidence.LOW


def test_random_bytes_are_unexplained() -> None:
    a = bytes(range(16)) + bytes.fromhex("8f3a9c21d47e55b0c3196aef2217d5e8") + bytes(16)
    b = bytes(range(16)) + bytes.fromhex("0d6e4b97a2f13c58e9b07d2a66c4f183") + bytes(16)
    node = byte_node(("seed",), a, b)
    assert node is not None
    assert significance(node, built()) is Significance.UNEXPLAINED
    assert Cause.RANDOM not in causes_of(node, built())


def test_owner_and_mode_fields() -> None:
    # one file's owner changing is not evidence of a build user: unexplained
    assert significance(field_node(("a", "x"), "uid", "0", "1000")) is Significance.UNEXPLAINED
    setuid = classified(field_node(("a", "x"), "mode", "0755", "4755"))
    assert setuid.significance is Significance.SECURITY
    assert "setuid added" in setuid.causes[0].evidence
    exec_bit = classified(field_node(("a", "x"), "mode", "0644", "0755"))
    assert exec_bit.significance is Significance.SECURITY
    mtime = classified(field_node(("a", "x"), "mtime", "1700000000", "1700086400"))
    assert mtime.causes[0].cause is Cause.TIMESTAMP
    assert mtime.causes[0].confidence is Confidence.HIGH  # the format defines it as a time


def test_code_bytes_are_real_changes() -> None:
    code_a, code_b = b"\x8d\x44\x7f\x07\xc3", b"\x8d\x44\x7f\x09\xc3"
    node = byte_node((".text",), code_a, code_b, kind=NodeKind.ELF_SECTION)
    assert node is not None
    node = node.model_copy(update={"path": ("hello", ".text")})
    result = classified(node, built())
    assert result.causes[0].cause is Cause.REAL and "machine code" in result.causes[0].evidence


@pytest.fixture(scope="module")
def uuid_build_ids(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    need_tool("gcc", "gcc")
    root = tmp_path_factory.mktemp("buildid")
    (root / "m.c").write_text("int main(void) { return 0; }\n")
    outs = []
    for name in ("a", "b"):
        cmd = ["gcc", "-O1", "-Wl,--build-id=uuid", "-o", name, "m.c"]
        subprocess.run(cmd, cwd=root, check=True)
        outs.append(root / name)
    return outs[0], outs[1]


def test_build_id_alone_is_random(uuid_build_ids: tuple[Path, Path]) -> None:
    report = compare_paths(*uuid_build_ids)
    assert report.root is not None
    build_id = report.root.find("notes", "build-id")
    assert build_id is not None and build_id.causes[0].cause is Cause.RANDOM
    assert "every other part" in build_id.causes[0].against


def test_every_hint_says_what_it_matched_and_against_what() -> None:
    nodes = [
        text("b\nc\na\n", "c\na\nb\n"),
        text("built: 2025-11-23 02:00:00\n", "built: 2025-11-24 09:13:00\n"),
        text("kms.a.example.com\n", "kms.b.example.com\n"),
        field_node(("a", "x"), "mode", "0755", "4755"),
    ]
    for node in nodes:
        for node_h in classified(node, built()).walk():
            for h in node_h.causes:
                assert h.evidence and h.matched and h.against, h


def test_classifiers_never_fail_on_arbitrary_input() -> None:
    @settings(max_examples=200, deadline=None)
    @given(st.binary(min_size=1, max_size=80), st.binary(min_size=1, max_size=80))
    def bytes_pairs(a: bytes, b: bytes) -> None:
        node = byte_node(("x",), a, b)
        if node is not None:
            assert classified(node, built()).causes

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=60), st.text(max_size=60))
    def string_pairs(a: str, b: str) -> None:
        detect_strings(a, b)
        node = text_node(("t",), a, b, limit=50)
        if node is not None:
            assert classified(node, built()).causes

    bytes_pairs()
    string_pairs()


_LABEL = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)


def test_a_changed_host_name_in_any_line_is_never_benign() -> None:
    """Held-out shapes: any host in any line, with any surrounding text and evidence."""

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(_LABEL, min_size=2, max_size=4),
        st.lists(_LABEL, min_size=2, max_size=4),
        st.sampled_from(["com", "net", "internal", "io", "amazonaws.com"]),
        st.sampled_from(["endpoint=", "host: ", "connect ", "KMS_HOST=", "server "]),
        st.sampled_from(["", ":443", "/v1", " # primary"]),
    )
    def hosts(left: list[str], right: list[str], tld: str, prefix: str, suffix: str) -> None:
        a, b = ".".join([*left, tld]), ".".join([*right, tld])
        if a == b:
            return
        node = text(f"{prefix}{a}{suffix}\n", f"{prefix}{b}{suffix}\n")
        result = classified(node, built())
        assert result.significance is Significance.UNEXPLAINED, (a, b, result.causes)

    hosts()
