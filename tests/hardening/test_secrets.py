"""Secrets hygiene: no private key, data key or plaintext prompt in logs, errors or temp files.

A demo-like run on real services: the KMS (a subprocess whose log is kept) hands
out a data key, a model is encrypted with it, a prompt is encrypted through KMS,
and wrong requests produce errors.  Then every log, error message, database and
temp file left behind is grepped for the secrets in raw, hex and base64 form.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import run_cli

from enclave_audit.errors import EnclaveAuditError
from fuzz.faults import ADMIN, _client, cli

PROMPT = b"TOP-SECRET prompt: what is the launch code 7f3a9c?"


def _forms(secret: bytes) -> list[bytes]:
    forms = [secret, secret.hex().encode(), base64.b64encode(secret)]
    return [f for f in forms if len(f) >= 16]


def _leaks(haystack: bytes, secrets: dict[str, bytes]) -> list[str]:
    return [name for name, s in secrets.items() for f in _forms(s) if f in haystack]


def test_no_secret_in_logs_errors_or_temp_files(tmp_path: Path) -> None:
    from enclave_runtime.model_format import decrypt_model
    from reference_enclave.model_files import encrypt_model

    temp_before = set(os.listdir(tempfile.gettempdir()))
    config = tmp_path / "kms.json"
    config.write_text(json.dumps({"account_id": "111122223333", "credentials": [ADMIN]}))
    log = tmp_path / "kms.log"
    with log.open("wb") as log_fh:
        proc = subprocess.Popen(
            [*cli(), "kms", "serve", "--db", str(tmp_path / "kms.db"), "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=log_fh,
        )
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        errors: list[str] = []
        try:
            client = _client(url)
            key_id = client.create_key()["KeyMetadata"]["KeyId"]
            data_key = client.generate_data_key(KeyId=key_id, KeySpec="AES_256")["Plaintext"]
            sealed = client.encrypt(
                KeyId=key_id, Plaintext=PROMPT, EncryptionContext={"purpose": "prompt"}
            )["CiphertextBlob"]
            for call in (
                lambda: client.decrypt(CiphertextBlob=sealed, EncryptionContext={"x": "y"}),
                lambda: client.decrypt(CiphertextBlob=sealed[:-1] + b"\0"),
                lambda: client.encrypt(KeyId="nope", Plaintext=PROMPT),
            ):
                with pytest.raises(Exception) as refused:
                    call()
                errors.append(str(refused.value))
            assert (
                client.decrypt(CiphertextBlob=sealed, EncryptionContext={"purpose": "prompt"})[
                    "Plaintext"
                ]
                == PROMPT
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    plain, model = tmp_path / "weights.bin", tmp_path / "weights.cimf"
    plain.write_bytes(PROMPT * 200)
    encrypt_model(plain, model, data_key, chunk_size=4096)
    with pytest.raises(EnclaveAuditError) as wrong:
        decrypt_model(model.open("rb"), bytes(32))
    errors.append(wrong.value.diagnostic())
    with pytest.raises(EnclaveAuditError) as tampered:
        decrypt_model(__import__("io").BytesIO(model.read_bytes()[:-1]), data_key)
    errors.append(tampered.value.diagnostic())
    plain.unlink()

    keys = tmp_path / "keys" / "auditor"
    result = run_cli(["keys", "generate", "-o", str(keys)])
    assert result.exit_code == 0, result.stderr
    private_key = keys.with_suffix(".key")
    assert stat.S_IMODE(private_key.stat().st_mode) == 0o600
    errors += [result.stdout, result.stderr]

    secrets = {
        "data key": data_key,
        "prompt": PROMPT,
        "secret access key": ADMIN["secret_access_key"].encode(),
        "auditor private key": private_key.read_bytes().split(b"-----")[2].strip()[:64],
    }
    assert not _leaks("\n".join(errors).encode(), secrets), errors
    assert not _leaks(log.read_bytes(), secrets), log.read_text()[-2000:]
    for path in tmp_path.rglob("*"):
        if path.is_file() and path not in (private_key, config) and path.suffix != ".cimf":
            assert not _leaks(path.read_bytes(), secrets), path
    assert PROMPT not in model.read_bytes() and data_key not in model.read_bytes()
    for name in set(os.listdir(tempfile.gettempdir())) - temp_before:
        path = Path(tempfile.gettempdir()) / name
        if path.is_file():
            assert not _leaks(path.read_bytes(), secrets), path
