"""Helpers for the reference KMS tests: callers, policies, simulated attestation.

Attestation documents come from the project's simulated NSM
(:mod:`reference_enclave.nsm`): a P-384 simulation CA and ES384 COSE_Sign1 documents in
AWS's exact layout.  The KMS trusts that CA's root (as it would trust AWS Root-G1).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from enclave_runtime.nsm import protocol
from reference_enclave.kms import Credential, RunningKms, kms_client
from reference_enclave.nsm.sim_ca import SimulationCa
from reference_enclave.nsm.simulator import SimulatedNsm

ACCOUNT = "111122223333"
PCR0 = bytes.fromhex("a1" * 48)
PCR1 = bytes.fromhex("b2" * 48)
PCR2 = bytes.fromhex("c3" * 48)
IMAGE_PCRS = {0: PCR0, 1: PCR1, 2: PCR2}

ADMIN = Credential(
    access_key_id="AKIAADMIN00000000001",
    secret_access_key="admin-secret-" + "a" * 30,
    principal=f"arn:aws:iam::{ACCOUNT}:user/admin",
)
ENCLAVE = Credential(
    access_key_id="AKIAENCLAVE000000001",
    secret_access_key="enclave-secret-" + "e" * 30,
    principal=f"arn:aws:sts::{ACCOUNT}:assumed-role/enclave-instance-role/i-0123456789abcdef0",
)
OUTSIDER = Credential(
    access_key_id="AKIAOUTSIDER00000001",
    secret_access_key="outsider-secret-" + "o" * 30,
    principal="arn:aws:iam::444455556666:user/mallory",
)
CALLERS = (ADMIN, ENCLAVE, OUTSIDER)


def attested_policy(pcr0: bytes = PCR0, *, extra: list[dict[str, Any]] | None = None) -> str:
    """The spec's recommended policy: admin manages, enclave decrypts only when attested."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "Admin",
            "Effect": "Allow",
            "Principal": {"AWS": ADMIN.principal},
            "Action": "kms:*",
            "Resource": "*",
        },
        {
            "Sid": "EnclaveDecrypt",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/enclave-instance-role"},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": "*",
            "Condition": {
                "StringEqualsIgnoreCase": {
                    "kms:RecipientAttestation:ImageSha384": pcr0.hex(),
                    "kms:RecipientAttestation:PCR1": PCR1.hex(),
                }
            },
        },
        {
            "Sid": "DenyUnattested",
            "Effect": "Deny",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/enclave-instance-role"},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": "*",
            "Condition": {
                "StringNotEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": pcr0.hex()}
            },
        },
    ]
    statements.extend(extra or [])
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def spki(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def attest(
    ca: SimulationCa,
    public_key: bytes | None,
    *,
    pcrs: dict[int, bytes] | None = None,
    at: dt.datetime | None = None,
) -> bytes:
    """An attestation document from a simulated NSM (optionally with a shifted clock)."""
    when = at
    nsm = SimulatedNsm(
        IMAGE_PCRS if pcrs is None else pcrs,
        ca,
        now=(lambda: when) if when is not None else None,
    )
    response = protocol.decode_response(
        nsm.handle(protocol.attestation(public_key=public_key)), "Attestation"
    )
    document = response["document"]
    assert isinstance(document, bytes)
    return document


@dataclass
class KmsHarness:
    running: RunningKms
    db: Path

    def client(self, cred: Credential = ADMIN) -> Any:
        return kms_client(
            self.running.url, cred.access_key_id, cred.secret_access_key, max_attempts=1
        )


StartKms = Callable[..., KmsHarness]
