"""The six real AWS documents: every value in expected.json, verdicts at document time and now."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from nitro_sim import FIXTURES, SimPki, expected_documents, read_document

from enclave_audit.errors import (
    AttestationChainInvalid,
    AttestationExpired,
    AttestationPolicyFailed,
    AttestationSignatureInvalid,
    AuditFailed,
    InvalidInput,
    TrustError,
)
from enclave_audit.model.attestation_doc import AttestationResult, TimeSource
from enclave_audit.model.findings import CheckOutcome, Verdict
from enclave_audit.model.measurements import PcrSet
from verifier.nitro import (
    AWS_ROOT_NAME,
    AWS_ROOT_SHA256,
    ChainCache,
    TrustRoot,
    aws_nitro_root,
    parse_attestation,
    require_pass,
    unwrap_transport,
    verify_attestation,
)
from verifier.nitro.roots import AWS_ROOT_PEM

Doc = tuple[dict[str, Any], bytes]


def _doc_time(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["timestamp_utc"].replace("Z", "+00:00"))


def test_embedded_root_is_the_published_aws_root() -> None:
    root = aws_nitro_root()
    assert root.sha256 == AWS_ROOT_SHA256
    assert AWS_ROOT_PEM == (FIXTURES / "aws_nitro_root_g1.pem").read_bytes()
    assert root.certificate.subject.rfc4514_string() == "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"


def test_pinned_root_from_der_is_checked_before_use() -> None:
    """aws_nitro_root() decodes the embedded PEM itself (no pyca serialization import):
    the DER is the fixture's, and a changed byte or junk is refused, never trusted."""
    root = aws_nitro_root()
    fixture = x509.load_pem_x509_certificate((FIXTURES / "aws_nitro_root_g1.pem").read_bytes())
    assert root.der == fixture.public_bytes(serialization.Encoding.DER)
    assert root.certificate == fixture
    tampered = bytearray(root.der)
    tampered[-1] ^= 1  # the signature's last byte
    with pytest.raises(TrustError, match="fingerprint"):
        TrustRoot.from_der(bytes(tampered), name="aws", expected_sha256=AWS_ROOT_SHA256)
    with pytest.raises(TrustError, match="self-signature"):
        TrustRoot.from_der(bytes(tampered), name="aws")
    with pytest.raises(InvalidInput, match="not a usable DER certificate"):
        TrustRoot.from_der(b"junk", name="junk")


def test_parse_reproduces_every_expected_value(real_document: Doc) -> None:
    entry, raw = real_document
    assert hashlib.sha256(raw).hexdigest() == entry["cose_sha256"]
    doc = parse_attestation(raw)
    assert doc.module_id == entry["module_id"]
    assert doc.digest == entry["digest"] == "SHA384"
    assert doc.timestamp_ms == entry["timestamp_ms"]
    assert doc.timestamp == _doc_time(entry)
    assert {str(i): doc.pcrs.hex(i) for i in doc.pcrs.indices()} == entry["pcrs"]
    assert doc.is_debug == entry["debug_mode_pcr0_1_2_all_zero"]
    assert doc.cose_algorithm == -35 and not doc.tagged
    assert doc.protected_header.hex() == entry["protected_header_hex"]
    assert len(doc.signature) == entry["signature_len"]
    assert len(doc.payload) == entry["payload_len"]
    assert doc.payload_map == ("indefinite" if "indefinite" in entry["payload_map"] else "definite")
    assert hashlib.sha256(doc.certificate).hexdigest() == entry["leaf_certificate"]["sha256"]
    assert hashlib.sha256(doc.cabundle[0]).hexdigest() == entry["cabundle_root_sha256"]
    assert len(doc.cabundle) == len(entry["cabundle"])
    for name in ("public_key", "user_data", "nonce"):
        want, got = entry[name], getattr(doc, name)
        if want is None:
            assert got is None, name
            continue
        assert got is not None and len(got) == want["len"], name
        if "hex" in want:
            assert got.hex() == want["hex"], name
        else:
            assert hashlib.sha256(got).hexdigest() == want["sha256"], name
    # PCR4 = extend(instance id): an independent check that the PCR map decoded right
    assert doc.instance_id == entry["instance_id"]
    extended = hashlib.sha384(bytes(48) + doc.instance_id.encode()).digest()
    assert doc.pcrs[4] == extended


def test_verifies_at_document_time(real_document: Doc) -> None:
    entry, raw = real_document
    result = verify_attestation(raw, at="document", allow_debug=True, chain_cache=ChainCache(0))
    assert result.verdict is Verdict.PASS, result.summary()
    assert result.root_sha256 == AWS_ROOT_SHA256 and result.root_name == AWS_ROOT_NAME
    assert result.time_source is TimeSource.DOCUMENT
    assert result.verification_time == _doc_time(entry)
    assert result.module_id == entry["module_id"]
    assert result.chain[0].sha256 == entry["leaf_certificate"]["sha256"]
    assert result.chain[-1].sha256 == AWS_ROOT_SHA256
    names = [c.name for c in result.checks]
    for required in (
        "cose.signature",
        "chain.root",
        "chain.signatures",
        "chain.validity",
        "chain.profile",
    ):
        assert (
            result.check(required) is not None
            and result.check(required).outcome is CheckOutcome.PASS
        )  # type: ignore[union-attr]
    assert len(names) == len(set(names))
    assert require_pass(result) is result


def test_fails_now_because_the_leaf_expired(real_document: Doc) -> None:
    entry, raw = real_document
    now = datetime.now(UTC)
    result = verify_attestation(raw, now=now, allow_debug=True)
    assert result.verdict is Verdict.FAIL
    assert result.time_source is TimeSource.NOW
    validity = result.check("chain.validity")
    assert validity is not None and validity.outcome is CheckOutcome.FAIL
    assert "leaf" in validity.detail and "expired" in validity.detail
    assert entry["leaf_certificate"]["not_after"] in validity.detail
    # everything else about the document is still fine
    assert [c.name for c in result.failed()] == ["chain.validity"]
    with pytest.raises(AttestationExpired, match="expired"):
        require_pass(result)


def test_debug_documents_are_refused_unless_allowed() -> None:
    debug = [e for e in expected_documents() if e["debug_mode_pcr0_1_2_all_zero"]]
    assert len(debug) == 2
    for entry in debug:
        result = verify_attestation(read_document(entry), at="document")
        assert result.verdict is Verdict.FAIL
        assert [c.name for c in result.failed()] == ["policy.debug"]
        with pytest.raises(AttestationPolicyFailed, match="allow-debug"):
            require_pass(result)
        allowed = verify_attestation(read_document(entry), at="document", allow_debug=True)
        assert allowed.verdict is Verdict.PASS
        assert "debug" in allowed.check("policy.debug").detail  # type: ignore[union-attr]


def _entry(stem: str) -> dict[str, Any]:
    return next(e for e in expected_documents() if stem in e["file"])


def test_expected_pcrs_from_nitro_cli_measurements(tmp_path: Path) -> None:
    entry = _entry("evervault_2022-10-13")
    pcrs = entry["pcrs"]
    measurements = {
        "Measurements": {
            "HashAlgorithm": "Sha384 { ... }",
            "PCR0": pcrs["0"],
            "PCR1": pcrs["1"],
            "PCR2": pcrs["2"],
            "PCR8": pcrs["8"],
        }
    }
    path = tmp_path / "measurements.json"
    path.write_text(json.dumps(measurements, indent=2))
    raw = read_document(entry)
    good = verify_attestation(raw, at="document", expected_pcrs=PcrSet.load(path))
    assert good.verdict is Verdict.PASS
    assert good.check("policy.pcrs").outcome is CheckOutcome.PASS  # type: ignore[union-attr]

    wrong = dict(measurements["Measurements"], PCR8="00" * 48)
    bad = verify_attestation(
        raw, at="document", expected_pcrs=PcrSet.from_nitro_json({"Measurements": wrong})
    )
    assert bad.verdict is Verdict.FAIL
    assert "PCR8" in bad.check("policy.pcrs").detail  # type: ignore[union-attr]
    with pytest.raises(AttestationPolicyFailed, match="PCR8"):
        require_pass(bad)

    absent = verify_attestation(raw, at="document", expected_pcrs=PcrSet(values={20: bytes(48)}))
    assert "PCR20 absent" in absent.check("policy.pcrs").detail  # type: ignore[union-attr]


def test_expected_pcrs_from_verify_json_output() -> None:
    entry = _entry("base-nitro-validator_2024")
    raw = read_document(entry)
    first = verify_attestation(raw, at="document")
    again = verify_attestation(
        raw, at="document", expected_pcrs=PcrSet.from_nitro_json(first.json_dict())
    )
    assert again.check("policy.pcrs").outcome is CheckOutcome.PASS  # type: ignore[union-attr]
    assert "PCR15" in again.check("policy.pcrs").detail  # type: ignore[union-attr]


def test_nonce_policy() -> None:
    entry = _entry("evervault_2022-10-13")
    raw = read_document(entry)
    nonce = bytes.fromhex(entry["nonce"]["hex"])
    assert verify_attestation(raw, at="document", nonce=nonce).verdict is Verdict.PASS
    wrong = verify_attestation(raw, at="document", nonce=nonce[:-1] + b"\x00")
    assert wrong.verdict is Verdict.FAIL and wrong.failed()[0].name == "policy.nonce"
    no_nonce = verify_attestation(
        read_document(_entry("base-nitro-validator_2024")), at="document", nonce=b"x"
    )
    assert "no nonce" in no_nonce.check("policy.nonce").detail  # type: ignore[union-attr]


def test_max_age_policy() -> None:
    entry = _entry("base-nitro-validator_2026")
    raw = read_document(entry)
    t = _doc_time(entry)
    fresh = verify_attestation(
        raw, at="document", max_age=timedelta(minutes=5), now=t + timedelta(minutes=1)
    )
    assert fresh.verdict is Verdict.PASS
    stale = verify_attestation(
        raw, at="document", max_age=timedelta(minutes=5), now=t + timedelta(hours=1)
    )
    assert stale.verdict is Verdict.FAIL and stale.failed()[0].name == "policy.max_age"
    future = verify_attestation(
        raw, at="document", max_age=timedelta(minutes=5), now=t - timedelta(hours=1)
    )
    assert "future" in future.check("policy.max_age").detail  # type: ignore[union-attr]
    # asked for an age limit but gave no clock: cannot be judged, so never PASS
    unknown = verify_attestation(raw, at="document", max_age=timedelta(minutes=5))
    assert unknown.verdict is Verdict.INCONCLUSIVE
    with pytest.raises(AuditFailed, match="INCONCLUSIVE"):
        require_pass(unknown)


def test_no_time_at_all_is_inconclusive() -> None:
    raw = read_document(_entry("base-nitro-validator_2024"))
    result = verify_attestation(raw)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.time_source is TimeSource.NONE
    assert result.check("chain.validity").outcome is CheckOutcome.NOT_RUN  # type: ignore[union-attr]


def test_explicit_time_inside_and_outside_the_leaf_window() -> None:
    entry = _entry("blocky-nitrite_2024-09-07_prod")
    raw = read_document(entry)
    inside = datetime(2024, 9, 7, 17, 0, tzinfo=UTC)
    after = datetime(2024, 9, 7, 17, 37, 40, tzinfo=UTC)
    before = datetime(2024, 9, 7, 14, 37, 35, tzinfo=UTC)
    assert verify_attestation(raw, at=inside).verdict is Verdict.PASS
    assert "expired" in verify_attestation(raw, at=after).check("chain.validity").detail  # type: ignore[union-attr]
    assert "not yet valid" in verify_attestation(raw, at=before).check("chain.validity").detail  # type: ignore[union-attr]


def test_other_root_is_refused(sim_pki: SimPki) -> None:
    raw = read_document(_entry("blocky-nitrite_2024-09-07_prod"))
    result = verify_attestation(raw, at="document", roots=[sim_pki.trust_root])
    assert result.verdict is Verdict.FAIL
    assert result.root_sha256 is None
    assert result.check("chain.root").outcome is CheckOutcome.FAIL  # type: ignore[union-attr]
    with pytest.raises(AttestationChainInvalid, match="not a trusted root"):
        require_pass(result)


def test_signature_covers_the_original_payload_bytes() -> None:
    """Re-encoding the indefinite-length 2026 payload as a definite map breaks the signature."""
    raw = read_document(_entry("base-nitro-validator_2026"))
    protected, unprotected, payload, signature = cbor2.loads(raw)
    assert payload[0] == 0xBF
    definite = cbor2.dumps(cbor2.loads(payload))
    assert definite[0] == 0xA9 and definite != payload
    rebuilt = cbor2.dumps([protected, unprotected, definite, signature])
    result = verify_attestation(rebuilt, at="document")
    assert result.verdict is Verdict.FAIL
    assert [c.name for c in result.failed()] == ["cose.signature"]
    with pytest.raises(AttestationSignatureInvalid):
        require_pass(result)


def test_tagged_envelope_of_a_real_document_verifies() -> None:
    raw = read_document(_entry("evervault_2022-10-13"))
    tagged = b"\xd2" + raw
    result = verify_attestation(tagged, at="document")
    assert result.verdict is Verdict.PASS
    assert parse_attestation(tagged).tagged


def test_transport_encodings_are_detected() -> None:
    entry = _entry("evervault_2022-10-12")
    raw = read_document(entry)
    assert unwrap_transport(raw) is raw
    assert unwrap_transport(base64.b64encode(raw)) == raw
    assert unwrap_transport(base64.b64encode(raw) + b"\n") == raw
    assert unwrap_transport(base64.urlsafe_b64encode(raw).rstrip(b"=")) == raw
    assert unwrap_transport(raw.hex().encode()) == raw
    wrapped = base64.encodebytes(raw)  # 76-column lines
    assert unwrap_transport(wrapped) == raw


def test_result_json_round_trips(real_document: Doc) -> None:
    _, raw = real_document
    result = verify_attestation(raw, at="document", allow_debug=True)
    data = json.loads(json.dumps(result.json_dict()))
    assert next(iter(data)) == "schema"
    assert set(data["pcrs"]) == {str(i) for i in range(16)}
    assert all(v == v.lower() and len(v) == 96 for v in data["pcrs"].values())
    assert data["timestamp"].endswith("Z")
    assert AttestationResult.from_json_dict(data) == result


def _pyca_verdict(raw: bytes, when: datetime, *, relaxed: bool) -> str:
    """An independent oracle: pyca's RFC 5280 client verifier over the same chain."""
    from cryptography import x509
    from cryptography.x509.verification import (
        ExtensionPolicy,
        PolicyBuilder,
        Store,
        VerificationError,
    )

    doc = parse_attestation(raw)
    builder = PolicyBuilder().store(Store([aws_nitro_root().certificate])).time(when)
    if relaxed:
        builder = builder.extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
    verifier = builder.build_client_verifier()
    leaf = x509.load_der_x509_certificate(doc.certificate)
    intermediates = [x509.load_der_x509_certificate(d) for d in doc.cabundle[1:]]
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        return f"refused: {exc}"
    return "ok"


def test_chain_verdicts_agree_with_pyca_policy_verifier(real_document: Doc) -> None:
    entry, raw = real_document
    at_doc = _doc_time(entry)
    late = at_doc + timedelta(days=3650)
    assert _pyca_verdict(raw, at_doc, relaxed=True) == "ok"
    assert _pyca_verdict(raw, late, relaxed=True).startswith("refused")
    # the gotcha from the spec: pyca's default end-entity policy refuses every AWS leaf (no AKI)
    assert "2.5.29.35" in _pyca_verdict(raw, at_doc, relaxed=False)
    ours_doc = verify_attestation(raw, at=at_doc, allow_debug=True, chain_cache=ChainCache(0))
    ours_late = verify_attestation(raw, at=late, allow_debug=True, chain_cache=ChainCache(0))
    assert ours_doc.verdict is Verdict.PASS
    assert [c.name for c in ours_late.failed()] == ["chain.validity"]
