"""Tamper sweep: flip bytes in every region of every real document; nothing passes or crashes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import cbor2
from nitro_sim import expected_documents, read_document

from enclave_audit.errors import AttestationMalformed, EnclaveAuditError
from enclave_audit.model.findings import Verdict
from verifier.nitro import ChainCache, verify_attestation

#: positions sampled per region (evenly spread, first and last byte included)
PER_REGION = 10
FLIPS = (0x01, 0x80, 0xFF)


def _spread(start: int, length: int, count: int = PER_REGION) -> list[int]:
    if length <= count:
        return list(range(start, start + length))
    return sorted({start + (length - 1) * i // (count - 1) for i in range(count)})


def _regions(raw: bytes) -> dict[str, list[int]]:
    _, _, payload, signature = cbor2.loads(raw)
    fields = cbor2.loads(payload)
    payload_at = raw.index(payload)
    regions: dict[str, list[int]] = {
        # array head, protected header bytes and head, unprotected map, payload head
        "envelope": list(range(payload_at)),
        "signature": _spread(len(raw) - len(signature), len(signature)),
        "payload": _spread(payload_at, len(payload)),
    }
    cert_at = raw.index(fields["certificate"])
    regions["certificate"] = _spread(cert_at, len(fields["certificate"]))
    for i, der in enumerate(fields["cabundle"]):
        regions[f"cabundle[{i}]"] = _spread(raw.index(der), len(der))
    pcr0_at = raw.index(fields["pcrs"][0])
    regions["pcrs"] = _spread(pcr0_at, 48, 4)
    return regions


def _outcome(doc: bytes) -> str:
    try:
        result = verify_attestation(doc, at="document", allow_debug=True)
    except AttestationMalformed:
        return "malformed"
    except EnclaveAuditError as exc:  # any other typed refusal
        return type(exc).__name__
    assert result.verdict is not Verdict.PASS, "a tampered document passed"
    return result.failed()[0].name if result.failed() else str(result.verdict)


def test_every_flipped_byte_is_rejected() -> None:
    seen: Counter[str] = Counter()
    by_region: dict[str, Counter[str]] = {}
    variants = 0
    for entry in expected_documents():
        raw = read_document(entry)
        for region, positions in _regions(raw).items():
            counter = by_region.setdefault(region.split("[")[0], Counter())
            for pos in positions:
                for flip in FLIPS:
                    mutated = bytearray(raw)
                    mutated[pos] ^= flip
                    outcome = _outcome(bytes(mutated))
                    seen[outcome] += 1
                    counter[outcome] += 1
                    variants += 1
    assert variants > 1500, variants
    # every flip of the signature itself is caught by the signature check
    assert set(by_region["signature"]) == {"cose.signature"}, by_region["signature"]
    # certificate and CA flips are caught (malformed DER, broken chain or signature)
    assert sum(by_region["cabundle"].values()) > 600
    assert seen["malformed"] > 0 and seen["cose.signature"] > 0


def test_the_sweep_baseline_passes() -> None:
    """The same documents untouched pass, so the sweep measures the tampering, not a setup error."""
    cache = ChainCache(0)
    for entry in expected_documents():
        result = verify_attestation(
            read_document(entry), at="document", allow_debug=True, chain_cache=cache
        )
        assert result.verdict is Verdict.PASS


def _doc_fields(entry: dict[str, Any]) -> dict[str, Any]:
    return dict(cbor2.loads(cbor2.loads(read_document(entry))[2]))


def test_swapping_documents_parts_is_rejected() -> None:
    """Splice the payload of one real document under another's signature, and vice versa."""
    docs = [cbor2.loads(read_document(e)) for e in expected_documents()]
    for i, a in enumerate(docs):
        for j, b in enumerate(docs):
            if i == j:
                continue
            spliced = cbor2.dumps([a[0], a[1], a[2], b[3]])
            assert _outcome(spliced) == "cose.signature"
