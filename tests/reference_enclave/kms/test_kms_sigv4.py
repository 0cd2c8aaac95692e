"""SigV4 authentication: every request is signed, checked with botocore's own signer."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from kms_testlib import ADMIN, KmsHarness, StartKms

from reference_enclave.kms import kms_client


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url + "/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _signed(
    url: str, body: bytes, *, secret: str = ADMIN.secret_access_key, region: str = "us-east-1"
) -> dict[str, str]:
    request = AWSRequest(
        method="POST",
        url=url + "/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "TrentService.ListKeys",
        },
    )
    SigV4Auth(Credentials(ADMIN.access_key_id, secret), "kms", region).add_auth(request)
    return dict(request.headers.items())


def test_signed_raw_request_is_accepted(kms: KmsHarness) -> None:
    body = b"{}"
    status, answer = _post(kms.running.url, _signed(kms.running.url, body), body)
    assert status == 200 and answer["Keys"] == []


def test_unsigned_request_is_refused(kms: KmsHarness) -> None:
    status, answer = _post(
        kms.running.url,
        {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"},
        b"{}",
    )
    assert status == 400
    assert answer["__type"] == "MissingAuthenticationTokenException"


def test_malformed_authorization_is_incomplete(kms: KmsHarness) -> None:
    headers = _signed(kms.running.url, b"{}")
    headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=AKIAADMIN00000000001/x"
    status, answer = _post(kms.running.url, headers, b"{}")
    assert status == 400 and answer["__type"] == "IncompleteSignatureException"


def test_body_changed_after_signing_is_refused(kms: KmsHarness) -> None:
    headers = _signed(kms.running.url, b"{}")
    status, answer = _post(kms.running.url, headers, b'{"Limit": 1}')
    assert status == 400 and answer["__type"] == "InvalidSignatureException"


def test_wrong_region_scope_is_refused(kms: KmsHarness) -> None:
    headers = _signed(kms.running.url, b"{}", region="eu-west-1")
    status, answer = _post(kms.running.url, headers, b"{}")
    assert status == 400 and answer["__type"] == "InvalidSignatureException"
    assert "region" in answer["message"]


def test_bad_secret_is_invalid_signature(kms: KmsHarness) -> None:
    client = kms_client(
        kms.running.url, ADMIN.access_key_id, "wrong-secret-" + "x" * 30, max_attempts=1
    )
    with pytest.raises(ClientError) as exc:
        client.list_keys()
    assert _code(exc) == "InvalidSignatureException"
    assert "signature we calculated does not match" in str(exc.value)


def test_unknown_access_key_is_unrecognized(kms: KmsHarness) -> None:
    client = kms_client(kms.running.url, "AKIANOBODY0000000001", "s" * 40, max_attempts=1)
    with pytest.raises(ClientError) as exc:
        client.create_key()
    assert _code(exc) == "UnrecognizedClientException"
    events = kms.running.store.events()
    assert events[-1]["errorCode"] == "UnrecognizedClientException"
    assert events[-1]["userIdentity"] is None


def test_clock_skew_window(start: StartKms) -> None:
    ahead = start(clock=lambda: time.time() + 900)
    with pytest.raises(ClientError) as exc:
        ahead.client().list_keys()
    assert _code(exc) == "InvalidSignatureException"
    assert "Signature expired" in str(exc.value)
    ahead.running.stop()
    within = start(clock=lambda: time.time() + 120)
    assert within.client().list_keys()["Keys"] == []


def test_amz_date_must_match_scope(kms: KmsHarness) -> None:
    headers = _signed(kms.running.url, b"{}")
    headers["X-Amz-Date"] = datetime.now(UTC).strftime("20000101T%H%M%SZ")
    status, answer = _post(kms.running.url, headers, b"{}")
    assert status == 400 and answer["__type"] == "InvalidSignatureException"
