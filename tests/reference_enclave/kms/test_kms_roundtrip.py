"""boto3 round trips against the reference KMS: keys, encryption, policies, persistence."""

from __future__ import annotations

import json
import sqlite3

import pytest
from botocore.exceptions import ClientError
from kms_testlib import ACCOUNT, ADMIN, ENCLAVE, OUTSIDER, KmsHarness, StartKms


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _message(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Message"])


def test_create_describe_list(kms: KmsHarness) -> None:
    client = kms.client()
    meta = client.create_key(Description="model key")["KeyMetadata"]
    assert meta["Arn"] == f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{meta['KeyId']}"
    assert meta["KeyState"] == "Enabled" and meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["Description"] == "model key"
    described = client.describe_key(KeyId=meta["Arn"])["KeyMetadata"]
    assert described["KeyId"] == meta["KeyId"]
    second = client.create_key()["KeyMetadata"]["KeyId"]
    page = client.list_keys(Limit=1)
    assert page["Truncated"] is True and len(page["Keys"]) == 1
    rest = client.list_keys(Marker=page["NextMarker"])
    ids = {k["KeyId"] for k in page["Keys"] + rest["Keys"]}
    assert ids == {meta["KeyId"], second}


def test_encrypt_decrypt_with_context(kms: KmsHarness) -> None:
    client = kms.client()
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    context = {"model": "smollm2", "purpose": "weights"}
    out = client.encrypt(KeyId=key_id, Plaintext=b"data key bytes", EncryptionContext=context)
    blob = out["CiphertextBlob"]
    assert out["KeyId"].endswith(key_id) and b"data key bytes" not in blob
    back = client.decrypt(CiphertextBlob=blob, EncryptionContext=context)
    assert back["Plaintext"] == b"data key bytes"
    assert back["KeyId"].endswith(key_id)
    assert "CiphertextForRecipient" not in back
    with pytest.raises(ClientError) as wrong:
        client.decrypt(CiphertextBlob=blob, EncryptionContext={"model": "other"})
    assert _code(wrong) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as missing:
        client.decrypt(CiphertextBlob=blob)
    assert _code(missing) == "InvalidCiphertextException"
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(ClientError) as bad:
        client.decrypt(CiphertextBlob=bytes(tampered), EncryptionContext=context)
    assert _code(bad) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as garbage:
        client.decrypt(CiphertextBlob=b"not a kms blob at all, just bytes............")
    assert _code(garbage) == "InvalidCiphertextException"


def test_decrypt_with_other_key_id_is_incorrect_key(kms: KmsHarness) -> None:
    client = kms.client()
    first = client.create_key()["KeyMetadata"]["KeyId"]
    second = client.create_key()["KeyMetadata"]["KeyId"]
    blob = client.encrypt(KeyId=first, Plaintext=b"x")["CiphertextBlob"]
    with pytest.raises(ClientError) as exc:
        client.decrypt(CiphertextBlob=blob, KeyId=second)
    assert _code(exc) == "IncorrectKeyException"
    assert client.decrypt(CiphertextBlob=blob, KeyId=first)["Plaintext"] == b"x"


def test_generate_data_key_and_random(kms: KmsHarness) -> None:
    client = kms.client()
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    out = client.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext={"a": "b"})
    assert len(out["Plaintext"]) == 32
    again = client.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"a": "b"})
    assert again["Plaintext"] == out["Plaintext"]
    assert len(client.generate_data_key(KeyId=key_id, NumberOfBytes=64)["Plaintext"]) == 64
    wrapped = client.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_128")
    assert "Plaintext" not in wrapped
    assert len(client.decrypt(CiphertextBlob=wrapped["CiphertextBlob"])["Plaintext"]) == 16
    assert len(client.generate_random(NumberOfBytes=48)["Plaintext"]) == 48
    with pytest.raises(ClientError) as both:
        client.generate_data_key(KeyId=key_id, KeySpec="AES_256", NumberOfBytes=32)
    assert _code(both) == "ValidationException"
    with pytest.raises(ClientError) as too_many:
        client.generate_data_key(KeyId=key_id, NumberOfBytes=1025)
    assert _code(too_many) == "ValidationException"


def test_unknown_keys(kms: KmsHarness) -> None:
    client = kms.client()
    with pytest.raises(ClientError) as missing:
        client.describe_key(KeyId="00000000-0000-4000-8000-000000000000")
    assert _code(missing) == "NotFoundException"
    with pytest.raises(ClientError) as alias:
        client.encrypt(KeyId="alias/model", Plaintext=b"x")
    assert _code(alias) == "NotFoundException"


def test_key_policy_round_trip_and_validation(kms: KmsHarness) -> None:
    client = kms.client()
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    default = json.loads(client.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert default["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Admin",
                    "Effect": "Allow",
                    "Principal": {"AWS": ADMIN.principal},
                    "Action": "kms:*",
                    "Resource": "*",
                },
            ],
        }
    )
    client.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    assert client.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"] == policy

    for bad, needle in (
        ("{not json", "not valid JSON"),
        (
            json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}],
                }
            ),
            "no principal",
        ),
        (
            json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Permit", "Principal": "*", "Action": "kms:*", "Resource": "*"}
                    ],
                }
            ),
            "Effect",
        ),
        (
            json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": "kms:Decrypt",
                            "Resource": "*",
                            "Condition": {"NumericLessThan": {"kms:CallerAccount": "1"}},
                        }
                    ],
                }
            ),
            "NumericLessThan",
        ),
        (
            json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": "kms:Decrypt",
                            "Resource": "*",
                            "Condition": {
                                "StringEqualsIgnoreCase": {
                                    "kms:RecipientAttestation:ImageSha384": "0x" + "ab" * 48
                                }
                            },
                        }
                    ],
                }
            ),
            "0x prefix",
        ),
        (
            json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": "s3:GetObject",
                            "Resource": "*",
                        }
                    ],
                }
            ),
            "not a KMS action",
        ),
    ):
        with pytest.raises(ClientError) as exc:
            client.put_key_policy(KeyId=key_id, PolicyName="default", Policy=bad)
        assert _code(exc) == "MalformedPolicyDocumentException", bad
        assert needle.lower() in _message(exc).lower(), (needle, _message(exc))
    # nothing was written by the refused attempts
    assert client.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"] == policy


def test_policy_lockout_safety_check(kms: KmsHarness) -> None:
    client = kms.client()
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    locks_out = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": ENCLAVE.principal},
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                }
            ],
        }
    )
    with pytest.raises(ClientError) as exc:
        client.put_key_policy(KeyId=key_id, PolicyName="default", Policy=locks_out)
    assert _code(exc) == "MalformedPolicyDocumentException"
    assert "will not allow you to update the key policy" in _message(exc)
    client.put_key_policy(
        KeyId=key_id, PolicyName="default", Policy=locks_out, BypassPolicyLockoutSafetyCheck=True
    )
    with pytest.raises(ClientError) as denied:
        client.get_key_policy(KeyId=key_id, PolicyName="default")
    assert _code(denied) == "AccessDeniedException"
    assert "because no resource-based policy allows the kms:GetKeyPolicy action" in _message(denied)


def test_other_account_cannot_use_or_create(kms: KmsHarness) -> None:
    key_id = kms.client().create_key()["KeyMetadata"]["KeyId"]
    outsider = kms.client(OUTSIDER)
    with pytest.raises(ClientError) as create:
        outsider.create_key()
    assert _code(create) == "AccessDeniedException"
    with pytest.raises(ClientError) as use:
        outsider.encrypt(KeyId=f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key_id}", Plaintext=b"x")
    assert _code(use) == "AccessDeniedException"
    assert OUTSIDER.principal in _message(use)


def test_persistence_across_restart_and_integrity(start: StartKms) -> None:
    first = start()
    client = first.client()
    key_id = client.create_key(Description="persist")["KeyMetadata"]["KeyId"]
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Admin",
                    "Effect": "Allow",
                    "Principal": {"AWS": ADMIN.principal},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    )
    client.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    blob = client.encrypt(KeyId=key_id, Plaintext=b"survives restarts")["CiphertextBlob"]
    first.running.stop()

    second = start(db=first.db)
    assert second.running.url != "" and second.db == first.db
    client2 = second.client()
    assert client2.decrypt(CiphertextBlob=blob)["Plaintext"] == b"survives restarts"
    assert client2.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"] == policy
    assert client2.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "persist"
    assert second.running.store.integrity_check() == "ok"
    second.running.stop()

    db = sqlite3.connect(first.db)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (material,) = db.execute("SELECT material FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        assert len(material) == 32
        events = [json.loads(r[0]) for r in db.execute("SELECT event FROM events ORDER BY seq")]
    finally:
        db.close()
    names = [e["eventName"] for e in events]
    assert names[:3] == ["CreateKey", "PutKeyPolicy", "Encrypt"]
    assert "Decrypt" in names
    assert (first.db.stat().st_mode & 0o777) == 0o600


def test_corrupt_database_is_refused(tmp_path) -> None:
    from enclave_audit.errors import InvalidInput
    from reference_enclave.kms.store import KeyStore

    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InvalidInput, match="not a usable KMS database"):
        KeyStore(bad)


def test_concurrent_clients_keep_the_database_consistent(kms: KmsHarness) -> None:
    import threading

    errors: list[BaseException] = []
    created: list[str] = []

    def worker() -> None:
        try:
            client = kms.client()
            for _ in range(5):
                key_id = client.create_key()["KeyMetadata"]["KeyId"]
                blob = client.encrypt(KeyId=key_id, Plaintext=b"p")["CiphertextBlob"]
                assert client.decrypt(CiphertextBlob=blob)["Plaintext"] == b"p"
                created.append(key_id)
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    listed = {k["KeyId"] for k in kms.client().list_keys(Limit=1000)["Keys"]}
    assert listed == set(created) and len(created) == 20
    assert kms.running.store.integrity_check() == "ok"
    assert len(kms.running.store.events()) >= 60


def test_start_kms_accepts_root_paths(start: StartKms, tmp_path, sim_ca, document) -> None:
    from reference_enclave.kms import recipient_param

    root = tmp_path / "root.pem"
    root.write_bytes(sim_ca.root_pem())
    harness = start(roots=[root], db=tmp_path / "paths.db")
    answer = harness.client().generate_random(NumberOfBytes=16, Recipient=recipient_param(document))
    assert "CiphertextForRecipient" in answer


def test_no_audit_no_answer(kms: KmsHarness) -> None:
    """If the audit event cannot be written, the caller gets KMSInternalException, not data."""
    client = kms.client()
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    blob = client.encrypt(KeyId=key_id, Plaintext=b"p")["CiphertextBlob"]
    # keys stay readable; only the audit table refuses writes
    db = sqlite3.connect(kms.db)
    db.execute(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON events "
        "BEGIN SELECT RAISE(ABORT, 'audit volume full'); END"
    )
    db.commit()
    db.close()
    with pytest.raises(ClientError) as exc:
        client.decrypt(CiphertextBlob=blob)
    assert _code(exc) == "KMSInternalException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "Plaintext" not in exc.value.response
