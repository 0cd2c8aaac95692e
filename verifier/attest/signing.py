"""Signers chosen by key URI, and :func:`sign_statement`.

==================  ==========================================================
URI                 Signer
==================  ==========================================================
``file:PATH``       :class:`KeySigner`: local ECDSA P-256 or Ed25519 private
                    key (PKCS#8 PEM); key-based Sigstore bundle v0.3 with a
                    ``publicKey`` hint and no log entry.  The passphrase of an
                    encrypted key comes from ``$ENCLAVE_AUDIT_KEY_PASSPHRASE``.
``sigstore:``       :class:`SigstoreSigner`: keyless through sigstore-python
``sigstore:staging``  (Fulcio certificate from an ambient OIDC token, Rekor
                    entry, RFC 3161 timestamp); bundle v0.3.  Needs network
                    and, in GitHub Actions, ``permissions: id-token: write``.
==================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from enclave_audit.errors import (
    EnvironmentProblem,
    InvalidInput,
    ServiceUnavailable,
)
from enclave_audit.model.attestation import INTOTO_PAYLOAD_TYPE, Statement
from verifier.attest.dsse import Envelope, KeyBundle, Signature, pae
from verifier.attest.keys import (
    PrivateKey,
    PublicKey,
    key_hint,
    key_type_of,
    load_private_key,
    passphrase_from_env,
    ssh_fingerprint,
)

if TYPE_CHECKING:
    from sigstore.oidc import IdentityToken


class Signer(Protocol):
    """Signs the exact statement bytes as DSSE and returns Sigstore bundle v0.3 JSON bytes."""

    def describe(self) -> str:
        """Who signs, for logs (key fingerprint or 'sigstore keyless')."""
        ...

    def sign_dsse(self, payload: bytes, payload_type: str) -> bytes:
        """Bundle JSON bytes around a DSSE envelope over exactly ``payload``."""
        ...


class KeySigner:
    """DSSE with a local key; ``keyid`` empty (works with every verifier) or the SSH fingerprint."""

    def __init__(self, key: PrivateKey, *, with_keyid: bool = False) -> None:
        key_type_of(key)
        self._key = key
        self._with_keyid = with_keyid
        public = key.public_key()
        self.fingerprint = ssh_fingerprint(public)
        self.hint = key_hint(public)

    @classmethod
    def from_path(cls, path: Path, *, with_keyid: bool = False) -> KeySigner:
        return cls(load_private_key(path, passphrase=passphrase_from_env()), with_keyid=with_keyid)

    def describe(self) -> str:
        return f"key {self.fingerprint}"

    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def envelope(self, payload: bytes, payload_type: str) -> Envelope:
        message = pae(payload_type, payload)
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            sig = self._key.sign(message)
        else:
            sig = self._key.sign(message, ec.ECDSA(hashes.SHA256()))  # DER, as Sigstore expects
        keyid = self.fingerprint if self._with_keyid else ""
        return Envelope(
            payload=payload, payload_type=payload_type, signatures=(Signature(sig, keyid),)
        )

    def sign_dsse(self, payload: bytes, payload_type: str) -> bytes:
        return KeyBundle(envelope=self.envelope(payload, payload_type), hint=self.hint).to_bytes()


class SigstoreSigner:
    """Keyless signing through sigstore-python with an ambient OIDC credential.

    Only runs where an identity token can be obtained (GitHub Actions with
    ``id-token: write``, GitLab ``SIGSTORE_ID_TOKEN``, GCP, Buildkite,
    CircleCI); everywhere else :meth:`sign_dsse` raises
    :class:`EnvironmentProblem` naming what is missing.
    """

    def __init__(self, instance: str = "production") -> None:
        if instance not in ("production", "staging"):
            raise InvalidInput(
                f"sigstore instance {instance!r}: expected 'sigstore:' or 'sigstore:staging'"
            )
        self.instance = instance

    def describe(self) -> str:
        return f"sigstore keyless ({self.instance})"

    def _identity_token(self) -> IdentityToken:
        from sigstore.oidc import IdentityError, IdentityToken, detect_credential

        try:
            raw = detect_credential()
        except IdentityError as exc:
            raise EnvironmentProblem(
                f"sigstore: ambient OIDC credential detection failed: {' '.join(str(exc).split())}"
            ) from None
        if raw is None:
            raise EnvironmentProblem(
                "sigstore: no ambient OIDC credential (run in GitHub Actions with "
                "'permissions: id-token: write', or use a file: key)"
            )
        try:
            return IdentityToken(raw)
        except IdentityError as exc:
            raise EnvironmentProblem(f"sigstore: unusable identity token: {exc}") from None

    def sign_dsse(self, payload: bytes, payload_type: str) -> bytes:
        if payload_type != INTOTO_PAYLOAD_TYPE:
            raise InvalidInput(f"sigstore signs only {INTOTO_PAYLOAD_TYPE} payloads")
        from sigstore import dsse
        from sigstore.errors import Error as SigstoreError
        from sigstore.models import ClientTrustConfig
        from sigstore.sign import SigningContext

        token = self._identity_token()
        try:
            statement = dsse.Statement(payload)
        except SigstoreError as exc:
            raise InvalidInput(f"sigstore rejects the statement: {exc}") from None
        try:
            config = (
                ClientTrustConfig.production()
                if self.instance == "production"
                else ClientTrustConfig.staging()
            )
            context = SigningContext.from_trust_config(config)
            with context.signer(token, cache=False) as signer:
                bundle = signer.sign_dsse(statement)
        except SigstoreError as exc:
            raise ServiceUnavailable(
                f"sigstore signing failed: {' '.join(str(exc).split())}"
            ) from None
        except OSError as exc:
            raise ServiceUnavailable(f"sigstore signing failed: {exc}") from None
        return bundle.to_json().encode() + b"\n"


def _file_signer(rest: str) -> Signer:
    if not rest:
        raise InvalidInput("key URI 'file:' needs a path, e.g. file:keys/release.key")
    return KeySigner.from_path(Path(rest))


def _sigstore_signer(rest: str) -> Signer:
    return SigstoreSigner(rest or "production")


#: key URI scheme -> constructor taking the rest of the URI.
SIGNER_FOR_SCHEME: dict[str, Callable[[str], Signer]] = {
    "file": _file_signer,
    "sigstore": _sigstore_signer,
}


def signer_for_uri(uri: str) -> Signer:
    """``file:PATH``, a plain ``PATH``, or ``sigstore:[staging]`` -> a :class:`Signer`."""
    scheme, sep, rest = uri.partition(":")
    if not sep or "/" in scheme or "." in scheme:
        scheme, sep, rest = "file", ":", uri  # a plain path, as --key takes when verifying
    if scheme not in SIGNER_FOR_SCHEME:
        raise InvalidInput(
            f"key URI {uri[:60]!r}: expected one of "
            + ", ".join(f"{s}:..." for s in sorted(SIGNER_FOR_SCHEME))
        )
    if scheme == "file" and rest.startswith("//"):
        rest = rest[2:]
    return SIGNER_FOR_SCHEME[scheme](rest)


@dataclass(frozen=True)
class SignedBundle:
    """A signed statement: the bundle JSON bytes and the exact payload they cover."""

    bundle: bytes
    payload: bytes
    signer: str


def sign_statement(statement: Statement, signer: Signer) -> SignedBundle:
    """Serialise ``statement`` once and sign exactly those bytes."""
    payload = statement.to_bytes()
    bundle = signer.sign_dsse(payload, INTOTO_PAYLOAD_TYPE)
    return SignedBundle(bundle=bundle, payload=payload, signer=signer.describe())


def sign_payload(payload: bytes, signer: Signer, *, source: str = "statement") -> SignedBundle:
    """Sign existing statement bytes exactly as given (after checking they parse)."""
    Statement.from_bytes(payload, source=source)
    bundle = signer.sign_dsse(payload, INTOTO_PAYLOAD_TYPE)
    return SignedBundle(bundle=bundle, payload=payload, signer=signer.describe())
