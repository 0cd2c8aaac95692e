"""Arbitrary request members never crash the KMS: every refusal is an AWS 4xx error."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kms_testlib import ADMIN

from reference_enclave.kms.config import KmsConfig
from reference_enclave.kms.errors import KmsApiError
from reference_enclave.kms.recipient import RecipientVerifier
from reference_enclave.kms.service import AuditNote, KmsService
from reference_enclave.kms.store import KeyStore
from verifier.nitro import TrustRoot

OPERATIONS = [
    "CreateKey",
    "DescribeKey",
    "ListKeys",
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateRandom",
    "GetKeyPolicy",
    "PutKeyPolicy",
    "NoSuchOperation",
]
MEMBERS = [
    "KeyId",
    "Plaintext",
    "CiphertextBlob",
    "EncryptionContext",
    "NumberOfBytes",
    "KeySpec",
    "Policy",
    "PolicyName",
    "Limit",
    "Marker",
    "Recipient",
    "Description",
    "KeyUsage",
    "EncryptionAlgorithm",
    "BypassPolicyLockoutSafetyCheck",
    "Tags",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, sim_root: TrustRoot) -> KmsService:
    store = KeyStore(Path(tmp_path_factory.mktemp("fuzz")) / "kms.db")
    config = KmsConfig(credentials=(ADMIN,))
    verifier = RecipientVerifier(
        [sim_root], max_age_seconds=300, allow_debug=False, clock=__import__("time").time
    )
    svc = KmsService(store, config, verifier)
    svc.call("CreateKey", {}, ADMIN, AuditNote())
    return svc


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    operation=st.sampled_from(OPERATIONS),
    params=st.dictionaries(st.sampled_from(MEMBERS), json_values, max_size=5),
)
def test_random_members_are_refused_cleanly(
    service: KmsService, operation: str, params: dict[str, Any]
) -> None:
    try:
        service.call(operation, params, ADMIN, AuditNote())
    except KmsApiError as exc:
        assert exc.status == 400, (exc.code, exc.api_message)
        assert exc.code.endswith("Exception")
