"""The plain (dataclass) attestation types write what pydantic writes for them, and read back.

``AttestationResult``, ``AttestationDocument``, ``CertificateSummary``, ``Check`` and
``PcrSet`` are standard dataclasses so that ``attestation verify`` starts without pydantic
(issue 17).  Their hand-written ``json_dict()`` is what the CLI prints; pydantic still
validates, serializes and describes them wherever a model embeds them and for the
published JSON Schemas.  Here both are checked to agree on every real AWS document, at
document time and (expired) now, and the strict checks the models made still hold.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import shared_fixture
from pydantic import BaseModel, ValidationError

from enclave_audit.errors import InvalidInput
from enclave_audit.model._pydantic_types import FlatPcrs, adapter
from enclave_audit.model.attestation_doc import (
    AttestationDocument,
    AttestationResult,
    CertificateSummary,
)
from enclave_audit.model.checks import Check, CheckOutcome, Verdict
from enclave_audit.model.measurements import PcrSet
from verifier.nitro import parse_attestation, unwrap_transport, verify_attestation

NITRO = shared_fixture("nitro")
DOCUMENTS = sorted((NITRO / "attestation").iterdir())
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _raw(path: Any) -> bytes:
    return unwrap_transport(path.read_bytes())


def _pydantic_json(value: object) -> Any:
    return adapter(type(value)).dump_python(value, mode="json", by_alias=True)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("at", ["document", "now"])
def test_result_json_is_what_pydantic_writes(path: Any, at: str) -> None:
    result = verify_attestation(
        _raw(path), at="document" if at == "document" else None, allow_debug=True, now=NOW
    )
    mine = result.json_dict()
    assert json.dumps(mine) == json.dumps(_pydantic_json(result))  # same members, same order
    assert list(mine)[:2] == ["schema", "schema_version"]
    again = AttestationResult.from_json_dict(json.loads(json.dumps(mine)))
    assert again == result
    assert again.json_dict() == mine


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.stem)
def test_document_json_is_what_pydantic_writes(path: Any) -> None:
    document = parse_attestation(_raw(path))
    mine = document.json_dict()
    assert json.dumps(mine) == json.dumps(_pydantic_json(document))
    assert "payload" not in mine  # the signed bytes are not part of the document's JSON
    back = adapter(AttestationDocument).validate_python(json.loads(json.dumps(mine)))
    assert back.json_dict() == mine


def test_embedded_in_a_model_as_before() -> None:
    """A pydantic model holding the plain types validates and dumps them as it did."""

    class Holder(BaseModel):
        result: AttestationResult
        pcrs: FlatPcrs
        measured: PcrSet
        checks: list[Check]

    result = verify_attestation(_raw(DOCUMENTS[0]), at="document", allow_debug=True)
    holder = Holder(result=result, pcrs=result.pcrs, measured=result.pcrs, checks=result.checks)
    dumped = holder.model_dump(mode="json", by_alias=True)
    assert dumped["result"] == result.json_dict()
    assert dumped["pcrs"] == result.json_dict()["pcrs"]
    assert dumped["measured"] == result.pcrs.json_dict() == {"values": dumped["pcrs"]}
    assert dumped["checks"] == [c.json_dict() for c in result.checks]
    assert Holder.model_validate(dumped) == holder


def test_reading_back_is_strict() -> None:
    data = verify_attestation(_raw(DOCUMENTS[0]), at="document").json_dict()
    for broken, where in (
        ({**data, "surprise": 1}, "surprise"),
        ({**data, "verdict": "MAYBE"}, "verdict"),
        ({k: v for k, v in data.items() if k != "checks"}, "checks"),
        ({**data, "schema": "enclave-audit/other"}, "schema"),
        ({**data, "checks": [{"name": "x", "outcome": "perhaps"}]}, "checks.0.outcome"),
        ({**data, "chain": [{**data["chain"][0], "extra": 1}]}, "chain.0.extra"),
    ):
        with pytest.raises(InvalidInput, match=rf"invalid at {where}"):
            AttestationResult.from_json_dict(broken)
    with pytest.raises(InvalidInput, match="not a hex string"):
        AttestationResult.from_json_dict({**data, "nonce": "zz"})
    with pytest.raises(InvalidInput, match="PCR3: value must be 32, 48 or 64 bytes"):
        AttestationResult.from_json_dict({**data, "pcrs": {**data["pcrs"], "3": "00"}})


def test_types_are_frozen_and_checked() -> None:
    check = Check(name="a", outcome="fail", detail="why")  # type: ignore[arg-type]
    assert check.outcome is CheckOutcome.FAIL
    with pytest.raises(ValueError, match="maybe"):
        Check(name="a", outcome="maybe")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be text"):
        Check(name=3, outcome=CheckOutcome.PASS)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        check.outcome = CheckOutcome.PASS  # type: ignore[misc]
    pcrs = PcrSet(values={"1": "ab" * 48, 0: bytes(48)})
    assert pcrs.indices() == [0, 1] and pcrs.hex(1) == "ab" * 48
    with pytest.raises(InvalidInput, match="PCR index 32 out of range"):
        PcrSet(values={32: bytes(48)})
    with pytest.raises(InvalidInput, match="expected a mapping"):
        PcrSet(values=[bytes(48)])  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        pcrs.values = {}  # type: ignore[misc]
    summary = verify_attestation(_raw(DOCUMENTS[0]), at="document").chain[0]
    assert isinstance(summary, CertificateSummary)
    assert summary.json_dict()["not_after"].endswith("Z")
    with pytest.raises(ValidationError):
        adapter(CertificateSummary).validate_python({**summary.json_dict(), "x": 1})
    assert Verdict.combine([]) is Verdict.INCONCLUSIVE
