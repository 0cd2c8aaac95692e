"""``enclave-audit client ask`` through the console script against the host stack."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import assert_one_line_error, run_cli
from tests.reference_enclave.runtime.stack import Stack


def _files(stack: Stack, tmp: Path, *, pcrs: dict[str, str] | None = None) -> tuple[Path, Path]:
    expect = tmp / "expected.json"
    data = {"Measurements": stack.expected.to_nitro()}
    if pcrs is not None:
        data["Measurements"].update(pcrs)
    expect.write_text(json.dumps(data))
    root = tmp / "root.pem"
    root.write_bytes(stack.ca.root_pem())
    return expect, root


def test_ask_prints_the_answer(stack: Stack, tmp_path: Path) -> None:
    expect, root = _files(stack, tmp_path)
    result = run_cli(
        [
            "client",
            "ask",
            "--endpoint",
            stack.enclave.url,
            "--expect",
            str(expect),
            "--root",
            str(root),
            "--max-tokens",
            "4",
            "--json",
            "Hello there",
        ]
    )
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert (answer["schema"], answer["schema_version"]) == ("enclave-audit/client-answer", 1)
    assert answer["tokens"] >= 1 and "PCR16" in answer["verified_pcrs"]


def test_unexpected_measurements_exit_52(stack: Stack, tmp_path: Path) -> None:
    expect, root = _files(stack, tmp_path, pcrs={"PCR0": "ab" * 48})
    result = run_cli(
        [
            "client",
            "ask",
            "--endpoint",
            stack.enclave.url,
            "--expect",
            str(expect),
            "--root",
            str(root),
            "hi",
        ]
    )
    assert_one_line_error(result, 52, "refused", "PCR0")


def test_aws_root_refuses_simulated_enclave(stack: Stack, tmp_path: Path) -> None:
    expect, _ = _files(stack, tmp_path)
    result = run_cli(
        ["client", "ask", "--endpoint", stack.enclave.url, "--expect", str(expect), "hi"]
    )
    assert_one_line_error(result, 52, "refused")


def test_expectation_without_model_and_dead_endpoint(stack: Stack, tmp_path: Path) -> None:
    expect = tmp_path / "no-model.json"
    expect.write_text(json.dumps({"Measurements": {"PCR0": stack.expected.hex(0)}}))
    result = run_cli(
        ["client", "ask", "--endpoint", stack.enclave.url, "--expect", str(expect), "hi"]
    )
    assert_one_line_error(result, 3, "PCR16")
    full, root = _files(stack, tmp_path)
    dead = run_cli(
        [
            "client",
            "ask",
            "--endpoint",
            "http://127.0.0.1:9",
            "--expect",
            str(full),
            "--root",
            str(root),
            "hi",
        ]
    )
    assert_one_line_error(dead, 53, "127.0.0.1:9")
