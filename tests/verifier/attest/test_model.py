"""in-toto Statement v1 / SLSA Provenance v1 / VSA v1 models against the specs."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enclave_audit.errors import BundleMalformed
from enclave_audit.model.attestation import (
    PCRS_BYPRODUCT_NAME,
    PROVENANCE_V1,
    STATEMENT_TYPE,
    VSA_EXT_PCRS,
    VSA_EXT_REBUILDS,
    VSA_EXT_SOURCE_COMMIT,
    VSA_EXT_VERDICT,
    VSA_V1,
    ProvenancePredicate,
    ResourceDescriptor,
    Statement,
    VerificationResult,
    VsaPredicate,
    provenance_statement,
    vsa_statement,
)
from enclave_audit.model.digests import Digest
from enclave_audit.model.findings import Verdict
from enclave_audit.model.measurements import PcrSet, measurements_json

DIGEST = Digest.parse("sha256:" + "ab" * 32)
PCRS = PcrSet(values={0: "aa" * 48, 1: "bb" * 48, 2: "cc" * 48, 8: "dd" * 48})
SUBJECT = ResourceDescriptor.for_digest("enclave.eif", DIGEST)
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_vsa(verdict: Verdict, **extra: object) -> Statement:
    return vsa_statement(
        subjects=[SUBJECT],
        resource_uri="https://example.invalid/enclave.eif",
        policy_uri="https://example.invalid/policy.json",
        policy_digest=DIGEST,
        verdict=verdict,
        time_verified=WHEN,
        pcrs=PCRS,
        source_commit="0123456789abcdef0123456789abcdef01234567",
        rebuilds=2,
        **extra,  # type: ignore[arg-type]
    )


def test_vsa_json_conforms_to_spec_shape() -> None:
    obj = json.loads(make_vsa(Verdict.PASS, dependency_levels={"SLSA_BUILD_LEVEL_3": 5}).to_bytes())
    assert obj["_type"] == STATEMENT_TYPE and obj["predicateType"] == VSA_V1
    pred = obj["predicate"]
    assert pred["verificationResult"] == "PASSED"
    assert isinstance(pred["verifiedLevels"], list)  # the PyPI binding writes a string
    assert pred["dependencyLevels"] == {"SLSA_BUILD_LEVEL_3": 5}  # integers, not "5"
    assert pred["timeVerified"] == "2026-01-02T03:04:05Z"
    assert pred["policy"] == {
        "uri": "https://example.invalid/policy.json",
        "digest": {"sha256": DIGEST.hex},
    }
    assert pred["verifier"]["id"].startswith("https://")
    assert pred["slsaVersion"] == "1.1"
    # extension fields, vendor-prefixed
    assert pred[VSA_EXT_PCRS]["PCR8"] == "dd" * 48
    assert pred[VSA_EXT_REBUILDS] == 2
    assert pred[VSA_EXT_VERDICT] == "PASS"
    assert pred[VSA_EXT_SOURCE_COMMIT] == "0123456789abcdef0123456789abcdef01234567"
    assert "null" not in json.dumps(obj)


@pytest.mark.parametrize("verdict", [Verdict.FAIL, Verdict.INCONCLUSIVE])
def test_vsa_fails_closed(verdict: Verdict) -> None:
    pred = make_vsa(verdict).predicate_as(VsaPredicate)
    assert pred.verification_result is VerificationResult.FAILED
    assert pred.verified_levels == ["FAILED"]
    assert pred.verdict is verdict


def test_vsa_passed_with_non_pass_verdict_is_malformed() -> None:
    obj = json.loads(make_vsa(Verdict.INCONCLUSIVE).to_bytes())
    obj["predicate"]["verificationResult"] = "PASSED"
    with pytest.raises(BundleMalformed):
        Statement.from_obj(obj).predicate_as(VsaPredicate)


def test_provenance_shape_and_pcrs_byproduct() -> None:
    statement = provenance_statement(
        subjects=[SUBJECT],
        builder_id="https://example.invalid/builder",
        external_parameters={"source": "git+https://example.invalid/repo@refs/tags/v1"},
        resolved_dependencies=[
            ResourceDescriptor(
                uri="git+https://example.invalid/repo", digest={"gitCommit": "ab" * 20}
            )
        ],
        invocation_id="run-1",
        started_on=WHEN,
        finished_on=WHEN,
        pcrs=PCRS,
    )
    obj = json.loads(statement.to_bytes())
    pred = obj["predicate"]
    assert pred["buildDefinition"]["resolvedDependencies"][0]["digest"] == {"gitCommit": "ab" * 20}
    assert pred["runDetails"]["metadata"] == {
        "invocationId": "run-1",
        "startedOn": "2026-01-02T03:04:05Z",
        "finishedOn": "2026-01-02T03:04:05Z",
    }
    (byproduct,) = pred["runDetails"]["byproducts"]
    assert byproduct["name"] == PCRS_BYPRODUCT_NAME
    assert byproduct["annotations"]["PCR0"] == "aa" * 48
    import hashlib

    assert (
        byproduct["digest"]["sha256"]
        == hashlib.sha256(measurements_json(PCRS).encode()).hexdigest()
    )
    assert statement.predicate_as(ProvenancePredicate).pcrs() == PCRS
    # the byproduct digest binds its annotations
    byproduct["annotations"]["PCR0"] = "ee" * 48
    with pytest.raises(BundleMalformed, match="digest does not match"):
        Statement.from_obj(obj).predicate_as(ProvenancePredicate).pcrs()


def test_serialisation_is_stable_and_preserves_unknown_fields() -> None:
    statement = make_vsa(Verdict.PASS)
    assert statement.to_bytes() == make_vsa(Verdict.PASS).to_bytes()
    obj = json.loads(statement.to_bytes())
    obj["futureField"] = {"x": 1}
    obj["subject"][0]["futureDescriptorField"] = "kept"
    obj["predicate"]["otherVendor_field"] = [1, 2]
    again = Statement.from_bytes(json.dumps(obj, indent=3).encode())
    assert json.loads(again.to_bytes()) == obj
    assert again.to_bytes() == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert again.predicate_as(VsaPredicate).model_extra == {"otherVendor_field": [1, 2]}


def test_real_provenance_payload_parses(sig_dir: Path) -> None:
    bundle = json.loads(
        (sig_dir / "conformance-dsse-slsa-provenance-v1" / "bundle.sigstore.json").read_bytes()
    )
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    statement = Statement.from_bytes(payload)
    assert statement.predicate_type == PROVENANCE_V1
    pred = statement.predicate_as(ProvenancePredicate)
    assert pred.build_definition.build_type == "https://actions.github.io/buildtypes/workflow/v1"
    assert json.loads(statement.to_bytes()) == json.loads(payload)
    assert pred.pcrs() is None


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda o: o.update({"_type": "https://in-toto.io/Statement/v0.1"}), "_type"),
        (lambda o: o.update({"subject": []}), "subject"),
        (lambda o: o["subject"][0].pop("digest"), "digest"),
        (lambda o: o["subject"][0]["digest"].update({"sha256": "AB" * 32}), "lowercase hex"),
        (lambda o: o.pop("predicateType"), "predicateType"),
    ],
    ids=["type", "empty-subject", "no-digest", "upper-hex", "no-predicate-type"],
)
def test_malformed_statements(mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    obj = json.loads(make_vsa(Verdict.PASS).to_bytes())
    mutate(obj)
    with pytest.raises(BundleMalformed, match=needle):
        Statement.from_obj(obj)


@pytest.mark.parametrize("data", [b"", b"\xff\xfe", b"[1]", b"{", b'"x"'])
def test_non_statements_are_one_line_errors(data: bytes) -> None:
    with pytest.raises(BundleMalformed) as info:
        Statement.from_bytes(data)
    assert "\n" not in info.value.diagnostic()


def test_predicate_type_mismatch() -> None:
    with pytest.raises(BundleMalformed, match="predicateType"):
        make_vsa(Verdict.PASS).predicate_as(ProvenancePredicate)
