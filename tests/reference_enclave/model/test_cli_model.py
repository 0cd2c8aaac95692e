"""``enclave-audit model`` through the console script."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

KEY = bytes(range(32))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.key"
    path.write_text(KEY.hex())
    return path


def test_encrypt_info_decrypt_run(tmp_path: Path, tiny_gguf: Path, key_file: Path) -> None:
    enc = tmp_path / "tiny.cimf"
    r = run_cli(
        [
            "model",
            "encrypt",
            str(tiny_gguf),
            "-o",
            str(enc),
            "--key-file",
            str(key_file),
            "--model-id",
            "tiny",
            "--context",
            "purpose=test",
            "--chunk-size",
            "8192",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.stderr
    digest = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    info = json.loads(run_cli(["model", "info", str(enc), "--json"]).stdout)
    assert (info["schema"], info["schema_version"]) == ("enclave-audit/model-file-info", 1)
    assert info == json.loads(r.stdout)
    assert info["plaintext_sha256"] == digest and info["model_id"] == "tiny"
    assert info["encryption_context"] == {"purpose": "test"}
    assert info["chunk_count"] == -(-tiny_gguf.stat().st_size // 8192)

    out = tmp_path / "plain.gguf"
    r = run_cli(
        [
            "model",
            "decrypt",
            str(enc),
            "-o",
            str(out),
            "--key-file",
            str(key_file),
            "--sha256",
            digest,
            "--workers",
            "2",
        ]
    )
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes() == tiny_gguf.read_bytes()

    # the same answer from the plain GGUF and from the encrypted file
    answers = []
    for source in (
        ["--gguf", str(tiny_gguf)],
        ["--encrypted", str(enc), "--key-file", str(key_file), "--sha256", digest],
    ):
        r = run_cli(
            ["model", "run", *source, "--prompt", "Hello", "--max-new-tokens", "8", "--json"]
        )
        assert r.exit_code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert (doc["schema"], doc["schema_version"]) == ("enclave-audit/model-run", 1)
        answers.append(doc["token_ids"])
    assert answers[0] == answers[1] and len(answers[0]) > 0
    r = run_cli(
        [
            "model",
            "run",
            "--gguf",
            str(tiny_gguf),
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "8",
            "--system",
            "Be brief.",
        ]
    )
    assert r.exit_code == 0 and r.stdout.strip(), r.stderr


def test_tampered_file_exit_50_and_no_output(
    tmp_path: Path, tiny_gguf: Path, key_file: Path
) -> None:
    enc = tmp_path / "tiny.cimf"
    assert (
        run_cli(
            [
                "model",
                "encrypt",
                str(tiny_gguf),
                "-o",
                str(enc),
                "--key-file",
                str(key_file),
                "--chunk-size",
                "4096",
            ]
        ).exit_code
        == 0
    )
    data = bytearray(enc.read_bytes())
    data[len(data) // 2] ^= 0x04
    enc.write_bytes(bytes(data))
    out = tmp_path / "plain.gguf"
    r = run_cli(["model", "decrypt", str(enc), "-o", str(out), "--key-file", str(key_file)])
    assert_one_line_error(r, 50, "failed authentication")
    assert not out.exists()
    r = run_cli(
        ["model", "run", "--encrypted", str(enc), "--key-file", str(key_file), "--prompt", "hi"]
    )
    assert_one_line_error(r, 50, "chunk")


def test_bad_inputs(tmp_path: Path, tiny_gguf: Path, key_file: Path) -> None:
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("nope")
    r = run_cli(
        ["model", "encrypt", str(tiny_gguf), "-o", str(tmp_path / "x"), "--key-file", str(bad_key)]
    )
    assert_one_line_error(r, 44, "data key")
    r = run_cli(["model", "info", str(tiny_gguf)])
    assert_one_line_error(r, 3, "not an encrypted model file")
    r = run_cli(["model", "info", str(tmp_path / "missing.cimf")])
    assert_one_line_error(r, 6, "no such file")
    enc = tmp_path / "t.cimf"
    run_cli(["model", "encrypt", str(tiny_gguf), "-o", str(enc), "--key-file", str(key_file)])
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(bytes(32))
    r = run_cli(["model", "decrypt", str(enc), "-o", str(tmp_path / "p"), "--key-file", str(wrong)])
    assert_one_line_error(r, 50, "wrong data key")
    r = run_cli(["model", "run", "--gguf", str(enc), "--prompt", "hi"])
    assert_one_line_error(r, 3, "GGUF")
