"""Property tests: random and mutated CBOR only ever produce the project's own typed errors."""

from __future__ import annotations

import math
import os
from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nitro_sim import (
    BASE_TIME,
    SimPki,
    build_pki,
    default_fields,
    expected_documents,
    read_document,
    sign_document,
)

from enclave_audit.errors import AttestationMalformed, EnclaveAuditError
from enclave_audit.model.findings import Verdict
from enclave_runtime.cbor import loads
from verifier.nitro import parse_attestation, unwrap_transport, verify_attestation

FUZZ = settings(
    max_examples=int(os.environ.get("NITRO_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
REAL = [read_document(e) for e in expected_documents()]
PKI: SimPki = build_pki()

scalars = (
    st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=80)
    | st.text(max_size=20)
    | st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
)
cbor_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.integers(-5, 40) | st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


def _verify_or_typed_error(doc: bytes, **kw: Any) -> None:
    try:
        verify_attestation(doc, **kw)
    except EnclaveAuditError:
        pass


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    try:
        parse_attestation(data)
    except AttestationMalformed:
        pass
    try:
        unwrap_transport(data)
    except AttestationMalformed:
        pass
    _verify_or_typed_error(data, at="document")


@FUZZ
@given(
    st.sampled_from(range(len(REAL))),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8),
    st.sampled_from(["replace", "insert", "delete", "truncate"]),
)
def test_mutated_real_documents(index: int, edits: list[tuple[int, int]], how: str) -> None:
    raw = REAL[index]
    doc = bytearray(raw)
    for pos, value in edits:
        at = pos % len(doc)
        if how == "replace":
            doc[at] = value
        elif how == "insert":
            doc.insert(at, value)
        elif how == "delete" and len(doc) > 1:
            del doc[at]
        else:
            doc = doc[: max(1, at)]
    try:
        result = verify_attestation(bytes(doc), at="document", allow_debug=True)
    except EnclaveAuditError:
        return
    if bytes(doc) != raw:
        assert result.verdict is not Verdict.PASS


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "module_id",
                "digest",
                "timestamp",
                "pcrs",
                "certificate",
                "cabundle",
                "public_key",
                "user_data",
                "nonce",
                "extra",
            ]
        ),
        cbor_values,
    ),
    st.booleans(),
)
def test_random_payload_fields_in_a_signed_envelope(
    overrides: dict[str, Any], indefinite: bool
) -> None:
    fields = default_fields(PKI, **overrides)
    doc = sign_document(PKI.leaf.key, fields, indefinite=indefinite)
    try:
        parse_attestation(doc)
    except AttestationMalformed:
        return
    _verify_or_typed_error(doc, roots=[PKI.trust_root], at=BASE_TIME)


@FUZZ
@given(cbor_values, cbor_values, cbor_values, cbor_values, st.booleans())
def test_random_envelopes(a: Any, b: Any, c: Any, d: Any, tagged: bool) -> None:
    envelope = [a, b, c, d]
    data = cbor2.dumps(cbor2.CBORTag(18, envelope) if tagged else envelope)
    _verify_or_typed_error(data, at="document")


@FUZZ
@given(cbor_values)
def test_decoder_agrees_with_cbor2(value: Any) -> None:
    encoded = cbor2.dumps(value)
    try:
        ours = loads(encoded, what="fuzz")
    except AttestationMalformed as exc:
        # the only thing we reject that cbor2 accepts: keys that are not int/text/bytes
        assert "map key" in str(exc)
        return
    theirs = cbor2.loads(encoded)
    assert _normal(ours) == _normal(theirs)


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return ("inf", value > 0)
    return value


@FUZZ
@given(st.text(alphabet="ABCDEFabcdef0123456789+/=-_ \n", max_size=400))
def test_text_transport(text: str) -> None:
    try:
        unwrap_transport(text.encode())
    except AttestationMalformed:
        pass
