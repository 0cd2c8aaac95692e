"""DSSE v1 (PAE, envelope) and Sigstore bundle v0.3 JSON for key-signed bundles.

Parsing here is strict on purpose: duplicate JSON keys, unknown fields,
non-canonical base64 and a ``keyid``/``hint`` that does not belong to the
verifying key are all rejected, so that any change to a bundle we accept makes
it fail (DSSE allows ignoring unknown fields; a security tool may be stricter
about the key-based bundles it reads).  Certificate (keyless) bundles are
parsed by sigstore-python, see :mod:`verifier.attest.verify`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from enclave_audit.errors import BundleMalformed
from enclave_runtime import strictjson

BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
#: media types whose bundles may carry a ``publicKey`` hint (v0.1-v0.3, both spellings).
BUNDLE_MEDIA_TYPES = frozenset(
    {
        BUNDLE_V03,
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
    }
)
BUNDLE_SIZE_LIMIT = 16 << 20

_STD_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_URL_B64 = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding (byte lengths, decimal, no leading zeros)."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def b64encode(data: bytes) -> str:
    """Standard alphabet with padding (what every verifier reads)."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: object, *, what: str) -> bytes:
    """Standard or URL-safe base64, canonical only (padding bits zero, no mixing)."""
    if not isinstance(text, str):
        raise BundleMalformed(f"{what}: expected a base64 string")
    if _STD_B64.match(text):
        altchars = None
    elif _URL_B64.match(text):
        altchars = b"-_"
    else:
        raise BundleMalformed(f"{what}: not base64")
    padded = text + "=" * (-len(text) % 4) if "=" not in text else text
    try:
        raw = base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise BundleMalformed(f"{what}: invalid base64") from None
    again = base64.b64encode(raw, altchars=altchars).decode("ascii")
    if again.rstrip("=") != text.rstrip("=") or (("=" in text) and again != text):
        raise BundleMalformed(f"{what}: non-canonical base64")
    return raw


def strict_json(data: bytes, *, what: str) -> Any:
    """Parse JSON strictly (:mod:`enclave_runtime.strictjson`): no duplicate keys, no
    NaN/Infinity, UTF-8 only, bounded numbers and nesting, no lone surrogates."""
    return strictjson.loads(data, what=what, error=BundleMalformed)


def _object(
    value: object, *, what: str, allowed: set[str], required: set[str]
) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BundleMalformed(f"{what}: expected a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise BundleMalformed(f"{what}: unknown field {unknown[0]!r}")
    missing = sorted(required - set(value))
    if missing:
        raise BundleMalformed(f"{what}: missing field {missing[0]!r}")
    return value


def _string(value: object, *, what: str) -> str:
    if not isinstance(value, str):
        raise BundleMalformed(f"{what}: expected a string")
    return value


@dataclass(frozen=True)
class Signature:
    sig: bytes
    keyid: str = ""


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope; ``payload`` is the exact signed body."""

    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "payload": b64encode(self.payload),
            "payloadType": self.payload_type,
            "signatures": [{"keyid": s.keyid, "sig": b64encode(s.sig)} for s in self.signatures],
        }

    @classmethod
    def from_json_obj(cls, obj: object, *, what: str = "dsseEnvelope") -> Envelope:
        env = _object(
            obj,
            what=what,
            allowed={"payload", "payloadType", "signatures"},
            required={"payload", "payloadType", "signatures"},
        )
        payload = b64decode_strict(env["payload"], what=f"{what}.payload")
        payload_type = _string(env["payloadType"], what=f"{what}.payloadType")
        sigs = env["signatures"]
        if not isinstance(sigs, list) or not sigs:
            raise BundleMalformed(f"{what}.signatures: expected a non-empty list")
        parsed: list[Signature] = []
        for index, item in enumerate(sigs):
            where = f"{what}.signatures[{index}]"
            entry = _object(item, what=where, allowed={"sig", "keyid"}, required={"sig"})
            sig = b64decode_strict(entry["sig"], what=f"{where}.sig")
            if not sig:
                raise BundleMalformed(f"{where}.sig: empty signature")
            keyid = _string(entry.get("keyid", ""), what=f"{where}.keyid")
            parsed.append(Signature(sig=sig, keyid=keyid))
        return cls(payload=payload, payload_type=payload_type, signatures=tuple(parsed))

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str = "envelope") -> Envelope:
        return cls.from_json_obj(strict_json(data, what=what), what=what)

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json_obj(), separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class KeyBundle:
    """A key-signed Sigstore bundle: ``publicKey.hint``, no log entries, one DSSE envelope."""

    envelope: Envelope
    hint: str
    media_type: str = BUNDLE_V03

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "verificationMaterial": {"publicKey": {"hint": self.hint}, "tlogEntries": []},
            "dsseEnvelope": self.envelope.to_json_obj(),
        }

    def to_bytes(self) -> bytes:
        """Compact JSON plus a newline: stable bytes for the same bundle."""
        return json.dumps(self.to_json_obj(), separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class CertificateBundle:
    """A bundle with a certificate (keyless); verified by sigstore-python."""

    raw: bytes
    media_type: str
    is_dsse: bool


ParsedBundle = KeyBundle | CertificateBundle


def parse_bundle(data: bytes, *, what: str = "bundle") -> ParsedBundle:
    """Classify and (for key bundles) fully parse a Sigstore bundle."""
    if len(data) > BUNDLE_SIZE_LIMIT:
        raise BundleMalformed(f"{what}: larger than {BUNDLE_SIZE_LIMIT} bytes")
    obj = strict_json(data, what=what)
    if not isinstance(obj, dict):
        raise BundleMalformed(f"{what}: expected a JSON object")
    if "payloadType" in obj and "mediaType" not in obj:
        raise BundleMalformed(f"{what}: this is a bare DSSE envelope, not a Sigstore bundle")
    media_type = _string(obj.get("mediaType"), what=f"{what}.mediaType")
    if media_type not in BUNDLE_MEDIA_TYPES:
        raise BundleMalformed(f"{what}: unsupported mediaType {media_type[:80]!r}")
    material = obj.get("verificationMaterial")
    if not isinstance(material, dict):
        raise BundleMalformed(f"{what}.verificationMaterial: expected a JSON object")
    has_dsse = "dsseEnvelope" in obj
    if has_dsse == ("messageSignature" in obj):
        raise BundleMalformed(f"{what}: needs exactly one of dsseEnvelope, messageSignature")
    if "publicKey" not in material:
        return CertificateBundle(raw=data, media_type=media_type, is_dsse=has_dsse)
    _object(
        obj,
        what=what,
        allowed={"mediaType", "verificationMaterial", "dsseEnvelope"},
        required={"mediaType", "verificationMaterial", "dsseEnvelope"},
    )
    _object(
        material,
        what=f"{what}.verificationMaterial",
        allowed={"publicKey", "tlogEntries", "timestampVerificationData"},
        required={"publicKey"},
    )
    if material.get("tlogEntries") not in (None, []):
        raise BundleMalformed(
            f"{what}: key-signed bundle with transparency log entries is not supported"
        )
    if material.get("timestampVerificationData") not in (None, {}):
        raise BundleMalformed(f"{what}: key-signed bundle with timestamps is not supported")
    public_key = _object(
        material["publicKey"],
        what=f"{what}.verificationMaterial.publicKey",
        allowed={"hint"},
        required=set(),
    )
    hint = _string(public_key.get("hint", ""), what=f"{what}.verificationMaterial.publicKey.hint")
    envelope = Envelope.from_json_obj(obj["dsseEnvelope"], what=f"{what}.dsseEnvelope")
    if len(envelope.signatures) != 1:
        raise BundleMalformed(f"{what}: a Sigstore bundle carries exactly one DSSE signature")
    return KeyBundle(envelope=envelope, hint=hint, media_type=media_type)
