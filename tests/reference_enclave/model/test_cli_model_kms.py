"""``model encrypt --kms``: the data key from the reference KMS, wrapped in the header."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli

from enclave_audit.errors import KmsRefused
from enclave_runtime import model_format as mf
from reference_enclave import model_files as files
from reference_enclave.kms import Credential, RunningKms, kms_client, start_kms
from reference_enclave.kms.client import client_error

PUBLISHER = Credential(
    access_key_id="AKIAPUBLISHER0000001",
    secret_access_key="publisher-secret-" + "p" * 30,
    principal="arn:aws:iam::111122223333:user/model-publisher",
)


@pytest.fixture
def kms(tmp_path: Path) -> Iterator[RunningKms]:
    server = start_kms(tmp_path / "kms.db", credentials=[PUBLISHER])
    yield server
    server.stop()


def test_encrypt_with_kms_data_key(tmp_path: Path, tiny_gguf: Path, kms: RunningKms) -> None:
    client = kms_client(kms.url, PUBLISHER.access_key_id, PUBLISHER.secret_access_key)
    key_arn = client.create_key(Description="models")["KeyMetadata"]["Arn"]
    enc = tmp_path / "tiny.cimf"
    env = {
        "AWS_ACCESS_KEY_ID": PUBLISHER.access_key_id,
        "AWS_SECRET_ACCESS_KEY": PUBLISHER.secret_access_key,
    }
    r = run_cli(
        [
            "model",
            "encrypt",
            str(tiny_gguf),
            "-o",
            str(enc),
            "--kms",
            kms.url,
            "--key-id",
            key_arn,
            "--context",
            "model=tiny",
            "--json",
        ],
        env=env,
    )
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kms_key_id"] == key_arn and info["wrapped_key_length"] > 0
    assert info["encryption_context"] == {"model": "tiny"}

    header = mf.read_header(enc.open("rb"))
    # the enclave's side (without the Recipient, which the runtime adds): Decrypt the blob
    # with the header's context, then the model
    data_key = client.decrypt(
        CiphertextBlob=header.wrapped_key,
        KeyId=header.kms_key_id,
        EncryptionContext=dict(header.encryption_context),
    )["Plaintext"]
    assert bytes(files.decrypt_model_file(enc, data_key, workers=1)) == tiny_gguf.read_bytes()
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as err:
        client.decrypt(CiphertextBlob=header.wrapped_key, EncryptionContext={"model": "other"})
    assert isinstance(client_error(err.value, "Decrypt"), KmsRefused)


def test_kms_and_key_file_are_exclusive(tmp_path: Path, tiny_gguf: Path) -> None:
    r = run_cli(["model", "encrypt", str(tiny_gguf), "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "exactly one" in r.stderr
