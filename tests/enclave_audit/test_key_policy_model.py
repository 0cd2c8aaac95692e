"""One typed key-policy model: the gate writes it, the reference KMS evaluates it, the demo too."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from enclave_audit.errors import InvalidInput
from enclave_audit.model.key_policy import (
    IMAGE_KEY,
    Effect,
    KeyPolicy,
    allowed_image,
    attested_allow,
    deny_other_images,
    pcr_key,
)
from enclave_audit.model.measurements import PcrSet
from reference_enclave import demo
from reference_enclave.kms.errors import KmsApiError
from reference_enclave.kms.policy import Decision, RequestContext, condition_keys, evaluate
from reference_enclave.kms.policy import parse_policy as kms_parse
from reports.key_policy import allowed_images, propose

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/0d1f4c6e-1111-4222-8333-944455556666"
SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/enclave-parent-instance/i-0abc"
PCRS = PcrSet(values={0: b"\xa1" * 48, 1: b"\xb2" * 48, 2: b"\xc3" * 48})
OTHER = PcrSet(values={0: b"\xd4" * 48, 1: b"\xb2" * 48, 2: b"\xc3" * 48})
NOW = datetime(2026, 3, 1, tzinfo=UTC)
FOREIGN = {
    "Sid": "Everyone but the auditors",
    "Effect": "Deny",
    "NotPrincipal": {"AWS": [f"arn:aws:iam::{ACCOUNT}:role/auditor"]},
    "Action": "kms:*",
    "Resource": "*",
    "Condition": {"NumericLessThan": {"kms:GrantTokens": 3}},
}


def _decide(policy_text: str, pcrs: PcrSet | None, action: str = "kms:Decrypt") -> Decision:
    ctx = RequestContext(
        principal=SESSION,
        account=ACCOUNT,
        action=action,
        resource=KEY,
        keys=condition_keys(
            principal=SESSION,
            account=ACCOUNT,
            attestation_pcrs=dict(pcrs.values) if pcrs is not None else None,
        ),
    )
    return evaluate(kms_parse(policy_text), ctx).decision


def test_the_demo_policy_is_the_model_and_the_kms_enforces_it() -> None:
    text = demo.key_policy(PCRS)
    policy = KeyPolicy.parse(text)
    images = [allowed_image(s) for s in policy.statements]
    assert [i.pcrs for i in images if i is not None] == [PCRS]
    assert _decide(text, PCRS) is Decision.ALLOW
    assert _decide(text, OTHER) is Decision.EXPLICIT_DENY
    assert _decide(text, None) is Decision.EXPLICIT_DENY


def test_what_the_gate_writes_the_kms_accepts_and_enforces() -> None:
    current = KeyPolicy.from_document(json.loads(demo.key_policy(OTHER)))
    proposed = propose(
        current,
        candidate=PCRS,
        principal=demo.ENCLAVE_ROLE,
        pinned_pcrs=(0, 1, 2),
        now=NOW,
        rollout_until=None,
        actions=("kms:Decrypt",),
    )
    # the demo's own statements are kept as written; the gate adds its own
    assert proposed.statements[: len(current.statements)] == current.statements
    assert [a.pcrs for a in allowed_images(proposed)] == [PCRS]
    text = proposed.to_json()
    # the demo's deny still names only the old image, so the new one is denied until the
    # publisher drops it: the gate never removes a statement it does not own
    assert _decide(text, PCRS) is Decision.EXPLICIT_DENY
    without_demo_deny = proposed.with_statements(
        s for s in proposed.statements if s.sid != "Deny unattested decryption"
    )
    assert _decide(without_demo_deny.to_json(), PCRS) is Decision.ALLOW
    assert _decide(without_demo_deny.to_json(), OTHER) is Decision.EXPLICIT_DENY


def test_rollout_window_is_a_date_condition_the_kms_honours() -> None:
    until = NOW + timedelta(hours=6)
    statement = attested_allow(demo.ENCLAVE_ROLE, ["kms:Decrypt"], PCRS, (1, 2), until=until)
    image = allowed_image(statement)
    assert image is not None and image.pcrs == PCRS and image.until == until
    document = statement.to_document()
    assert document["Condition"]["DateLessThan"] == {"aws:CurrentTime": "2026-03-01T06:00:00Z"}
    assert document["Condition"]["StringEqualsIgnoreCase"][IMAGE_KEY] == PCRS.hex(0)
    assert document["Condition"]["StringEqualsIgnoreCase"][pcr_key(2)] == PCRS.hex(2)


def test_foreign_statements_survive_byte_for_byte() -> None:
    document = {"Version": "2012-10-17", "Statement": [FOREIGN]}
    policy = KeyPolicy.from_document(document)
    statement = policy.statements[0]
    assert statement.not_principal and statement.effect is Effect.DENY
    assert statement.conditions[0].base == "NumericLessThan"
    assert policy.to_document() == document
    # valid AWS grammar that this KMS does not evaluate is refused there, not silently ignored
    with pytest.raises(KmsApiError, match="NotPrincipal"):
        kms_parse(json.dumps(document))


def test_built_statements_round_trip() -> None:
    policy = KeyPolicy(
        (
            attested_allow(demo.ENCLAVE_ROLE, ["kms:Decrypt", "kms:GenerateDataKey"], PCRS, (1,)),
            deny_other_images([PCRS.hex(0), OTHER.hex(0)], ["kms:Decrypt"], sid="Deny"),
        )
    )
    again = KeyPolicy.parse(policy.to_json())
    assert again == policy
    deny = again.statements[1].to_document()
    assert deny["Principal"] == {"AWS": "*"} and deny["Action"] == "kms:Decrypt"
    assert deny["Condition"]["StringNotEqualsIgnoreCase"][IMAGE_KEY] == [PCRS.hex(0), OTHER.hex(0)]


def _with_condition(operator: str, key: str, value: object) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": ACCOUNT},
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                    "Condition": {operator: {key: value}},
                }
            ],
        }
    )


@pytest.mark.parametrize(
    ("operator", "key", "value", "needle"),
    [
        ("StringEquals", IMAGE_KEY, "0x" + "ab" * 47, "0x prefix"),
        ("StringEquals", IMAGE_KEY, "ab" * 32, "not a hex PCR digest"),
        ("StringEquals", pcr_key(1), "ab" * 47 + "zz", "not a hex PCR digest"),
        ("StringEquals", IMAGE_KEY, "ab*", "not a hex PCR digest"),
        ("StringEquals", "kms:RecipientAttestation:PCR32", "ab" * 48, "unknown condition key"),
        ("StringEquals", "kms:RecipientAttestation:ImageSha256", "ab" * 48, "unknown"),
        ("Null", IMAGE_KEY, "maybe", "true or false"),
        ("DateLessThan", "aws:CurrentTime", "tomorrow", "ISO 8601"),
        ("ForSomeValue:StringEquals", "k", "v", "set qualifier"),
        ("StringMatches", "k", "v", "unknown condition operator"),
    ],
)
def test_one_rule_for_the_gate_and_the_kms(
    operator: str, key: str, value: str, needle: str
) -> None:
    text = _with_condition(operator, key, value)
    with pytest.raises(InvalidInput, match=needle):
        KeyPolicy.parse(text)
    with pytest.raises(KmsApiError, match=needle) as refused:
        kms_parse(text)
    assert refused.value.code == "MalformedPolicyDocumentException"


def test_patterns_only_under_like_operators() -> None:
    text = _with_condition("StringLike", IMAGE_KEY, "a1a1*")
    assert KeyPolicy.parse(text).statements[0].conditions[0].values == ("a1a1*",)
    assert _decide(text, PCRS) is Decision.ALLOW
    assert _decide(text, OTHER) is Decision.IMPLICIT_DENY
