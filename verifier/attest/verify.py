"""Verify a Sigstore bundle, then (and only then) the in-toto statement inside it.

Order of checks (each failure is one line with its own exit code):

1. bundle shape (:class:`BundleMalformed`, 40);
2. signature: key bundles with the policy's keys (DSSE PAE, ECDSA P-256/SHA-256
   or Ed25519); certificate bundles with sigstore-python against a *pinned,
   local* trusted root: chain, SCT, transparency log proof, signed time,
   signature, log body consistency (:class:`SignatureInvalid`, 41);
3. signer policy (:class:`PolicyNotMet`, 42) - for certificate bundles it runs
   inside sigstore's verification, after the chain is established;
4. payload type, then the statement parsed from the *exact verified bytes*;
5. subject digest against the artifact (:class:`SubjectMismatch`, 43);
6. predicate type and predicate fields (typed parse of provenance / VSA).

``builder.id`` in a provenance predicate is a claim by the signer: it is
reported as bound only when it equals the certificate identity that signed
(the slsa-verifier rule), never trusted merely because the signature holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pydantic import BaseModel, ConfigDict, Field

from enclave_audit.errors import (
    BundleMalformed,
    EnclaveAuditError,
    InvalidInput,
    PolicyNotMet,
    SignatureInvalid,
    SubjectMismatch,
)
from enclave_audit.fsutil import read_bytes
from enclave_audit.model.attestation import (
    INTOTO_PAYLOAD_TYPE,
    PROVENANCE_V1,
    VSA_V1,
    ProvenancePredicate,
    ResourceDescriptor,
    Statement,
    VerificationResult,
    VsaPredicate,
)
from enclave_audit.model.digests import Digest, HashAlgorithm
from verifier.attest.dsse import (
    CertificateBundle,
    KeyBundle,
    b64decode_strict,
    parse_bundle,
    strict_json,
)
from verifier.attest.keys import PublicKey, key_hint, ssh_fingerprint
from verifier.attest.policy import SignerDescription, VerificationPolicy, VerifiedSigner

if TYPE_CHECKING:
    from sigstore.models import Bundle, TrustedRoot

#: Sigstore public-good trusted root pinned in this repository (copied from the
#: sigstore 4.5.1 wheel; sha256 6494e21e...0b66).  Refresh deliberately.
DEFAULT_TRUSTED_ROOT = Path(__file__).with_name("trust") / "trusted_root.production.json"
REPORT_SCHEMA = "enclave-audit/attest-verify"


# --- results ----------------------------------------------------------------------


class BuilderClaim(BaseModel):
    model_config = ConfigDict(frozen=True)

    claimed: str | None
    bound_to_signer: bool


class VerificationReport(BaseModel):
    """What ``attest verify --json`` prints (schema-versioned)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    schema_: str = Field(default=REPORT_SCHEMA, alias="schema")
    schema_version: int = 1
    verified: bool = True
    kind: str  # "dsse" | "message"
    signer: SignerDescription
    payload_type: str | None = None
    payload_sha256: str | None = None
    predicate_type: str | None = None
    subjects: list[dict[str, Any]] = []
    matched_subject: str | None = None
    subject_checked: bool
    builder: BuilderClaim | None = None
    warnings: list[str] = []


@dataclass(frozen=True)
class VerifiedStatement:
    """A statement whose signature, signer policy and subject all checked out."""

    payload_bytes: bytes
    payload_type: str
    statement: Statement
    signer: SignerDescription
    subject: ResourceDescriptor | None  # None only when no artifact digest was given
    builder_id: str | None = None  # claimed builder.id (provenance only)
    builder_id_bound: bool = False  # True only if builder.id == the certificate identity
    warnings: tuple[str, ...] = field(default=())

    @property
    def predicate_type(self) -> str:
        return self.statement.predicate_type

    def provenance(self) -> ProvenancePredicate:
        return self.statement.predicate_as(ProvenancePredicate)

    def vsa(self) -> VsaPredicate:
        return self.statement.predicate_as(VsaPredicate)

    def report(self) -> VerificationReport:
        import hashlib

        return VerificationReport(
            kind="dsse",
            signer=self.signer,
            payload_type=self.payload_type,
            payload_sha256=hashlib.sha256(self.payload_bytes).hexdigest(),
            predicate_type=self.predicate_type,
            subjects=[s.to_json_obj() for s in self.statement.subject],
            matched_subject=(self.subject.name or "_") if self.subject else None,
            subject_checked=self.subject is not None,
            builder=BuilderClaim(claimed=self.builder_id, bound_to_signer=self.builder_id_bound)
            if self.predicate_type == PROVENANCE_V1
            else None,
            warnings=list(self.warnings),
        )


@dataclass(frozen=True)
class VerifiedSignature:
    """A plain message-signature bundle that verified over ``digest``."""

    digest: Digest
    signer: SignerDescription

    def report(self) -> VerificationReport:
        return VerificationReport(
            kind="message",
            signer=self.signer,
            subjects=[{"digest": {str(self.digest.algorithm): self.digest.hex}}],
            matched_subject=str(self.digest),
            subject_checked=True,
        )


# --- trusted root -------------------------------------------------------------------


def load_trusted_root(path: Path | None = None) -> TrustedRoot:
    """A Sigstore trusted root from a local file (default: the pinned production root)."""
    from sigstore.models import TrustedRoot

    target = path or DEFAULT_TRUSTED_ROOT
    read_bytes(target, limit=4 << 20)  # one-line error if missing or oversized
    try:
        return TrustedRoot.from_file(str(target))
    except Exception as exc:  # sigstore and pydantic raise many types on a bad root
        first = " ".join(str(exc).split())[:200]
        raise InvalidInput(f"{target}: not a Sigstore trusted root: {first}") from None


# --- verification -------------------------------------------------------------------


def verify_bundle(
    bundle: bytes,
    policy: VerificationPolicy,
    *,
    artifact_digest: Digest | None,
    trusted_root: Path | None = None,
    predicate_type: str | None = None,
    source: str = "bundle",
) -> VerifiedStatement:
    """Verify a DSSE bundle and return the statement from the exact verified bytes.

    ``artifact_digest`` None skips the subject check (the caller must then do
    it; the CLI only allows that with ``--insecure-no-subject-check``).
    ``predicate_type`` None accepts any predicate type.
    """
    parsed = parse_bundle(bundle, what=source)
    if isinstance(parsed, KeyBundle):
        signer = _verify_key_bundle(parsed, policy, source=source)
        payload_type, payload = parsed.envelope.payload_type, parsed.envelope.payload
    else:
        if not parsed.is_dsse:
            raise BundleMalformed(
                f"{source}: a message-signature bundle, not an attestation "
                "(verify it against the artifact itself)"
            )
        signer, payload_type, payload = _verify_certificate_dsse(
            parsed, policy, trusted_root=trusted_root, source=source
        )
    return _check_statement(
        signer,
        payload_type,
        payload,
        artifact_digest=artifact_digest,
        predicate_type=predicate_type,
        source=source,
    )


def verify_message_bundle(
    bundle: bytes,
    policy: VerificationPolicy,
    *,
    artifact_digest: Digest,
    trusted_root: Path | None = None,
    source: str = "bundle",
) -> VerifiedSignature:
    """Verify a keyless message-signature (hashedrekord) bundle over a SHA-256 digest."""
    parsed = parse_bundle(bundle, what=source)
    if isinstance(parsed, KeyBundle) or parsed.is_dsse:
        raise BundleMalformed(f"{source}: a DSSE attestation bundle, not a message signature")
    if artifact_digest.algorithm is not HashAlgorithm.SHA256:
        raise InvalidInput("message-signature bundles are verified over a sha256 digest")
    claimed = _message_digest(parsed, source=source)
    if claimed != artifact_digest.value:
        raise SubjectMismatch(
            f"{source}: signed digest sha256:{claimed.hex()} is not the artifact's "
            f"{artifact_digest}"
        )
    from sigstore.hashes import Hashed
    from sigstore_models.common.v1 import HashAlgorithm as SigstoreHash

    sig_bundle = _sigstore_bundle(parsed, source=source)
    hashed = Hashed(algorithm=SigstoreHash.SHA2_256, digest=artifact_digest.value)
    adapter = _PolicyAdapter(policy)
    verifier = _sigstore_verifier(trusted_root)
    from sigstore.errors import VerificationError

    try:
        verifier.verify_artifact(hashed, sig_bundle, adapter)
    except Exception as exc:  # anything sigstore raises fails closed
        if adapter.failure is not None:
            raise adapter.failure from None
        raise SignatureInvalid(f"{source}: {_failure_text(exc, VerificationError)}") from None
    if adapter.failure is not None or adapter.signer is None:
        raise PolicyNotMet(f"{source}: signer policy was not evaluated")
    return VerifiedSignature(digest=artifact_digest, signer=adapter.signer.describe())


def verify_any(
    bundle: bytes,
    policy: VerificationPolicy,
    *,
    artifact_digest: Digest | None,
    trusted_root: Path | None = None,
    predicate_type: str | None = None,
    source: str = "bundle",
) -> VerifiedStatement | VerifiedSignature:
    """DSSE attestation or message signature, whichever the bundle holds (for the CLI)."""
    parsed = parse_bundle(bundle, what=source)
    if isinstance(parsed, CertificateBundle) and not parsed.is_dsse:
        if artifact_digest is None:
            raise InvalidInput(f"{source}: a message-signature bundle needs --artifact or --digest")
        return verify_message_bundle(
            bundle,
            policy,
            artifact_digest=artifact_digest,
            trusted_root=trusted_root,
            source=source,
        )
    return verify_bundle(
        bundle,
        policy,
        artifact_digest=artifact_digest,
        trusted_root=trusted_root,
        predicate_type=predicate_type,
        source=source,
    )


def check_vsa(
    verified: VerifiedStatement,
    *,
    verifier_id: str,
    resource_uri: str | None = None,
    required_levels: tuple[str, ...] = (),
) -> VsaPredicate:
    """The consumer checks of SLSA VSA v1 (verifier, resource, PASSED, levels)."""
    vsa = verified.vsa()
    if vsa.verifier.id != verifier_id:
        raise PolicyNotMet(f"VSA verifier.id is {vsa.verifier.id!r}, expected {verifier_id!r}")
    if resource_uri is not None and vsa.resource_uri != resource_uri:
        raise PolicyNotMet(f"VSA resourceUri is {vsa.resource_uri!r}, expected {resource_uri!r}")
    if vsa.verification_result is not VerificationResult.PASSED:
        raise PolicyNotMet(f"VSA verificationResult is {vsa.verification_result}")
    for level in required_levels:
        if not _level_met(level, vsa.verified_levels):
            raise PolicyNotMet(f"VSA verifiedLevels {vsa.verified_levels} do not include {level}")
    return vsa


_LEVEL = re.compile(r"^SLSA_([A-Z]+)_LEVEL_(\d+)$")


def _level_met(required: str, present: list[str]) -> bool:
    want = _LEVEL.match(required)
    if want is None:
        return required in present
    for item in present:
        got = _LEVEL.match(item)
        if got and got.group(1) == want.group(1) and int(got.group(2)) >= int(want.group(2)):
            return True
    return False


# --- key bundles --------------------------------------------------------------------


def _verify_key_bundle(
    bundle: KeyBundle, policy: VerificationPolicy, *, source: str
) -> VerifiedSigner:
    keys = policy.trusted_keys()
    if not keys:
        raise PolicyNotMet(
            f"{source}: signed with a key (hint {bundle.hint or 'none'}) but the policy "
            f"names no public key ({policy.describe()})"
        )
    signature = bundle.envelope.signatures[0]
    candidates = [k for k in keys if _names_key(bundle.hint, k) and _names_key(signature.keyid, k)]
    if not candidates:
        raise PolicyNotMet(
            f"{source}: bundle hint {bundle.hint!r} / keyid {signature.keyid!r} names none of "
            f"the trusted keys ({policy.describe()})"
        )
    message = bundle.envelope.pae()
    for key in candidates:
        if signature_ok(key, signature.sig, message):
            signer = VerifiedSigner(public_key=key)
            policy.check(signer)
            return signer
    raise SignatureInvalid(f"{source}: DSSE signature does not verify with {policy.describe()}")


def _names_key(name: str, key: PublicKey) -> bool:
    """Empty (no claim), the bundle hint form, or the SSH SHA256 fingerprint form."""
    return name in ("", key_hint(key), ssh_fingerprint(key))


def signature_ok(key: PublicKey, sig: bytes, message: bytes) -> bool:
    """Whether ``sig`` (DER or P1363 ECDSA, or Ed25519) over ``message`` verifies with ``key``."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, message)
            return True
        if len(sig) == 64 and sig[0] != 0x30:
            # IEEE P1363 r||s, which sigstore's Go verifiers also accept
            sig = encode_dss_signature(
                int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            )
        key.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False


# --- certificate bundles (sigstore-python) ----------------------------------------


class _PolicyAdapter:
    """Runs our policy inside sigstore's verification (after chain building)."""

    def __init__(self, policy: VerificationPolicy) -> None:
        self._policy = policy
        self.failure: PolicyNotMet | None = None
        self.signer: VerifiedSigner | None = None

    def verify(self, cert: x509.Certificate) -> None:
        from sigstore.errors import VerificationError

        signer = VerifiedSigner(certificate=cert)
        try:
            self._policy.check(signer)
        except PolicyNotMet as exc:
            self.failure = exc
            raise VerificationError(exc.message) from None
        self.signer = signer


def _check_checkpoint_names(parsed: CertificateBundle, *, source: str) -> None:
    """A signed-note checkpoint must carry a signature line naming its own log (origin).

    sigstore-python matches note signatures by key hint only and ignores the
    name, so an edited name would pass unnoticed; the name is cheap to bind.
    """
    raw = strict_json(parsed.raw, what=source)
    material = raw.get("verificationMaterial")
    entries = material.get("tlogEntries") if isinstance(material, dict) else None
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        proof = entry.get("inclusionProof") if isinstance(entry, dict) else None
        checkpoint = proof.get("checkpoint") if isinstance(proof, dict) else None
        note = checkpoint.get("envelope") if isinstance(checkpoint, dict) else None
        if note is None:
            continue
        where = f"{source}: tlogEntries[{index}] checkpoint"
        if not isinstance(note, str):
            raise BundleMalformed(f"{where}: expected a string")
        body, sep, signatures = note.partition("\n\n")
        origin = body.split("\n", 1)[0]
        lines = [line for line in signatures.split("\n") if line]
        if not sep or not origin or not lines:
            raise BundleMalformed(f"{where}: not a signed note")
        names = []
        for line in lines:
            if not line.startswith("\u2014 "):
                raise BundleMalformed(f"{where}: malformed signature line")
            names.append(line[2:].split(" ", 1)[0])
        # other lines may be witness cosignatures; the log's own line must be there
        if not any(origin == name or origin.startswith(name + " - ") for name in names):
            raise BundleMalformed(
                f"{where}: no signature line names the log {origin[:60]!r} "
                f"(lines name {', '.join(n[:40] for n in names)})"
            )


def _sigstore_bundle(parsed: CertificateBundle, *, source: str) -> Bundle:
    from sigstore.models import Bundle, InvalidBundle

    _check_checkpoint_names(parsed, source=source)
    from sigstore.errors import Error as SigstoreError

    try:
        return Bundle.from_json(parsed.raw)
    except (InvalidBundle, SigstoreError, ValueError, TypeError, KeyError) as exc:
        raise BundleMalformed(f"{source}: {_one_line(exc)}") from None
    except Exception as exc:  # untrusted input into a foreign parser
        raise BundleMalformed(f"{source}: {type(exc).__name__}: {_one_line(exc)}") from None


def _sigstore_verifier(trusted_root: Path | None) -> Any:
    from sigstore.verify import Verifier

    try:
        return Verifier(trusted_root=load_trusted_root(trusted_root))
    except EnclaveAuditError:
        raise
    except Exception as exc:  # e.g. a root without any transparency log
        raise InvalidInput(f"trusted root unusable: {_one_line(exc)}") from None


def _verify_certificate_dsse(
    parsed: CertificateBundle,
    policy: VerificationPolicy,
    *,
    trusted_root: Path | None,
    source: str,
) -> tuple[VerifiedSigner, str, bytes]:
    from sigstore.errors import VerificationError

    sig_bundle = _sigstore_bundle(parsed, source=source)
    verifier = _sigstore_verifier(trusted_root)
    adapter = _PolicyAdapter(policy)
    try:
        payload_type, payload = verifier.verify_dsse(sig_bundle, adapter)
    except Exception as exc:  # anything sigstore raises fails closed
        if adapter.failure is not None:
            raise adapter.failure from None
        raise SignatureInvalid(f"{source}: {_failure_text(exc, VerificationError)}") from None
    if adapter.signer is None:
        raise PolicyNotMet(f"{source}: signer policy was not evaluated")
    # sigstore's model decodes URL-safe base64 wrongly without an error; insist
    # that what it verified is exactly what the bundle says.
    raw = strict_json(parsed.raw, what=source)
    expected = b64decode_strict(raw["dsseEnvelope"].get("payload"), what=f"{source} payload")
    if bytes(payload) != expected or not isinstance(payload_type, str):
        raise BundleMalformed(f"{source}: DSSE payload decoded inconsistently")
    return adapter.signer, payload_type, bytes(payload)


def _message_digest(parsed: CertificateBundle, *, source: str) -> bytes:
    raw = strict_json(parsed.raw, what=source)
    try:
        digest = raw["messageSignature"]["messageDigest"]
        algorithm, value = digest["algorithm"], digest["digest"]
    except (KeyError, TypeError):
        raise BundleMalformed(f"{source}: messageSignature.messageDigest missing") from None
    if algorithm != "SHA2_256":
        raise BundleMalformed(f"{source}: unsupported message digest algorithm {algorithm!r}")
    out = b64decode_strict(value, what=f"{source} messageDigest")
    if len(out) != 32:
        raise BundleMalformed(f"{source}: message digest is not 32 bytes")
    return out


# --- statement checks ---------------------------------------------------------------


def _check_statement(
    signer: VerifiedSigner,
    payload_type: str,
    payload: bytes,
    *,
    artifact_digest: Digest | None,
    predicate_type: str | None,
    source: str,
) -> VerifiedStatement:
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise BundleMalformed(
            f"{source}: payloadType {payload_type[:80]!r}, expected {INTOTO_PAYLOAD_TYPE}"
        )
    statement = Statement.from_bytes(payload, source=f"{source} statement")
    subject: ResourceDescriptor | None = None
    warnings: list[str] = []
    if artifact_digest is not None:
        subject = statement.subject_matching(artifact_digest)
        if subject is None:
            names = ", ".join(_subject_text(s) for s in statement.subject[:3])
            raise SubjectMismatch(
                f"{source}: no statement subject has {artifact_digest} (subjects: {names})"
            )
    else:
        warnings.append("subject not checked against an artifact")
    if predicate_type is not None and statement.predicate_type != predicate_type:
        raise PolicyNotMet(
            f"{source}: predicateType {statement.predicate_type!r}, expected {predicate_type!r}"
        )
    description = signer.describe()
    builder_id: str | None = None
    bound = False
    if statement.predicate_type == PROVENANCE_V1:
        provenance = statement.predicate_as(ProvenancePredicate)
        provenance.pcrs()  # the measurements byproduct must be self-consistent
        builder_id = provenance.run_details.builder.id
        bound = signer.certificate is not None and builder_id in signer.sans()
        if not bound:
            warnings.append(
                f"builder.id {builder_id} is not the signer ({description.summary()}); "
                "it is a claim, not trusted"
            )
    elif statement.predicate_type == VSA_V1:
        statement.predicate_as(VsaPredicate).pcrs()
    return VerifiedStatement(
        payload_bytes=payload,
        payload_type=payload_type,
        statement=statement,
        signer=description,
        subject=subject,
        builder_id=builder_id,
        builder_id_bound=bound,
        warnings=tuple(warnings),
    )


def _subject_text(item: ResourceDescriptor) -> str:
    digest = item.digest or {}
    alg = "sha256" if "sha256" in digest else next(iter(digest), "?")
    return f"{item.name or '_'} {alg}:{digest.get(alg, '')[:16]}..."


def _failure_text(exc: BaseException, expected: type[BaseException]) -> str:
    if isinstance(exc, expected):
        return _one_line(exc)
    return f"{type(exc).__name__}: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def digest_of_bytes(data: bytes) -> Digest:
    import hashlib

    return Digest(algorithm=HashAlgorithm.SHA256, value=hashlib.sha256(data).digest())


def digest_of_file(path: Path) -> Digest:
    from enclave_audit.fsutil import hash_file

    return Digest(algorithm=HashAlgorithm.SHA256, value=hash_file(path)["sha256"])


__all__ = [
    "DEFAULT_TRUSTED_ROOT",
    "VerificationReport",
    "VerifiedSignature",
    "VerifiedStatement",
    "check_vsa",
    "digest_of_bytes",
    "digest_of_file",
    "load_trusted_root",
    "verify_any",
    "verify_bundle",
    "verify_message_bundle",
]
