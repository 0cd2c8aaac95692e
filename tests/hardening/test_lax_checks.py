"""Lax checks (issue 18): an empty expectation, and JSON that two readers read two ways.

Findings: ``--expect`` with ``{"pcrs": {}}`` verified PASS with no PCR compared; a
statement with two ``subject`` keys was signed and verified (the last key won).  Every
JSON document the tool reads from a user or an adversary is now parsed by one strict
parser (:mod:`enclave_runtime.strictjson`): a property test checks that parser on the
forms that make readers disagree, and the CLI tests reach it through each verb.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli, shared_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_audit.errors import BundleMalformed, InvalidInput
from enclave_audit.model.attestation import INTOTO_PAYLOAD_TYPE, Statement
from enclave_audit.model.measurements import PcrSet
from enclave_runtime import strictjson
from verifier.attest.keys import KeyType, generate_key_pair
from verifier.attest.signing import KeySigner

NITRO = shared_fixture("nitro")
EXPECTED = json.loads((NITRO / "expected.json").read_text())["documents"]
ENTRY = next(e for e in EXPECTED if "evervault_2022-10-13" in e["file"])


# --- empty expectations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "expectation",
    [
        {"pcrs": {}},
        {"Measurements": {"HashAlgorithm": "Sha384 { ... }"}},
        {"Measurements": {}},
        {},
    ],
)
def test_an_expectation_that_names_no_pcr_is_refused(tmp_path: Path, expectation: object) -> None:
    """The finding: ``{"pcrs": {}}`` verified PASS with no PCR compared."""
    path = tmp_path / "expect.json"
    path.write_text(json.dumps(expectation))
    result = run_cli(
        [
            "attestation",
            "verify",
            str(NITRO / ENTRY["file"]),
            "--at",
            "document",
            "--expect",
            str(path),
        ]
    )
    assert_one_line_error(result, InvalidInput.exit_code, str(path))
    with pytest.raises(InvalidInput):
        PcrSet.load(path)


def test_an_empty_expected_set_fails_the_pcr_check_even_when_built_in_code() -> None:
    from verifier.nitro import parse_attestation, unwrap_transport
    from verifier.nitro.policy import CHECK_PCRS, AttestationPolicy, policy_checks

    raw = unwrap_transport((NITRO / ENTRY["file"]).read_bytes())
    document = parse_attestation(raw)
    checks = policy_checks(document, AttestationPolicy(expected_pcrs=PcrSet(values={})), now=None)
    pcr_check = next(c for c in checks if c.name == CHECK_PCRS)
    assert pcr_check.outcome.value == "fail" and "name no PCR" in pcr_check.detail


def test_the_same_document_with_its_pcrs_still_passes(tmp_path: Path) -> None:
    path = tmp_path / "expect.json"
    path.write_text(json.dumps({"pcrs": {"0": ENTRY["pcrs"]["0"]}}))
    result = run_cli(
        [
            "attestation",
            "verify",
            str(NITRO / ENTRY["file"]),
            "--at",
            "document",
            "--expect",
            str(path),
        ]
    )
    assert result.exit_code == 0, result.stderr


# --- statements with duplicate keys -----------------------------------------------------------


def _statement(**extra: object) -> dict[str, object]:
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "a.txt", "digest": {"sha256": "aa" * 32}}],
        "predicateType": "https://example.org/p/v1",
        "predicate": {},
        **extra,
    }


def _twice(key: str, first: object, second: object) -> bytes:
    """A statement whose ``key`` appears twice (``first``, then ``second``)."""
    text = json.dumps(_statement(**{key: first}))
    member = json.dumps(key) + ": " + json.dumps(first)
    assert member in text
    return text.replace(
        member, member + ", " + json.dumps(key) + ": " + json.dumps(second)
    ).encode()


def test_a_signed_statement_with_two_subject_keys_does_not_verify(tmp_path: Path) -> None:
    """The finding: two ``subject`` keys were signed and verified (the last one won)."""
    pair = generate_key_pair(KeyType.ED25519, tmp_path / "auditor")
    payload = _twice(
        "subject",
        [{"name": "a.txt", "digest": {"sha256": "aa" * 32}}],
        [{"name": "evil.eif", "digest": {"sha256": "ee" * 32}}],
    )
    bundle = tmp_path / "twice.sigstore.json"
    bundle.write_bytes(KeySigner.from_path(pair.private).sign_dsse(payload, INTOTO_PAYLOAD_TYPE))
    # the last subject is what a lax reader verified against
    digest = "sha256:" + "ee" * 32
    result = run_cli(
        ["attest", "verify", str(bundle), "--digest", digest, "--key", str(pair.public), "--json"]
    )
    assert_one_line_error(result, BundleMalformed.exit_code, "duplicate key 'subject'")


def test_signing_a_statement_with_duplicate_keys_is_refused(tmp_path: Path) -> None:
    pair = generate_key_pair(KeyType.ED25519, tmp_path / "builder")
    statement = tmp_path / "statement.json"
    statement.write_bytes(_twice("predicateType", "https://slsa.dev/provenance/v1", "x"))
    result = run_cli(
        [
            "attest",
            "provenance",
            "--statement",
            str(statement),
            "--key",
            f"file:{pair.private}",
            "-o",
            str(tmp_path / "out.sigstore.json"),
        ]
    )
    assert_one_line_error(result, BundleMalformed.exit_code, "duplicate key 'predicateType'")
    assert not (tmp_path / "out.sigstore.json").exists()


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (json.dumps(_statement(predicate={"n": 1})).replace("1", "1" * 5000), "5000 digits"),
        (json.dumps(_statement(predicate={"n": "\\ud800"})).replace("\\\\", "\\"), "surrogate"),
        (json.dumps(_statement(predicate={"n": float("nan")})), "NaN"),
        (
            json.dumps(_statement(predicate="@")).replace('"@"', "[" * 200 + "]" * 200),
            "nested",
        ),
    ],
)
def test_statements_out_of_range_are_malformed(payload: str, needle: str) -> None:
    with pytest.raises(BundleMalformed, match=needle):
        Statement.from_bytes(payload.encode())


# --- the property: what strict JSON accepts, every reader reads the same way -------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=_values, dup=st.booleans(), surrogate=st.booleans())
def test_strict_json_accepts_exactly_one_reading(value: object, dup: bool, surrogate: bool) -> None:
    text = json.dumps({"k": value})
    if dup:
        text = text[:-1] + ', "k": 0}'
    if surrogate:
        text = text[:-1] + ', "s": "\\udc80"}'
    try:
        parsed = strictjson.loads(text, what="doc", error=InvalidInput)
    except InvalidInput as exc:
        assert dup or surrogate, exc
        return
    assert not dup and not surrogate
    assert parsed == json.loads(text)  # the one reading is the standard one
    json.dumps(parsed).encode("utf-8")  # and it can always be written back out
