"""boto3 clients for the reference KMS, and the enclave-side Recipient helpers."""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives.asymmetric import rsa

from enclave_audit.errors import KmsRefused, ServiceUnavailable
from enclave_runtime.cms import open_enveloped_data
from reference_enclave.kms.recipient import KEY_ENCRYPTION_ALGORITHM

_SESSION_LOCK = threading.Lock()


@functools.cache
def _shared_session() -> Any:
    return boto3.session.Session()


def kms_client(
    url: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    *,
    session_token: str | None = None,
    max_attempts: int = 2,
    timeout: float = 30.0,
) -> Any:
    """A real boto3 KMS client pointed at ``url`` (SigV4 with the given key).

    Clients share one botocore session, so the service model is loaded once per process.
    """
    with _SESSION_LOCK:
        return _shared_session().client(
            "kms",
            endpoint_url=url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=session_token,
            config=Config(
                retries={"max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=timeout,
                read_timeout=timeout,
            ),
        )


def recipient_param(attestation_document: bytes) -> dict[str, Any]:
    """The ``Recipient`` request member for an attestation document."""
    return {
        "KeyEncryptionAlgorithm": KEY_ENCRYPTION_ALGORITHM,
        "AttestationDocument": attestation_document,
    }


def client_error(
    exc: ClientError | BotoCoreError, operation: str
) -> KmsRefused | ServiceUnavailable:
    """Turn a botocore failure into the project's error (one line, AWS's code kept)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "Unknown")
        message = " ".join(str(error.get("Message", "")).split())
        return KmsRefused(f"kms {operation}: {code}: {message}")
    return ServiceUnavailable(f"kms {operation}: {exc}")


def decrypt_for_recipient(
    client: Any,
    ciphertext_blob: bytes,
    attestation_document: bytes,
    private_key: rsa.RSAPrivateKey,
    *,
    encryption_context: Mapping[str, str] | None = None,
    key_id: str | None = None,
) -> bytes:
    """``Decrypt`` with a Recipient and open the CiphertextForRecipient inside the enclave."""
    kwargs: dict[str, Any] = {
        "CiphertextBlob": ciphertext_blob,
        "Recipient": recipient_param(attestation_document),
    }
    if encryption_context:
        kwargs["EncryptionContext"] = dict(encryption_context)
    if key_id:
        kwargs["KeyId"] = key_id
    try:
        response = client.decrypt(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise client_error(exc, "Decrypt") from None
    return _open(response, private_key, "Decrypt")


def generate_data_key_for_recipient(
    client: Any,
    key_id: str,
    attestation_document: bytes,
    private_key: rsa.RSAPrivateKey,
    *,
    encryption_context: Mapping[str, str] | None = None,
    key_spec: str = "AES_256",
) -> tuple[bytes, bytes]:
    """``GenerateDataKey`` with a Recipient: (plaintext data key, CiphertextBlob)."""
    kwargs: dict[str, Any] = {
        "KeyId": key_id,
        "KeySpec": key_spec,
        "Recipient": recipient_param(attestation_document),
    }
    if encryption_context:
        kwargs["EncryptionContext"] = dict(encryption_context)
    try:
        response = client.generate_data_key(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise client_error(exc, "GenerateDataKey") from None
    return _open(response, private_key, "GenerateDataKey"), bytes(response["CiphertextBlob"])


def _open(response: Mapping[str, Any], private_key: rsa.RSAPrivateKey, operation: str) -> bytes:
    if response.get("Plaintext"):
        raise KmsRefused(
            f"kms {operation}: the response carries Plaintext although a Recipient was sent"
        )
    envelope = response.get("CiphertextForRecipient")
    if not isinstance(envelope, bytes | bytearray) or not envelope:
        raise KmsRefused(f"kms {operation}: the response has no CiphertextForRecipient")
    return open_enveloped_data(bytes(envelope), private_key)
