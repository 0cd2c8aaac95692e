"""Who may sign: key, Sigstore identity and GitHub workflow policies, composable.

A policy is evaluated against a :class:`VerifiedSigner` (a public key whose
signature verified, or a Fulcio certificate that chained to the trusted root).
:meth:`VerificationPolicy.check` raises :class:`PolicyNotMet` with one line.
Key-signed bundles are verified only against :meth:`trusted_keys`, so a key
policy is both the trust anchor and the check.  ``AllOf([])`` and
``AnyOf([])`` never pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict

from enclave_audit.errors import PolicyNotMet
from verifier.attest.keys import PublicKey, key_hint, key_type_of, spki_der, ssh_fingerprint

_FULCIO = "1.3.6.1.4.1.57264.1."
#: Fulcio extension OIDs: name -> (legacy raw-bytes OID, V2 DER UTF8String OID)
_GITHUB_OIDS: dict[str, tuple[str | None, str | None]] = {
    "issuer": (_FULCIO + "1", _FULCIO + "8"),
    "trigger": (_FULCIO + "2", _FULCIO + "20"),
    "sha": (_FULCIO + "3", _FULCIO + "13"),
    "workflow_name": (_FULCIO + "4", None),
    "repository": (_FULCIO + "5", None),
    "ref": (_FULCIO + "6", _FULCIO + "14"),
    "build_signer_uri": (None, _FULCIO + "9"),
    "build_signer_digest": (None, _FULCIO + "10"),
    "runner_environment": (None, _FULCIO + "11"),
    "source_repository_uri": (None, _FULCIO + "12"),
    "source_repository_id": (None, _FULCIO + "15"),
    "build_config_uri": (None, _FULCIO + "18"),
    "run_invocation_uri": (None, _FULCIO + "21"),
}
_SIGSTORE_OTHERNAME = x509.ObjectIdentifier(_FULCIO + "7")


class SignerDescription(BaseModel):
    """Who signed, as shown in reports and ``attest verify --json``."""

    model_config = ConfigDict(frozen=True)

    kind: str  # "key" | "certificate"
    key_type: str | None = None
    key_fingerprint: str | None = None  # SHA256:... of the key (key signers)
    key_hint: str | None = None
    identity: str | None = None  # certificate SAN (keyless)
    issuer: str | None = None  # OIDC issuer (keyless)
    extensions: dict[str, str] = {}

    def summary(self) -> str:
        if self.kind == "key":
            return f"key {self.key_fingerprint} ({self.key_type})"
        return f"{self.identity} (issuer {self.issuer})"


@dataclass(frozen=True)
class VerifiedSigner:
    """The key or certificate whose signature verified (set before any policy runs)."""

    public_key: PublicKey | None = None
    certificate: x509.Certificate | None = None

    def __post_init__(self) -> None:
        if (self.public_key is None) == (self.certificate is None):
            raise ValueError("VerifiedSigner needs exactly one of public_key, certificate")

    def sans(self) -> set[str]:
        if self.certificate is None:
            return set()
        try:
            ext = self.certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value
        except x509.ExtensionNotFound:
            return set()
        out: set[str] = set(ext.get_values_for_type(x509.RFC822Name))
        out.update(ext.get_values_for_type(x509.UniformResourceIdentifier))
        for other in ext.get_values_for_type(x509.OtherName):
            if other.type_id == _SIGSTORE_OTHERNAME:
                out.add(_der_utf8(other.value) or other.value.decode("utf-8", "replace"))
        return out

    def extension(self, name: str) -> str | None:
        """A Fulcio extension value by name (V2 encoding preferred, legacy as fallback)."""
        if self.certificate is None:
            return None
        legacy, v2 = _GITHUB_OIDS[name]
        for oid, der in ((v2, True), (legacy, False)):
            if oid is None:
                continue
            try:
                ext = self.certificate.extensions.get_extension_for_oid(
                    x509.ObjectIdentifier(oid)
                ).value
            except x509.ExtensionNotFound:
                continue
            raw = getattr(ext, "value", b"")
            text = _der_utf8(raw) if der else raw.decode("utf-8", "replace")
            if text is not None:
                return text
        return None

    def describe(self) -> SignerDescription:
        if self.public_key is not None:
            return SignerDescription(
                kind="key",
                key_type=str(key_type_of(self.public_key)),
                key_fingerprint=ssh_fingerprint(self.public_key),
                key_hint=key_hint(self.public_key),
            )
        sans = sorted(self.sans())
        extensions = {
            name: value
            for name in _GITHUB_OIDS
            if name != "issuer" and (value := self.extension(name)) is not None
        }
        return SignerDescription(
            kind="certificate",
            identity=sans[0] if len(sans) == 1 else ", ".join(sans),
            issuer=self.extension("issuer"),
            extensions=extensions,
        )


def _der_utf8(raw: bytes) -> str | None:
    """Decode a DER UTF8String (tag 0x0C, short or long length)."""
    if len(raw) < 2 or raw[0] != 0x0C:
        return None
    length = raw[1]
    offset = 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or len(raw) < 2 + count:
            return None
        length = int.from_bytes(raw[2 : 2 + count], "big")
        offset = 2 + count
    if len(raw) != offset + length:
        return None
    try:
        return raw[offset:].decode("utf-8")
    except UnicodeDecodeError:
        return None


class VerificationPolicy(Protocol):
    def check(self, signer: VerifiedSigner) -> None:
        """Raise :class:`PolicyNotMet` unless ``signer`` is acceptable."""
        ...

    def describe(self) -> str: ...

    def trusted_keys(self) -> tuple[PublicKey, ...]:
        """Keys a key-signed bundle may be verified with (empty: none)."""
        ...


class KeyPolicy:
    """The signature must come from one of these public keys."""

    def __init__(self, keys: Sequence[PublicKey]) -> None:
        for key in keys:
            key_type_of(key)
        self._keys = tuple(keys)
        self._spki = {spki_der(k) for k in self._keys}

    def check(self, signer: VerifiedSigner) -> None:
        if signer.public_key is None:
            raise PolicyNotMet(
                f"signed by a certificate ({', '.join(sorted(signer.sans())) or 'no SAN'}), "
                f"policy requires {self.describe()}"
            )
        if spki_der(signer.public_key) not in self._spki:
            raise PolicyNotMet(
                f"signed by key {ssh_fingerprint(signer.public_key)}, not one of {self.describe()}"
            )

    def describe(self) -> str:
        if not self._keys:
            return "no keys"
        return "key " + " or ".join(ssh_fingerprint(k) for k in self._keys)

    def trusted_keys(self) -> tuple[PublicKey, ...]:
        return self._keys


class _CertificatePolicy(ABC):
    def trusted_keys(self) -> tuple[PublicKey, ...]:
        return ()

    def _cert(self, signer: VerifiedSigner) -> VerifiedSigner:
        if signer.certificate is None:
            assert signer.public_key is not None
            raise PolicyNotMet(
                f"signed by key {ssh_fingerprint(signer.public_key)}, "
                f"policy requires {self.describe()}"
            )
        return signer

    @abstractmethod
    def describe(self) -> str: ...


class IdentityPolicy(_CertificatePolicy):
    """Exact certificate SAN (email, URI or Sigstore otherName) and exact OIDC issuer."""

    def __init__(self, *, identity: str, issuer: str) -> None:
        if not identity or not issuer:
            raise PolicyNotMet("an identity policy needs both an identity and an issuer")
        self.identity = identity
        self.issuer = issuer

    def check(self, signer: VerifiedSigner) -> None:
        self._cert(signer)
        actual_issuer = signer.extension("issuer")
        if actual_issuer != self.issuer:
            raise PolicyNotMet(
                f"certificate issuer is {actual_issuer!r}, policy requires {self.issuer!r}"
            )
        sans = signer.sans()
        if self.identity not in sans:
            raise PolicyNotMet(
                f"certificate identity {', '.join(sorted(sans)) or 'none'} does not match "
                f"{self.identity}"
            )

    def describe(self) -> str:
        return f"identity {self.identity} from {self.issuer}"


class GitHubWorkflowPolicy(_CertificatePolicy):
    """Fulcio GitHub extensions: repository, ref, trigger, commit, runner environment.

    ``repository`` is ``owner/name`` (legacy extension .5, or the V2 source
    repository URI .12 ``https://github.com/owner/name``).
    """

    def __init__(
        self,
        *,
        repository: str | None = None,
        ref: str | None = None,
        trigger: str | None = None,
        sha: str | None = None,
        runner_environment: str | None = None,
    ) -> None:
        self.expected = {
            k: v
            for k, v in {
                "repository": repository,
                "ref": ref,
                "trigger": trigger,
                "sha": sha,
                "runner_environment": runner_environment,
            }.items()
            if v
        }
        if not self.expected:
            raise PolicyNotMet("a GitHub workflow policy needs at least one expected value")

    def check(self, signer: VerifiedSigner) -> None:
        self._cert(signer)
        for name, want in self.expected.items():
            got = signer.extension(name)
            if name == "repository" and got is None:
                uri = signer.extension("source_repository_uri")
                got = uri.removeprefix("https://github.com/") if uri else None
            if got != want:
                raise PolicyNotMet(
                    f"certificate GitHub {name} is {got!r}, policy requires {want!r}"
                )

    def describe(self) -> str:
        return "GitHub " + ", ".join(f"{k}={v}" for k, v in self.expected.items())


class AllOf:
    """Every child must pass; an empty list fails."""

    def __init__(self, children: Sequence[VerificationPolicy]) -> None:
        self.children = tuple(children)

    def check(self, signer: VerifiedSigner) -> None:
        if not self.children:
            raise PolicyNotMet("empty all-of policy: nothing is trusted")
        for child in self.children:
            child.check(signer)

    def describe(self) -> str:
        return "all of (" + "; ".join(c.describe() for c in self.children) + ")"

    def trusted_keys(self) -> tuple[PublicKey, ...]:
        return _union(self.children)


class AnyOf:
    """At least one child must pass; an empty list fails."""

    def __init__(self, children: Sequence[VerificationPolicy]) -> None:
        self.children = tuple(children)

    def check(self, signer: VerifiedSigner) -> None:
        if not self.children:
            raise PolicyNotMet("empty any-of policy: nothing is trusted")
        reasons: list[str] = []
        for child in self.children:
            try:
                child.check(signer)
            except PolicyNotMet as exc:
                reasons.append(exc.message)
            else:
                return
        raise PolicyNotMet("no alternative matched: " + " | ".join(reasons))

    def describe(self) -> str:
        return "any of (" + "; ".join(c.describe() for c in self.children) + ")"

    def trusted_keys(self) -> tuple[PublicKey, ...]:
        return _union(self.children)


def _union(children: Sequence[VerificationPolicy]) -> tuple[PublicKey, ...]:
    seen: dict[bytes, PublicKey] = {}
    for child in children:
        for key in child.trusted_keys():
            seen.setdefault(
                key.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
                key,
            )
    return tuple(seen.values())
