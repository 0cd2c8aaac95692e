"""Each cause classifier on a small real pair, plus negatives and a robustness property."""

from __future__ import annotations

import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import need_tool
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_audit.model.difference import Cause, NodeKind
from verifier.compare import compare_paths
from verifier.compare.binary import byte_node
from verifier.compare.causes import classify, detect_strings, looks_like_build_path
from verifier.compare.engine import field_node
from verifier.compare.text import text_node

NOW = 1_800_000_000.0


def causes_of(node) -> list[Cause]:
    return [h.cause for h in classify(node, now=NOW).causes]


def text(a: str, b: str):
    node = text_node(("f.txt",), a, b, limit=200)
    assert node is not None
    return node


def test_unix_time_in_bytes() -> None:
    t = 1_763_865_600  # 2025-11-23T02:40:00Z
    a = b"\x00" * 40 + struct.pack("<I", t) + b"\x00" * 20
    b = b"\x00" * 40 + struct.pack("<I", t + 5400) + b"\x00" * 20
    node = byte_node(("blob",), a, b)
    assert node is not None
    hint = classify(node, now=NOW).causes[0]
    assert hint.cause is Cause.TIMESTAMP
    assert "2025-11-23T02:40:00Z" in hint.evidence and "little-endian u32" in hint.evidence


def test_big_endian_and_64_bit_clocks() -> None:
    t = 1_700_000_000
    for fmt in (">I", "<Q"):
        a = b"\x11" * 8 + struct.pack(fmt, t) + b"\x22" * 8
        b = b"\x11" * 8 + struct.pack(fmt, t + 86400) + b"\x22" * 8
        node = byte_node(("blob",), a, b)
        assert node is not None
        assert causes_of(node)[0] is Cause.TIMESTAMP


def test_future_values_are_not_build_clocks() -> None:
    t = 3_300_000_000  # 2074: after "now", cannot be when this was built
    a = b"\x00" * 8 + struct.pack("<I", t) + b"\x00" * 8
    b = b"\x00" * 8 + struct.pack("<I", t + 2) + b"\x00" * 8
    node = byte_node(("blob",), a, b)
    assert node is not None
    assert Cause.TIMESTAMP not in causes_of(node)


def test_dates_in_text() -> None:
    iso = text("built: 2026-11-23 02:00:00\n", "built: 2026-11-24 09:13:00\n")
    assert causes_of(iso) == [Cause.TIMESTAMP]
    c_style = text("Built Nov 23 2026 02:00:00\n", "Built Nov 24 2026 10:00:00\n")
    assert causes_of(c_style)[0] is Cause.TIMESTAMP
    assert causes_of(text("epoch=1763865600\n", "epoch=1763869200\n"))[0] is Cause.TIMESTAMP


def test_build_paths() -> None:
    tmp = text("src=/tmp/build-a1/src/main.c\n", "src=/tmp/build-z9/src/main.c\n")
    assert causes_of(tmp) == [Cause.BUILD_PATH]
    assert causes_of(text("/home/alice/proj/x.py\n", "/home/bob/proj/x.py\n")) == [Cause.BUILD_PATH]
    assert looks_like_build_path("/builds/runner-1/work/a.c", "/builds/runner-2/work/a.c")
    # another file named in the same place is a content change, not a build path
    assert not looks_like_build_path("/usr/bin/python3", "/usr/bin/perl")
    assert causes_of(text("exec /usr/bin/python3\n", "exec /usr/bin/perl\n")) == [Cause.UNKNOWN]


def test_toolchain_versions() -> None:
    hints = detect_strings("GCC: (Debian 12.2.0-14) 12.2.0", "GCC: (Debian 13.1.0-1) 13.1.0")
    assert hints[0].cause is Cause.TOOLCHAIN and "12.2.0" in hints[0].evidence
    assert causes_of(text("Python 3.11.2\n", "Python 3.11.9\n")) == [Cause.TOOLCHAIN]


def test_locale() -> None:
    assert causes_of(text("ratio: 1.5\n", "ratio: 1,5\n")) == [Cause.LOCALE]
    assert causes_of(text("LANG=en_US.UTF-8\n", "LANG=C.UTF-8\n")) == [Cause.LOCALE]
    c_order = "B\nZ\na\nc\n"
    folded = "a\nB\nc\nZ\n"
    assert causes_of(text(c_order, folded)) == [Cause.LOCALE]


def test_file_order_of_lines() -> None:
    assert causes_of(text("b\nc\na\n", "c\na\nb\n")) == [Cause.FILE_ORDER]


def test_random_tokens_and_bytes() -> None:
    assert causes_of(text(f"id={uuid.uuid4()}\n", f"id={uuid.uuid4()}\n")) == [Cause.RANDOM]
    a = bytes(range(16)) + bytes.fromhex("8f3a9c21d47e55b0c3196aef2217d5e8") + bytes(16)
    b = bytes(range(16)) + bytes.fromhex("0d6e4b97a2f13c58e9b07d2a66c4f183") + bytes(16)
    node = byte_node(("seed",), a, b)
    assert node is not None
    assert causes_of(node) == [Cause.RANDOM]


def test_owner_and_mode_fields() -> None:
    assert causes_of(field_node(("x",), "uid", "0", "1000")) == [Cause.OWNERSHIP]
    assert causes_of(field_node(("x",), "mode", "0644", "0664")) == [Cause.OWNERSHIP]
    assert causes_of(field_node(("x",), "mtime", "1700000000", "1700086400"))[0] is Cause.TIMESTAMP


def test_code_bytes_are_unknown() -> None:
    code_a, code_b = b"\x8d\x44\x7f\x07\xc3", b"\x8d\x44\x7f\x09\xc3"
    node = byte_node((".text",), code_a, code_b, kind=NodeKind.ELF_SECTION)
    assert node is not None
    assert causes_of(node.model_copy(update={"path": ("hello", ".text")})) == [Cause.UNKNOWN]


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


def test_classifiers_never_fail_on_arbitrary_input() -> None:
    @settings(max_examples=200, deadline=None)
    @given(st.binary(min_size=1, max_size=80), st.binary(min_size=1, max_size=80))
    def bytes_pairs(a: bytes, b: bytes) -> None:
        node = byte_node(("x",), a, b)
        if node is not None:
            assert classify(node, now=NOW).causes

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=60), st.text(max_size=60))
    def string_pairs(a: str, b: str) -> None:
        detect_strings(a, b)
        node = text_node(("t",), a, b, limit=50)
        if node is not None:
            assert classify(node, now=NOW).causes

    bytes_pairs()
    string_pairs()
