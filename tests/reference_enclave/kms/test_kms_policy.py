"""Key-policy evaluation semantics (IAM rules), exercised directly on the engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reference_enclave.kms.errors import KmsApiError
from reference_enclave.kms.policy import (
    Decision,
    RequestContext,
    condition_keys,
    evaluate,
    parse_policy,
)

ACCOUNT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/0d1f4c6e-1111-4222-8333-944455556666"
ROLE_SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/enclave/i-0abc"
PCR0 = "ab" * 48


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _stmt(
    effect: str = "Allow",
    action: Any = "kms:Decrypt",
    principal: Any = "*",
    condition: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Effect": effect,
        "Principal": principal,
        "Action": action,
        "Resource": "*",
        **extra,
    }
    if condition is not None:
        out["Condition"] = condition
    return out


def _decide(
    policy: str,
    *,
    action: str = "kms:Decrypt",
    principal: str = ROLE_SESSION,
    pcrs: dict[int, bytes] | None = None,
    context: dict[str, str] | None = None,
) -> Decision:
    ctx = RequestContext(
        principal=principal,
        account=principal.split(":")[4],
        action=action,
        resource=KEY,
        keys=condition_keys(
            principal=principal,
            account=principal.split(":")[4],
            encryption_context=context,
            attestation_pcrs=pcrs,
        ),
    )
    return evaluate(parse_policy(policy), ctx).decision


ATTESTED = {0: bytes.fromhex(PCR0), 3: bytes(48)}


def test_default_deny_and_allow() -> None:
    assert _decide(_policy(_stmt(action="kms:Encrypt"))) is Decision.IMPLICIT_DENY
    assert _decide(_policy(_stmt())) is Decision.ALLOW


def test_explicit_deny_wins_regardless_of_order() -> None:
    deny = _stmt(effect="Deny")
    assert _decide(_policy(_stmt(), deny)) is Decision.EXPLICIT_DENY
    assert _decide(_policy(deny, _stmt())) is Decision.EXPLICIT_DENY


@pytest.mark.parametrize(
    "operator, value, pcrs, expected",
    [
        ("StringEquals", PCR0, ATTESTED, Decision.ALLOW),
        ("StringEquals", PCR0.upper(), ATTESTED, Decision.IMPLICIT_DENY),
        ("StringEqualsIgnoreCase", PCR0.upper(), ATTESTED, Decision.ALLOW),
        ("StringEqualsIgnoreCase", PCR0, None, Decision.IMPLICIT_DENY),  # absent: false
        ("StringEqualsIfExists", "cd" * 48, None, Decision.ALLOW),  # absent: true
        ("StringEqualsIfExists", "cd" * 48, ATTESTED, Decision.IMPLICIT_DENY),
        ("StringNotEqualsIgnoreCase", "cd" * 48, None, Decision.ALLOW),  # negated + absent: true
        ("StringNotEquals", PCR0, ATTESTED, Decision.IMPLICIT_DENY),
        ("StringLike", "ab*", ATTESTED, Decision.ALLOW),
        ("StringLike", "cd*", ATTESTED, Decision.IMPLICIT_DENY),
        ("StringNotLike", "cd*", ATTESTED, Decision.ALLOW),
    ],
)
def test_string_operators(
    operator: str, value: str, pcrs: dict[int, bytes] | None, expected: Decision
) -> None:
    policy = _policy(_stmt(condition={operator: {"kms:RecipientAttestation:ImageSha384": value}}))
    assert _decide(policy, pcrs=pcrs) is expected


def test_condition_values_are_alternatives_and_keys_are_conjunctive() -> None:
    alternatives = _policy(
        _stmt(condition={"StringEquals": {"kms:RecipientAttestation:PCR0": ["cd" * 48, PCR0]}})
    )
    assert _decide(alternatives, pcrs=ATTESTED) is Decision.ALLOW
    both = _policy(
        _stmt(
            condition={
                "StringEquals": {
                    "kms:RecipientAttestation:PCR0": PCR0,
                    "kms:RecipientAttestation:PCR3": "ef" * 48,
                }
            }
        )
    )
    assert _decide(both, pcrs=ATTESTED) is Decision.IMPLICIT_DENY


def test_condition_key_names_are_case_insensitive() -> None:
    policy = _policy(_stmt(condition={"StringEquals": {"KMS:RECIPIENTATTESTATION:pcr0": PCR0}}))
    assert _decide(policy, pcrs=ATTESTED) is Decision.ALLOW


def test_null_operator_tests_presence() -> None:
    requires = _policy(_stmt(condition={"Null": {"kms:RecipientAttestation:ImageSha384": "false"}}))
    assert _decide(requires, pcrs=ATTESTED) is Decision.ALLOW
    assert _decide(requires, pcrs=None) is Decision.IMPLICIT_DENY
    absent = _policy(_stmt(condition={"Null": {"kms:RecipientAttestation:ImageSha384": True}}))
    assert _decide(absent, pcrs=None) is Decision.ALLOW


def test_set_qualifiers_on_encryption_context_keys() -> None:
    any_of = _policy(
        _stmt(
            condition={
                "ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": ["model", "tenant"]}
            }
        )
    )
    assert _decide(any_of, context={"model": "x", "other": "y"}) is Decision.ALLOW
    assert _decide(any_of, context={"other": "y"}) is Decision.IMPLICIT_DENY
    assert _decide(any_of) is Decision.IMPLICIT_DENY
    all_of = _policy(
        _stmt(
            condition={
                "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["model", "tenant"]}
            }
        )
    )
    assert _decide(all_of, context={"model": "x"}) is Decision.ALLOW
    assert _decide(all_of, context={"model": "x", "other": "y"}) is Decision.IMPLICIT_DENY
    assert _decide(all_of) is Decision.ALLOW  # vacuously true, as IAM
    per_key = _policy(_stmt(condition={"StringEquals": {"kms:EncryptionContext:model": "smollm2"}}))
    assert _decide(per_key, context={"model": "smollm2"}) is Decision.ALLOW
    assert _decide(per_key, context={"model": "other"}) is Decision.IMPLICIT_DENY


def test_principals() -> None:
    root = _policy(_stmt(principal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"}))
    assert _decide(root) is Decision.ALLOW
    assert _decide(root, principal="arn:aws:iam::444455556666:user/x") is Decision.IMPLICIT_DENY
    bare = _policy(_stmt(principal={"AWS": ACCOUNT}))
    assert _decide(bare) is Decision.ALLOW
    role = _policy(_stmt(principal={"AWS": f"arn:aws:iam::{ACCOUNT}:role/enclave"}))
    assert _decide(role) is Decision.ALLOW
    assert _decide(role, principal=f"arn:aws:sts::{ACCOUNT}:assumed-role/other/i-0abc") is (
        Decision.IMPLICIT_DENY
    )
    user = _policy(_stmt(principal={"AWS": [f"arn:aws:iam::{ACCOUNT}:user/alice"]}))
    assert _decide(user) is Decision.IMPLICIT_DENY
    assert _decide(user, principal=f"arn:aws:iam::{ACCOUNT}:user/alice") is Decision.ALLOW
    service = _policy(_stmt(principal={"Service": "ec2.amazonaws.com"}))
    assert _decide(service) is Decision.IMPLICIT_DENY


def test_actions_wildcards_and_not_action() -> None:
    assert _decide(_policy(_stmt(action="kms:*"))) is Decision.ALLOW
    assert _decide(_policy(_stmt(action="KMS:decrypt"))) is Decision.ALLOW
    assert _decide(_policy(_stmt(action="kms:Generate*")), action="kms:GenerateDataKey") is (
        Decision.ALLOW
    )
    assert _decide(_policy(_stmt(action="kms:Generate*"))) is Decision.IMPLICIT_DENY
    not_action = {"Effect": "Allow", "Principal": "*", "NotAction": "kms:Decrypt", "Resource": "*"}
    assert _decide(_policy(not_action)) is Decision.IMPLICIT_DENY
    assert _decide(_policy(not_action), action="kms:Encrypt") is Decision.ALLOW


def test_resource_must_match_the_key() -> None:
    other = _stmt(Resource=KEY.replace("0d1f", "ffff"))
    assert _decide(_policy(other)) is Decision.IMPLICIT_DENY
    mine = _stmt(Resource=f"arn:aws:kms:us-east-1:{ACCOUNT}:key/*")
    assert _decide(_policy(mine)) is Decision.ALLOW


def test_the_spec_trap_plain_decrypt_under_default_root_allow() -> None:
    """Allow-with-condition does not stop the root kms:* grant; only an explicit Deny does."""
    allow_root = _stmt(action="kms:*", principal={"AWS": f"arn:aws:iam::{ACCOUNT}:root"})
    attested = _stmt(
        condition={"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": PCR0}}
    )
    assert _decide(_policy(allow_root, attested), pcrs=None) is Decision.ALLOW
    deny = _stmt(
        effect="Deny",
        condition={"StringNotEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": PCR0}},
    )
    assert _decide(_policy(allow_root, attested, deny), pcrs=None) is Decision.EXPLICIT_DENY
    assert _decide(_policy(allow_root, attested, deny), pcrs=ATTESTED) is Decision.ALLOW


@pytest.mark.parametrize(
    "document, needle",
    [
        ("", "empty"),
        ("[]", "JSON object"),
        (json.dumps({"Version": "2012-10-17"}), "Statement"),
        (json.dumps({"Version": "2099-01-01", "Statement": [_stmt()]}), "Version"),
        (json.dumps({"Version": "2012-10-17", "Statement": [_stmt()], "Extra": 1}), "Extra"),
        (_policy(_stmt(Bogus=1)), "Bogus"),
        (_policy({"Effect": "Allow", "Principal": "*", "Resource": "*"}), "Action"),
        (_policy({"Effect": "Allow", "Principal": "*", "Action": "kms:*"}), "Resource"),
        (_policy(_stmt(principal={"AWS": "bob"})), "invalid principals"),
        (_policy(_stmt(principal={"Federated": "x"})), "principal type"),
        (_policy(_stmt(NotPrincipal={"AWS": "*"})), "NotPrincipal"),
        (_policy(_stmt(condition={"ForSomeValue:StringEquals": {"k": "v"}})), "set qualifier"),
        (_policy(_stmt(condition={"NullIfExists": {"k": "true"}})), "not a valid operator"),
        (_policy(_stmt(condition={"Null": {"k": "maybe"}})), "true or false"),
        (
            _policy(_stmt(condition={"StringEquals": {"kms:RecipientAttestation:PCR0": "abc"}})),
            "not a hex PCR digest",
        ),
        (_policy(_stmt(Sid="a"), _stmt(Sid="a")), "unique"),
        ("x" * 40000, "larger than"),
    ],
)
def test_validator_messages(document: str, needle: str) -> None:
    with pytest.raises(KmsApiError) as exc:
        parse_policy(document)
    assert exc.value.code == "MalformedPolicyDocumentException"
    assert needle.lower() in exc.value.api_message.lower(), exc.value.api_message
