"""The reference KMS's HTTP layer under hostile requests (issue 18, findings reproduced).

Requests are signed by botocore's own SigV4 signer and written to the socket byte for
byte (``fuzz.kms_http``), so a duplicated header, an unsigned ``x-amz-*`` header or an
odd Content-Length reaches the server exactly as an attacker would send it.  The
``kms_http`` fuzz target drives the same layer with mutations of such requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fuzz.kms_http import Reply, raw_request, send, signed_headers
from reference_enclave.kms import Credential, RunningKms, kms_client, start_kms

ADMIN = Credential(
    access_key_id="AKIAHARDENING0000001",
    secret_access_key="hardening-secret-" + "k" * 24,
    principal="arn:aws:iam::111122223333:user/admin",
)


@dataclass
class Kms:
    running: RunningKms
    address: tuple[str, int]
    host: str

    def signed(self, operation: str, body: bytes) -> list[tuple[str, str]]:
        return signed_headers(
            self.host,
            operation,
            body,
            access_key=ADMIN.access_key_id,
            secret=ADMIN.secret_access_key,
        )

    def send(self, headers: list[tuple[str, str]], body: bytes, **kw: str) -> Reply:
        return send(self.address, raw_request(headers, body, **kw))

    def key_count(self) -> int:
        return len(self.running.store.list_ids(after=None, limit=10_000))


@pytest.fixture
def kms(tmp_path: Path) -> Iterator[Kms]:
    running = start_kms(tmp_path / "kms.db", credentials=[ADMIN])
    host, port = running.server.server_address[:2]
    yield Kms(running, (str(host), int(port)), f"{host}:{port}")
    running.stop()


def _target(operation: str) -> tuple[str, str]:
    return ("X-Amz-Target", f"TrentService.{operation}")


# --- operation swap: duplicated headers, unsigned x-amz-* headers -------------------------


def test_list_keys_signature_with_a_create_key_target_first_creates_nothing(kms: Kms) -> None:
    """The finding: a second X-Amz-Target placed first made the dispatcher run CreateKey."""
    body = b"{}"
    headers = kms.signed("ListKeys", body)
    reply = kms.send([_target("CreateKey"), *headers], body)
    assert reply.status == 400 and reply.error_type == "IncompleteSignatureException"
    assert "more than one 'x-amz-target'" in str(reply.json()["message"])
    assert kms.key_count() == 0
    events = kms.running.store.events()
    assert all(e["eventName"] != "CreateKey" or e["errorCode"] for e in events)


@pytest.mark.parametrize("name", ["X-Amz-Target", "Authorization", "Host", "X-Amz-Date"])
@pytest.mark.parametrize("first", [True, False])
def test_every_duplicated_signing_header_is_refused(kms: Kms, name: str, first: bool) -> None:
    body = b"{}"
    headers = kms.signed("ListKeys", body)
    value = dict(headers)[name]
    extra = (name.lower() if first else name.upper(), value)  # even the same value, any case
    reply = kms.send([extra, *headers] if first else [*headers, extra], body)
    assert reply.status == 400
    assert reply.error_type == "IncompleteSignatureException"


def test_x_amz_target_left_out_of_signed_headers_is_refused(kms: Kms) -> None:
    """The finding: SignedHeaders without x-amz-target was accepted, so any proxy could
    replay a signed body as another operation."""
    from fuzz.kms_http import mutated_request

    request = mutated_request(
        bytes([0, 4, 0, 0]),  # ListKeys, signed without x-amz-target
        kms.host,
        access_key=ADMIN.access_key_id,
        secret=ADMIN.secret_access_key,
        key_id="00000000-0000-0000-0000-000000000000",
    )
    assert b"SignedHeaders=content-type;host;x-amz-date," in request.data
    swapped = request.data.replace(b"TrentService.ListKeys", b"TrentService.CreateKey")
    for data in (request.data, swapped):
        reply = send(kms.address, data)
        assert reply.status == 400 and reply.error_type == "InvalidSignatureException"
        assert "not signed: x-amz-target" in str(reply.json()["message"])
    assert kms.key_count() == 0


def test_an_unsigned_x_amz_header_is_refused(kms: Kms) -> None:
    body = b"{}"
    headers = kms.signed("ListKeys", body)
    reply = kms.send([*headers, ("X-Amz-Whatever", "1")], body)
    assert reply.status == 400 and "not signed: x-amz-whatever" in str(reply.json()["message"])


def test_the_unmodified_signed_request_still_works(kms: Kms) -> None:
    body = b'{"Description": "made on purpose"}'
    reply = kms.send(kms.signed("CreateKey", body), body)
    assert reply.status == 200, reply.body
    assert kms.key_count() == 1
    body = b"{}"
    reply = kms.send(kms.signed("ListKeys", body), body)
    assert reply.status == 200 and len(reply.json()["Keys"]) == 1  # type: ignore[arg-type]


# --- server errors: every hostile body or framing is a 4xx, never a 500 or a drop ---------


@pytest.mark.parametrize(
    ("operation", "body", "needle"),
    [
        ("ListKeys", b'{"Limit": ' + b"1" * 5000 + b"}", "5000 digits"),
        ("ListKeys", b'{"Limit": 1e999}', "out of range"),
        ("CreateKey", b'{"Description": "\\ud800"}', "surrogate"),
        ("CreateKey", b'{"Description": "x", "Description": "y"}', "duplicate key"),
        ("CreateKey", b'{"Tags": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested"),
        ("ListKeys", b'{"Limit": NaN}', "NaN"),
        ("ListKeys", b"\xff{}", "UTF-8"),
    ],
)
def test_hostile_json_bodies_are_serialization_errors_without_traceback(
    kms: Kms, capfd: pytest.CaptureFixture[str], operation: str, body: bytes, needle: str
) -> None:
    reply = kms.send(kms.signed(operation, body), body)
    assert reply.status == 400, reply.body
    assert reply.error_type == "SerializationException"
    assert needle in str(reply.json()["message"])
    assert "Traceback" not in capfd.readouterr().err
    assert kms.key_count() == 0


def test_a_policy_nested_too_deeply_is_a_malformed_policy(kms: Kms) -> None:
    import json

    body = json.dumps({"Policy": "[" * 20000}).encode()
    reply = kms.send(kms.signed("CreateKey", body), body)
    assert reply.status == 400 and reply.error_type == "MalformedPolicyDocumentException"


@pytest.mark.parametrize(
    "length",
    ["\u00b2", "\u0661", "\u00b9\u00b2", "+2", "-1", "0x2", "2e0", "", "99999999999"],
)
def test_content_length_that_is_not_ascii_digits_gets_a_400(kms: Kms, length: str) -> None:
    """The finding: a non-ASCII Content-Length dropped the connection."""
    body = b"{}"
    reply = kms.send(kms.signed("ListKeys", body), body, length=length)
    assert reply.status == 400
    assert reply.headers.get("connection") == "close"


@pytest.mark.parametrize(
    "extra",
    [
        [("Transfer-Encoding", "chunked")],
        [("Content-Length", "2"), ("Content-Length", "2")],
    ],
)
def test_ambiguous_body_framing_gets_a_400(kms: Kms, extra: list[tuple[str, str]]) -> None:
    body = b"{}"
    reply = send(
        kms.address,
        raw_request([*kms.signed("ListKeys", body), *extra], body),
    )
    assert reply.status == 400


def test_boto3_still_works_end_to_end(kms: Kms) -> None:
    client = kms_client(kms.running.url, ADMIN.access_key_id, ADMIN.secret_access_key)
    key = client.create_key(Description="ok")["KeyMetadata"]["KeyId"]
    blob = client.encrypt(KeyId=key, Plaintext=b"secret")["CiphertextBlob"]
    assert client.decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret"
