"""End to end on one machine: the gate writes the reference KMS's key policy through boto3,
and only then does the KMS release the data key to the audited image's attested enclave."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from enclave_audit.errors import KmsRefused
from enclave_runtime.nsm import protocol
from reference_enclave.kms import Credential, decrypt_for_recipient, kms_client, start_kms
from reference_enclave.nsm.sim_ca import SimulationCa
from reference_enclave.nsm.simulator import SimulatedNsm
from verifier.nitro.roots import TrustRoot

ACCOUNT = "111122223333"
ADMIN = Credential(
    access_key_id="AKIAGATEADMIN0000001",
    secret_access_key="gate-admin-secret-" + "g" * 24,
    principal=f"arn:aws:iam::{ACCOUNT}:user/release-admin",
)
ENCLAVE = Credential(
    access_key_id="AKIAGATEENCLAVE00001",
    secret_access_key="gate-enclave-secret-" + "e" * 24,
    principal=f"arn:aws:sts::{ACCOUNT}:assumed-role/enclave-parent/i-0123456789abcdef0",
)


@pytest.fixture
def kms(tmp_path: Path):  # type: ignore[no-untyped-def]
    ca = SimulationCa.create()
    running = start_kms(
        tmp_path / "kms.db",
        roots=[TrustRoot.from_pem(ca.root_pem(), name="simulation root")],
        credentials=[ADMIN, ENCLAVE],
    )
    yield running, ca
    running.stop()


def _document(ca: SimulationCa, pcrs: dict[int, bytes], key: rsa.RSAPrivateKey) -> bytes:
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    nsm = SimulatedNsm(pcrs, ca)
    response = protocol.decode_response(
        nsm.handle(protocol.attestation(public_key=spki)), "Attestation"
    )
    document = response["document"]
    assert isinstance(document, bytes)
    return document


def test_gate_apply_changes_kms_release_only_with_k_auditors(world, kms, tmp_path):
    running, ca = kms
    admin = kms_client(running.url, ADMIN.access_key_id, ADMIN.secret_access_key)
    enclave = kms_client(running.url, ENCLAVE.access_key_id, ENCLAVE.secret_access_key)
    policy = json.loads(world.policy.read_text())
    policy["Statement"][0]["Principal"] = {"AWS": ADMIN.principal}
    policy["Statement"][0]["Action"] = "kms:*"
    world.policy.write_text(json.dumps(policy, indent=2))
    key_id = admin.create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
    data_key = os.urandom(32)
    blob = admin.encrypt(KeyId=key_id, Plaintext=data_key)["CiphertextBlob"]

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    image_pcrs = {i: world.pcrs[i] for i in (0, 1, 2)}
    document = _document(ca, image_pcrs, rsa_key)
    with pytest.raises(KmsRefused):
        decrypt_for_recipient(enclave, blob, document, rsa_key)

    env = {
        "AWS_ACCESS_KEY_ID": ADMIN.access_key_id,
        "AWS_SECRET_ACCESS_KEY": ADMIN.secret_access_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    base = [
        "gate",
        "--policy",
        str(world.policy),
        "--measurements",
        str(world.measurements),
        "--trust",
        str(world.trust),
        "--eif",
        str(world.eif),
        "-o",
        str(tmp_path / "new.json"),
        "--apply",
        "--kms-endpoint",
        running.url,
        "--key-id",
        key_id,
        "--now",
        "2026-11-23T12:00:00Z",
    ]
    before = admin.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]

    # refusals leave the KMS untouched: one VSA; a tampered VSA; a VSA for another image
    refused = run_cli([*base, "--vsa", str(world.vsa("alice"))], env=env)
    assert_one_line_error(refused, 1, "only 1 of the required 2")
    from enclave_audit.model.digests import Digest, HashAlgorithm

    other = world.vsa(
        "bob",
        name="bob-other.json",
        digest=Digest(algorithm=HashAlgorithm.SHA256, value=b"\x07" * 32),
    )
    refused = run_cli([*base, "--vsa", str(world.vsa("alice")), "--vsa", str(other)], env=env)
    assert refused.exit_code == 1
    assert admin.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"] == before
    with pytest.raises(KmsRefused):
        decrypt_for_recipient(enclave, blob, document, rsa_key)

    # two agreeing auditors: the policy is written, read back, and the KMS releases the key
    approved = run_cli(
        [*base, "--vsa", str(world.vsa("alice")), "--vsa", str(world.vsa("bob"))], env=env
    )
    assert approved.exit_code == 0, approved.stderr
    live = json.loads(admin.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert live == json.loads((tmp_path / "new.json").read_text())
    assert decrypt_for_recipient(enclave, blob, document, rsa_key) == data_key

    # another image (one PCR0 byte changed) is refused by the explicit Deny
    changed = dict(image_pcrs)
    changed[0] = bytes([image_pcrs[0][0] ^ 1]) + image_pcrs[0][1:]
    with pytest.raises(KmsRefused):
        decrypt_for_recipient(enclave, blob, _document(ca, changed, rsa_key), rsa_key)
    # and no plaintext without an attestation document at all
    with pytest.raises(Exception, match="AccessDenied"):
        enclave.decrypt(CiphertextBlob=blob)

    # a second apply against a policy that changed underneath is refused
    drifted = run_cli(
        [*base, "--vsa", str(world.vsa("alice")), "--vsa", str(world.vsa("bob"))], env=env
    )
    assert_one_line_error(drifted, 62, "changed underneath")
