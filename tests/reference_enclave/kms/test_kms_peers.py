"""The reference KMS as AWS's own tools drive it: the awscli and the AWS Encryption SDK.

The awscli runs as a user runs it (a subprocess, credentials and endpoint from the
environment, ``AWS_ENDPOINT_URL_KMS``) through the alias and key-lifecycle operations:
CreateAlias, ListAliases (with and without a key), DeleteAlias, ScheduleKeyDeletion,
and a Decrypt of a tampered ciphertext, whose InvalidCiphertextException must say what
is wrong.  The AWS Encryption SDK for Python encrypts and decrypts through the same
endpoint with a KMS keyring (GenerateDataKey, Encrypt, Decrypt under its own message
format), also by an alias.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import need
from kms_testlib import ACCOUNT, ADMIN, KmsHarness

REGION = "us-east-1"


def _aws_env(kms: KmsHarness, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=ADMIN.access_key_id,
        AWS_SECRET_ACCESS_KEY=ADMIN.secret_access_key,
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL_KMS=kms.running.url,
        AWS_CONFIG_FILE=str(tmp_path / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws-credentials"),
        AWS_MAX_ATTEMPTS="1",
        AWS_PAGER="",
    )
    return env


def _aws(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("aws")
    need(exe.exists(), "awscli (pip, dev extra)")
    proc = subprocess.run(
        [str(exe), "kms", *args, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def test_awscli_alias_and_deletion_lifecycle(kms: KmsHarness, tmp_path: Path) -> None:
    env = _aws_env(kms, tmp_path)
    key = _json(_aws(env, "create-key", "--description", "awscli"))["KeyMetadata"]
    other = _json(_aws(env, "create-key"))["KeyMetadata"]
    _aws(env, "create-alias", "--alias-name", "alias/models", "--target-key-id", key["KeyId"])
    _aws(env, "create-alias", "--alias-name", "alias/other", "--target-key-id", other["Arn"])
    aliases = _json(_aws(env, "list-aliases"))["Aliases"]
    assert [a["AliasName"] for a in aliases] == ["alias/models", "alias/other"]
    first = aliases[0]
    assert first["TargetKeyId"] == key["KeyId"]
    assert first["AliasArn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/models"
    only = _json(_aws(env, "list-aliases", "--key-id", other["KeyId"]))["Aliases"]
    assert [a["AliasName"] for a in only] == ["alias/other"]
    # the alias works wherever a key id does
    described = _json(_aws(env, "describe-key", "--key-id", "alias/models"))["KeyMetadata"]
    assert described["KeyId"] == key["KeyId"]
    # an existing alias is refused, as AWS does
    again = _aws(
        env, "create-alias", "--alias-name", "alias/models", "--target-key-id", other["KeyId"],
        ok=False,
    )  # fmt: skip
    assert again.returncode != 0 and "AlreadyExistsException" in again.stderr
    _aws(env, "delete-alias", "--alias-name", "alias/models")
    gone = _aws(env, "describe-key", "--key-id", "alias/models", ok=False)
    assert gone.returncode != 0 and "NotFoundException" in gone.stderr
    assert [a["AliasName"] for a in _json(_aws(env, "list-aliases"))["Aliases"]] == ["alias/other"]
    scheduled = _json(
        _aws(
            env, "schedule-key-deletion", "--key-id", key["KeyId"], "--pending-window-in-days", "7"
        )
    )
    assert scheduled["KeyState"] == "PendingDeletion" and scheduled["PendingWindowInDays"] == 7
    assert scheduled["KeyId"] == key["Arn"]
    state = _json(_aws(env, "describe-key", "--key-id", key["KeyId"]))["KeyMetadata"]
    assert state["KeyState"] == "PendingDeletion" and state["Enabled"] is False
    refused = _aws(env, "encrypt", "--key-id", key["KeyId"], "--plaintext", "aGVsbG8=", ok=False)
    assert refused.returncode != 0 and "KMSInvalidStateException" in refused.stderr


def test_awscli_invalid_ciphertext_says_why(kms: KmsHarness, tmp_path: Path) -> None:
    env = _aws_env(kms, tmp_path)
    key = _json(_aws(env, "create-key"))["KeyMetadata"]
    blob = _json(_aws(env, "encrypt", "--key-id", key["KeyId"], "--plaintext", "aGVsbG8="))[
        "CiphertextBlob"
    ]
    import base64

    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(bytes(raw))
    proc = _aws(env, "decrypt", "--ciphertext-blob", f"fileb://{tampered}", ok=False)
    assert proc.returncode != 0
    line = next(ln for ln in proc.stderr.splitlines() if "InvalidCiphertextException" in ln)
    message = line.split("operation:", 1)[1].strip()
    assert message and "modified" in message, line


def test_encryption_sdk_round_trip(
    kms: KmsHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    esdk = pytest.importorskip("aws_encryption_sdk", reason="aws-encryption-sdk (dev extra)")
    import botocore.session

    for name, value in _aws_env(kms, tmp_path).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    client = kms.client()
    key = client.create_key()["KeyMetadata"]
    client.create_alias(AliasName="alias/esdk", TargetKeyId=key["KeyId"])
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/esdk"
    sdk = esdk.EncryptionSDKClient(
        commitment_policy=esdk.CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    for key_id in (key["Arn"], alias_arn):
        provider = esdk.StrictAwsKmsMasterKeyProvider(
            key_ids=[key_id], botocore_session=botocore.session.Session()
        )
        plaintext = os.urandom(3000)
        ciphertext, header = sdk.encrypt(
            source=plaintext, key_provider=provider, encryption_context={"model": "smollm2"}
        )
        assert header.encryption_context["model"] == "smollm2"
        decrypt_provider = esdk.StrictAwsKmsMasterKeyProvider(
            key_ids=[key["Arn"]], botocore_session=botocore.session.Session()
        )
        decrypted, _ = sdk.decrypt(source=ciphertext, key_provider=decrypt_provider)
        assert decrypted == plaintext
