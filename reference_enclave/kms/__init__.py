"""The reference KMS: an AWS-KMS-compatible service with attested key release.

Public API::

    start_kms(db_path, *, host="127.0.0.1", port=0, roots=(), credentials=(), max_age=None,
              allow_debug=False, config=None, clock=time.time) -> RunningKms  (.url, .stop())
    kms_client(url, access_key, secret_key, region="us-east-1") -> boto3 KMS client
    decrypt_for_recipient(client, blob, attestation_document, private_key, ...) -> bytes
    generate_data_key_for_recipient(client, key_id, attestation_document, private_key, ...)
"""

from __future__ import annotations

from reference_enclave.kms.client import (
    decrypt_for_recipient,
    generate_data_key_for_recipient,
    kms_client,
    recipient_param,
)
from reference_enclave.kms.config import Credential, KmsConfig, load_config
from reference_enclave.kms.server import RunningKms, start_kms

__all__ = [
    "Credential",
    "KmsConfig",
    "RunningKms",
    "decrypt_for_recipient",
    "generate_data_key_for_recipient",
    "kms_client",
    "load_config",
    "recipient_param",
    "start_kms",
]
