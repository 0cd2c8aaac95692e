"""describe-eif / pcr / eif assemble through the console script, including bad input."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

from builder.eif.format import restamp_crc

BUILD_TIME = "2025-01-01T00:00:00+00:00"


def _assemble(d: Path, out: Path) -> list[str]:
    parts = ["--kernel", str(d / "k"), "--ramdisk", str(d / "r1"), "--ramdisk", str(d / "r2")]
    return ["eif", "assemble", *parts, "--build-time", BUILD_TIME, "-o", str(out)]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("eifcli")
    rng = random.Random(7)
    (d / "k").write_bytes(rng.randbytes(200_000))
    (d / "r1").write_bytes(rng.randbytes(30_000))
    (d / "r2").write_bytes(rng.randbytes(90_000))
    out = d / "a.eif"
    result = run_cli(_assemble(d, out))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["Measurements"]["PCR0"]
    return out


def _fix_crc(data: bytearray) -> bytearray:
    restamp_crc(data)
    return data


def test_assemble_prints_measurements_and_describe_agrees(image: Path, tmp_path: Path):
    d = image.parent
    predicted = run_cli(
        [
            "pcr",
            "--kernel",
            str(d / "k"),
            "--ramdisk",
            str(d / "r1"),
            "--ramdisk",
            str(d / "r2"),
            "--json",
        ]
    )
    assert predicted.exit_code == 0, predicted.stderr
    described = run_cli(["describe-eif", str(image), "--json"])
    assert described.exit_code == 0, described.stderr
    nitro = json.loads(described.stdout)
    assert list(nitro) == [
        "EifVersion",
        "Measurements",
        "IsSigned",
        "CheckCRC",
        "ImageName",
        "ImageVersion",
        "Metadata",
    ]
    assert nitro["CheckCRC"] is True and nitro["EifVersion"] == 4
    measured = nitro["Measurements"]
    predicted_doc = json.loads(predicted.stdout)
    assert (predicted_doc.pop("schema"), predicted_doc.pop("schema_version")) == (
        "enclave-audit/pcr",
        1,
    )
    for key, value in predicted_doc.items():
        assert measured[key] == value
        assert value == value.lower() and len(value) == 96
    again = tmp_path / "again.eif"
    result = run_cli(_assemble(d, again))
    assert result.exit_code == 0
    assert again.read_bytes() == image.read_bytes()
    table = run_cli(["describe-eif", str(image)])
    assert table.exit_code == 0 and "PCR0" in table.stdout and "ramdisk" in table.stdout


def test_pcr_helpers(tmp_path: Path):
    r = run_cli(
        [
            "pcr",
            "--role-arn",
            "arn:aws:iam::123456789012:role/Webserver",
            "--instance-id",
            "i-0a22e5c5f24d22174",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.stderr
    values = json.loads(r.stdout)
    assert values["PCR3"].startswith("78fce75db17cd4e0")
    assert values["PCR4"].startswith("45706d7b621e4620")
    assert_one_line_error(run_cli(["pcr"]), 2, "nothing to measure")


def _corrupt(image: Path, tmp_path: Path, name: str, mutate) -> Path:  # type: ignore[no-untyped-def]
    data = bytearray(image.read_bytes())
    out = tmp_path / name
    out.write_bytes(bytes(mutate(data)))
    return out


def _size_slot(i: int) -> int:
    return 284 + 8 * i


CASES = [
    ("truncated", lambda d: d[: len(d) // 2], 11, "sections end at"),
    ("tiny", lambda d: d[:100], 11, "shorter than"),
    ("magic", lambda d: bytearray(b"MZ\x90\x00") + d[4:], 12, "wrong magic"),
    ("version", lambda d: d[:4] + struct.pack(">H", 9) + d[6:], 13, "version 9"),
    (
        "unknown-section",
        lambda d: _fix_crc(d[:548] + struct.pack(">H", 9) + d[550:]),
        14,
        "unknown type 9",
    ),
    (
        "overrun",
        lambda d: d[: _size_slot(0)] + struct.pack(">Q", 1 << 40) + d[_size_slot(0) + 8 :],
        15,
        "runs into section 1",
    ),
    (
        "overrun-last",
        lambda d: d[: _size_slot(4)] + struct.pack(">Q", 1 << 40) + d[_size_slot(4) + 8 :],
        15,
        "more than the whole file",
    ),
    ("trailing", lambda d: d + b"extra", 15, "after the last section"),
    ("size-mismatch", lambda d: d[:552] + struct.pack(">Q", 5) + d[560:], 16, "header says 5"),
    ("crc", lambda d: d[:1000] + bytes([d[1000] ^ 0xFF]) + d[1001:], 17, "CheckCRC: false"),
]


@pytest.mark.parametrize(("name", "mutate", "code", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_images_give_one_line_and_distinct_codes(image, tmp_path, name, mutate, code, needle):
    bad = _corrupt(image, tmp_path, f"{name}.eif", mutate)
    result = run_cli(["describe-eif", str(bad)])
    assert_one_line_error(result, code, needle)


def test_crc_mismatch_still_reports_checkcrc_false_json(image, tmp_path):
    bad = _corrupt(image, tmp_path, "crc.eif", lambda d: d[:1000] + bytes([d[1000] ^ 1]) + d[1001:])
    result = run_cli(["describe-eif", str(bad), "--json"])
    assert result.exit_code == 17
    assert json.loads(result.stdout)["CheckCRC"] is False


def test_exit_codes_are_distinct_per_eif_problem():
    codes = [c[2] for c in CASES]
    assert len(set(codes)) == 7  # truncated, magic, version, unknown, overrun, mismatch, crc


def test_missing_file_and_directory(tmp_path):
    assert_one_line_error(run_cli(["describe-eif", str(tmp_path / "nope.eif")]), 6, "no such file")
    assert_one_line_error(run_cli(["describe-eif", str(tmp_path)]), 2)


def test_assemble_refuses_half_signing_and_bad_time(image, tmp_path):
    d = image.parent
    base = [
        "eif",
        "assemble",
        "--kernel",
        str(d / "k"),
        "--ramdisk",
        str(d / "r1"),
        "-o",
        str(tmp_path / "x.eif"),
    ]
    assert_one_line_error(run_cli([*base, "--sign-cert", str(d / "k")]), 2, "go together")
    assert_one_line_error(run_cli([*base, "--build-time", "yesterday"]), 3, "rfc 3339")
    assert not (tmp_path / "x.eif").exists()
    assert not list(tmp_path.glob(".x.eif.*"))
