"""The EIF signature section is decoded strictly: one CBOR item, nothing after it.

``cbor2.loads`` decoded the first item and ignored whatever followed, so bytes
appended to the section, or to the COSE_Sign1 inside it, went unnoticed.
"""

from __future__ import annotations

import hashlib

import cbor2
import pytest

from builder.eif.signature import parse_signature_section, sign_pcr0
from enclave_audit.errors import EifSignatureInvalid

PCR0 = hashlib.sha384(b"image").digest()


def _section(signing_pair) -> bytes:  # type: ignore[no-untyped-def]
    return sign_pcr0(PCR0, signing_pair.cert.read_bytes(), signing_pair.key.read_bytes())


def _rebuilt(section: bytes, cose: bytes) -> bytes:
    entry = cbor2.loads(section)[0]
    return cbor2.dumps(
        [{"signing_certificate": entry["signing_certificate"], "signature": list(cose)}]
    )


def test_genuine_section_verifies(signing_pair) -> None:  # type: ignore[no-untyped-def]
    info = parse_signature_section(_section(signing_pair))
    assert info.covers(PCR0)
    assert not info.covers(bytes(48))


def test_trailing_bytes_after_the_section_are_refused(signing_pair) -> None:  # type: ignore[no-untyped-def]
    section = _section(signing_pair)
    assert cbor2.loads(section + b"\x00") == cbor2.loads(section)  # what the old reader saw
    with pytest.raises(EifSignatureInvalid, match="trailing"):
        parse_signature_section(section + b"\x00")


def test_trailing_bytes_inside_the_cose_are_refused(signing_pair) -> None:  # type: ignore[no-untyped-def]
    section = _section(signing_pair)
    cose = bytes(cbor2.loads(section)[0]["signature"])
    assert parse_signature_section(_rebuilt(section, cose)).covers(PCR0)
    with pytest.raises(EifSignatureInvalid, match="trailing"):
        parse_signature_section(_rebuilt(section, cose + b"\xf6"))


def test_duplicate_keys_and_wrong_tags_are_refused(signing_pair) -> None:  # type: ignore[no-untyped-def]
    section = _section(signing_pair)
    entry = cbor2.loads(section)[0]
    cert = cbor2.dumps("signing_certificate") + cbor2.dumps(entry["signing_certificate"])
    sig = cbor2.dumps("signature") + cbor2.dumps(entry["signature"])
    duplicated = b"\x81\xa3" + cert + sig + sig
    with pytest.raises(EifSignatureInvalid, match="duplicate map key"):
        parse_signature_section(duplicated)
    cose = bytes(entry["signature"])
    tagged = cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(cose)))
    assert parse_signature_section(_rebuilt(section, tagged)).covers(PCR0)
    wrong_tag = cbor2.dumps(cbor2.CBORTag(98, cbor2.loads(cose)))
    with pytest.raises(EifSignatureInvalid, match="tag 98"):
        parse_signature_section(_rebuilt(section, wrong_tag))
