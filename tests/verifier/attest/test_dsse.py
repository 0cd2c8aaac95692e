"""DSSE PAE, strict base64 and bundle parsing."""

from __future__ import annotations

import json

import pytest

from enclave_audit.errors import BundleMalformed
from verifier.attest.dsse import (
    CertificateBundle,
    Envelope,
    KeyBundle,
    Signature,
    b64decode_strict,
    pae,
    parse_bundle,
)


def test_pae_spec_vector() -> None:
    # secure-systems-lab/dsse protocol.md test vector
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t\u00e9", "\u00e9".encode()) == b"DSSEv1 3 t\xc3\xa9 2 \xc3\xa9"
    assert pae("", b"") == b"DSSEv1 0  0 "


@pytest.mark.parametrize(
    ("text", "raw"),
    [("aGk=", b"hi"), ("aGk", b"hi"), ("-_8=", b"\xfb\xff"), ("+/8=", b"\xfb\xff"), ("", b"")],
)
def test_base64_accepts_both_alphabets(text: str, raw: bytes) -> None:
    assert b64decode_strict(text, what="x") == raw


@pytest.mark.parametrize("text", ["aGl=", "a Gk=", "aGk==", "+_8=", "aG=k", 5, "a\n"])
def test_base64_rejects_non_canonical(text: object) -> None:
    with pytest.raises(BundleMalformed):
        b64decode_strict(text, what="x")


def _key_bundle() -> bytes:
    env = Envelope(
        payload=b"{}", payload_type="application/vnd.in-toto+json", signatures=(Signature(b"\x01"),)
    )
    return KeyBundle(envelope=env, hint="h").to_bytes()


def test_key_bundle_round_trip() -> None:
    parsed = parse_bundle(_key_bundle())
    assert isinstance(parsed, KeyBundle) and parsed.hint == "h"
    assert parsed.envelope.payload == b"{}"


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda o: o.update({"extra": 1}), "unknown field 'extra'"),
        (lambda o: o.update({"mediaType": "application/json"}), "mediaType"),
        (lambda o: o["dsseEnvelope"]["signatures"].append({"sig": "AQ=="}), "exactly one"),
        (lambda o: o["dsseEnvelope"].update({"signatures": []}), "non-empty"),
        (lambda o: o["dsseEnvelope"]["signatures"][0].update({"keyid": 3}), "keyid"),
        (lambda o: o["verificationMaterial"].update({"tlogEntries": [{}]}), "transparency"),
        (lambda o: o.update({"messageSignature": {}}), "exactly one of"),
        (lambda o: o.pop("dsseEnvelope"), "exactly one of"),
        (lambda o: o["dsseEnvelope"].update({"payload": "***"}), "payload"),
    ],
)
def test_bundle_malformed(edit, needle: str) -> None:  # type: ignore[no-untyped-def]
    obj = json.loads(_key_bundle())
    edit(obj)
    with pytest.raises(BundleMalformed, match=needle):
        parse_bundle(json.dumps(obj).encode())


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b'{"a":1,"a":2}', "duplicate"),
        (b'{"x": NaN}', "NaN"),
        (b"\xff", "UTF-8"),
        (b"[", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"payload":"","payloadType":"x","signatures":[]}', "bare DSSE envelope"),
    ],
)
def test_bundle_json_errors(data: bytes, needle: str) -> None:
    with pytest.raises(BundleMalformed, match=needle):
        parse_bundle(data)


def test_certificate_bundles_are_classified(sig_dir) -> None:  # type: ignore[no-untyped-def]
    parsed = parse_bundle(
        (sig_dir / "conformance-hashedrekord-v0.3" / "bundle.sigstore.json").read_bytes()
    )
    assert isinstance(parsed, CertificateBundle) and not parsed.is_dsse
