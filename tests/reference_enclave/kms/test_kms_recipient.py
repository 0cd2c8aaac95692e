"""Attested key release: Recipient requests, key-policy conditions and refusals."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa
from kms_testlib import (
    ACCOUNT,
    ADMIN,
    ENCLAVE,
    PCR0,
    PCR1,
    PCR2,
    KmsHarness,
    StartKms,
    attest,
    attested_policy,
    spki,
)

from enclave_audit.errors import KmsRefused
from enclave_runtime.cms import open_enveloped_data, parse_enveloped_data
from reference_enclave.kms import (
    decrypt_for_recipient,
    generate_data_key_for_recipient,
    recipient_param,
)
from reference_enclave.nsm.sim_ca import SimulationCa


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _message(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Message"])


def _attested_key(kms: KmsHarness, policy: str | None = None) -> tuple[str, bytes]:
    admin = kms.client(ADMIN)
    key_id = admin.create_key(Policy=policy or attested_policy())["KeyMetadata"]["KeyId"]
    blob = admin.encrypt(KeyId=key_id, Plaintext=b"model data key", EncryptionContext={"m": "1"})
    return key_id, blob["CiphertextBlob"]


def _decrypt(kms: KmsHarness, blob: bytes, document: bytes | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"CiphertextBlob": blob, "EncryptionContext": {"m": "1"}}
    if document is not None:
        kwargs["Recipient"] = recipient_param(document)
    return dict(kms.client(ENCLAVE).decrypt(**kwargs))


def test_decrypt_with_recipient_returns_cms_only(
    kms: KmsHarness, document: bytes, enclave_key: rsa.RSAPrivateKey
) -> None:
    _, blob = _attested_key(kms)
    answer = _decrypt(kms, blob, document)
    assert not answer.get("Plaintext")
    envelope = answer["CiphertextForRecipient"]
    assert envelope[:2] == b"\x30\x80"  # BER, indefinite length, as AWS sends it
    assert len(parse_enveloped_data(envelope).encrypted_key) == 256
    assert open_enveloped_data(envelope, enclave_key) == b"model data key"
    events = kms.running.store.events()
    assert events[-1]["eventName"] == "Decrypt" and events[-1]["errorCode"] is None
    recipient = events[-1]["additionalEventData"]["recipient"]
    assert recipient["attestationDocumentEnclaveImageDigest"] == PCR0.hex()
    assert recipient["attestationDocumentModuleId"].startswith("i-")


def test_enclave_helpers_round_trip(
    kms: KmsHarness, document: bytes, enclave_key: rsa.RSAPrivateKey
) -> None:
    key_id, blob = _attested_key(kms)
    client = kms.client(ENCLAVE)
    assert (
        decrypt_for_recipient(client, blob, document, enclave_key, encryption_context={"m": "1"})
        == b"model data key"
    )
    data_key, wrapped = generate_data_key_for_recipient(
        client, key_id, document, enclave_key, encryption_context={"m": "1"}
    )
    assert len(data_key) == 32
    # the wrapped copy decrypts (attested) to the same key
    assert (
        decrypt_for_recipient(client, wrapped, document, enclave_key, encryption_context={"m": "1"})
        == data_key
    )
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Exception, match="does not decrypt with this private key"):
        decrypt_for_recipient(client, blob, document, other_key, encryption_context={"m": "1"})


def test_generate_random_with_recipient(
    kms: KmsHarness, document: bytes, enclave_key: rsa.RSAPrivateKey
) -> None:
    answer = kms.client(ENCLAVE).generate_random(
        NumberOfBytes=32, Recipient=recipient_param(document)
    )
    assert not answer.get("Plaintext")
    assert len(open_enveloped_data(answer["CiphertextForRecipient"], enclave_key)) == 32


def test_missing_attestation_is_denied(kms: KmsHarness) -> None:
    key_id, blob = _attested_key(kms)
    with pytest.raises(ClientError) as exc:
        _decrypt(kms, blob, None)
    assert _code(exc) == "AccessDeniedException"
    assert _message(exc) == (
        f"User: {ENCLAVE.principal} is not authorized to perform: kms:Decrypt on resource: "
        f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key_id} "
        "with an explicit deny in a resource-based policy"
    )
    with pytest.raises(ClientError) as gdk:
        kms.client(ENCLAVE).generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert _code(gdk) == "AccessDeniedException"


def test_missing_attestation_without_deny_is_implicitly_denied(kms: KmsHarness) -> None:
    policy = json.loads(attested_policy())
    policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] != "DenyUnattested"]
    _, blob = _attested_key(kms, json.dumps(policy))
    with pytest.raises(ClientError) as exc:
        _decrypt(kms, blob, None)
    assert _code(exc) == "AccessDeniedException"
    assert "because no resource-based policy allows the kms:Decrypt action" in _message(exc)


def test_wrong_pcr0_is_denied(
    kms: KmsHarness, sim_ca: SimulationCa, enclave_key: rsa.RSAPrivateKey
) -> None:
    _, blob = _attested_key(kms)
    other_image = attest(sim_ca, spki(enclave_key), pcrs={0: bytes([0x5A]) * 48, 1: PCR1, 2: PCR2})
    with pytest.raises(ClientError) as exc:
        _decrypt(kms, blob, other_image)
    assert _code(exc) == "AccessDeniedException"
    assert "explicit deny" in _message(exc)


def test_wrong_pcr1_is_not_allowed(
    kms: KmsHarness, sim_ca: SimulationCa, enclave_key: rsa.RSAPrivateKey
) -> None:
    _, blob = _attested_key(kms)
    doc = attest(sim_ca, spki(enclave_key), pcrs={0: PCR0, 1: bytes([7]) * 48, 2: PCR2})
    with pytest.raises(ClientError) as exc:
        _decrypt(kms, blob, doc)
    assert _code(exc) == "AccessDeniedException"
    assert "no resource-based policy allows" in _message(exc)


def test_uppercase_policy_values_match_ignore_case(
    kms: KmsHarness, document: bytes, enclave_key: rsa.RSAPrivateKey
) -> None:
    upper = attested_policy().replace(PCR0.hex(), PCR0.hex().upper())
    _, blob = _attested_key(kms, upper)
    answer = _decrypt(kms, blob, document)
    assert open_enveloped_data(answer["CiphertextForRecipient"], enclave_key) == b"model data key"
    # ... but StringEquals is case-sensitive: the same values no longer allow
    strict = upper.replace('"StringEqualsIgnoreCase"', '"StringEquals"')
    _, blob2 = _attested_key(kms, strict)
    with pytest.raises(ClientError) as exc:
        _decrypt(kms, blob2, document)
    assert _code(exc) == "AccessDeniedException"


def test_allow_shadowed_by_explicit_deny(kms: KmsHarness, document: bytes) -> None:
    deny_all = {
        "Sid": "Freeze",
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": "kms:Decrypt",
        "Resource": "*",
    }
    _, blob = _attested_key(kms, attested_policy(extra=[deny_all]))
    with pytest.raises(ClientError) as exc:
        _decrypt(kms, blob, document)
    assert _code(exc) == "AccessDeniedException"
    assert "with an explicit deny in a resource-based policy" in _message(exc)


def test_document_from_another_root_is_refused(
    kms: KmsHarness, other_ca: SimulationCa, enclave_key: rsa.RSAPrivateKey
) -> None:
    _, blob = _attested_key(kms)
    forged = attest(other_ca, spki(enclave_key))
    with pytest.raises(ClientError) as exc:
        _decrypt(kms, blob, forged)
    assert _code(exc) == "ValidationException"
    assert "attestation document is not valid" in _message(exc)


def test_expired_document_is_refused(
    kms: KmsHarness, sim_ca: SimulationCa, enclave_key: rsa.RSAPrivateKey
) -> None:
    _, blob = _attested_key(kms)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=4)
    expired = attest(sim_ca, spki(enclave_key), at=old)
    with pytest.raises(ClientError) as exc:
        _decrypt(kms, blob, expired)
    assert _code(exc) == "ValidationException"
    assert "attestation document is not valid" in _message(exc)


def test_stale_document_is_refused_by_max_age(
    kms: KmsHarness, sim_ca: SimulationCa, enclave_key: rsa.RSAPrivateKey
) -> None:
    _, blob = _attested_key(kms)
    stale = attest(sim_ca, spki(enclave_key), at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
    with pytest.raises(ClientError) as exc:
        _decrypt(kms, blob, stale)
    assert _code(exc) == "ValidationException"
    assert "age" in _message(exc).lower()


def test_real_aws_document_is_expired_now(kms: KmsHarness, nitro_fixtures: Any) -> None:
    """A genuine AWS document verifies to the pinned AWS root but its chain expired long ago."""
    _, blob = _attested_key(kms)
    real = (
        nitro_fixtures / "attestation" / "evervault_2022-10-13_prod_signed-eif.cbor"
    ).read_bytes()
    with pytest.raises(ClientError) as exc:
        _decrypt(kms, blob, real)
    assert _code(exc) == "ValidationException"
    assert "not valid" in _message(exc)


def test_document_without_public_key_is_refused(kms: KmsHarness, sim_ca: SimulationCa) -> None:
    _, blob = _attested_key(kms)
    with pytest.raises(ClientError) as exc:
        _decrypt(kms, blob, attest(sim_ca, None))
    assert _code(exc) == "ValidationException"
    assert "public key" in _message(exc)


def test_small_or_non_rsa_public_key_is_refused(kms: KmsHarness, sim_ca: SimulationCa) -> None:
    _, blob = _attested_key(kms)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ClientError) as exc:
        _decrypt(kms, blob, attest(sim_ca, spki(small)))
    assert _code(exc) == "ValidationException"
    assert "2048" in _message(exc)


def test_debug_document_needs_allow_debug(
    start: StartKms, sim_ca: SimulationCa, enclave_key: rsa.RSAPrivateKey
) -> None:
    zeros = {0: bytes(48), 1: bytes(48), 2: bytes(48)}
    debug_doc = attest(sim_ca, spki(enclave_key), pcrs=zeros)
    policy = attested_policy(pcr0=bytes(48)).replace(PCR1.hex(), bytes(48).hex())
    strict = start()
    _, blob = _attested_key(strict, policy)
    with pytest.raises(ClientError) as exc:
        _decrypt(strict, blob, debug_doc)
    assert _code(exc) == "ValidationException"
    strict.running.stop()
    lenient = start(allow_debug=True)
    answer = _decrypt(lenient, blob, debug_doc)
    assert open_enveloped_data(answer["CiphertextForRecipient"], enclave_key) == b"model data key"


def test_bad_recipient_members(kms: KmsHarness, document: bytes) -> None:
    _, blob = _attested_key(kms)
    client = kms.client(ENCLAVE)
    with pytest.raises(ClientError) as algorithm:
        client.decrypt(
            CiphertextBlob=blob,
            EncryptionContext={"m": "1"},
            Recipient={
                "KeyEncryptionAlgorithm": "RSAES_PKCS1_V1_5",
                "AttestationDocument": document,
            },
        )
    assert _code(algorithm) == "ValidationException"
    assert "RSAES_OAEP_SHA_256" in _message(algorithm)
    with pytest.raises(ClientError) as garbage:
        client.decrypt(
            CiphertextBlob=blob,
            EncryptionContext={"m": "1"},
            Recipient=recipient_param(b"\x84garbage that is not cbor"),
        )
    assert _code(garbage) == "ValidationException"


def test_client_error_becomes_kms_refused(
    kms: KmsHarness, enclave_key: rsa.RSAPrivateKey, other_ca: SimulationCa
) -> None:
    _, blob = _attested_key(kms)
    forged = attest(other_ca, spki(enclave_key))
    with pytest.raises(KmsRefused, match="ValidationException"):
        decrypt_for_recipient(
            kms.client(ENCLAVE), blob, forged, enclave_key, encryption_context={"m": "1"}
        )


def test_recipient_response_base64_on_the_wire(kms: KmsHarness, document: bytes) -> None:
    """The raw JSON carries CiphertextForRecipient as base64 and no Plaintext member."""
    _, blob = _attested_key(kms)
    client = kms.client(ENCLAVE)
    captured: dict[str, Any] = {}

    def grab(response_dict: dict[str, Any], **_: Any) -> None:
        captured["body"] = json.loads(response_dict["body"])

    client.meta.events.register("before-parse.kms.Decrypt", grab)
    client.decrypt(
        CiphertextBlob=blob, EncryptionContext={"m": "1"}, Recipient=recipient_param(document)
    )
    body = captured["body"]
    assert "Plaintext" not in body
    assert base64.b64decode(body["CiphertextForRecipient"])[:2] == b"\x30\x80"
