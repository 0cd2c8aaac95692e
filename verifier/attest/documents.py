"""Statements built from files on disk: the VSA for an audited image.

The library entry points for other packages are the builders in
:mod:`enclave_audit.model.attestation` (``vsa_statement``,
``provenance_statement``) plus :func:`verifier.attest.signing.sign_statement`;
this module only gathers their inputs from files for the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from enclave_audit import __version__
from enclave_audit.errors import AuditFailed, SpecInvalid
from enclave_audit.fsutil import hash_file
from enclave_audit.model.attestation import (
    DEFAULT_VERIFIER_ID,
    ResourceDescriptor,
    Statement,
    vsa_statement,
)
from enclave_audit.model.digests import Digest, HashAlgorithm
from enclave_audit.model.findings import Verdict
from enclave_audit.model.measurements import IMAGE_PCRS, PcrSet


def file_descriptor(
    path: Path, *, name: str | None = None, uri: str | None = None
) -> ResourceDescriptor:
    """``{name, digest: {sha256}}`` for a file (streamed)."""
    digest = Digest(algorithm=HashAlgorithm.SHA256, value=hash_file(path)["sha256"])
    return ResourceDescriptor.for_digest(name or path.name, digest, uri=uri)


def vsa_for_image(
    *,
    eif: Path,
    measurements: PcrSet,
    verdict: Verdict,
    policy: Path,
    policy_uri: str | None = None,
    rebuilds: int,
    source_commit: str | None,
    resource_uri: str | None = None,
    verifier_id: str = DEFAULT_VERIFIER_ID,
    input_attestations: Sequence[Path] = (),
    time_verified: datetime | None = None,
) -> Statement:
    """A VSA about ``eif``; with verdict PASS the image must measure to ``measurements``.

    A PASS is never written for an image whose PCR0-2 differ from the
    measurements it would certify (the image is re-measured here).
    """
    subject = file_descriptor(eif)
    if verdict is Verdict.PASS:
        from builder.eif import describe_eif

        actual = describe_eif(eif).pcrs
        for index in IMAGE_PCRS:
            if measurements.get(index) is None:
                raise AuditFailed(f"measurements: PCR{index} missing; a PASS must certify PCR0-2")
            if actual.get(index) != measurements.get(index):
                raise AuditFailed(
                    f"{eif.name}: PCR{index} of the image differs from the measurements; "
                    "refusing to attest PASS"
                )
    policy_descriptor = file_descriptor(policy)
    policy_digest = Digest(
        algorithm=HashAlgorithm.SHA256,
        value=bytes.fromhex((policy_descriptor.digest or {})["sha256"]),
    )
    return vsa_statement(
        subjects=[subject],
        resource_uri=resource_uri or f"file:{eif.name}",
        policy_uri=policy_uri or f"file:{policy.name}",
        policy_digest=policy_digest,
        verdict=verdict,
        verifier_id=verifier_id,
        verifier_version={"enclave-audit": __version__},
        time_verified=time_verified or datetime.now(UTC).replace(microsecond=0),
        # VSA: each inputAttestations entry names where it is (uri) and what it is (digest)
        input_attestations=[file_descriptor(p, uri=f"file:{p.name}") for p in input_attestations],
        pcrs=measurements,
        source_commit=source_commit,
        rebuilds=rebuilds,
    )


def provenance_from_manifest(path: Path) -> Statement:
    """The builder's unsigned provenance statement for ``build-manifest.json`` at ``path``."""
    from builder.provenance import provenance_for
    from enclave_audit.model.manifest import BuildManifest

    manifest = BuildManifest.load(path)
    manifest_sha256 = hash_file(path)["sha256"].hex()
    try:
        return provenance_for(manifest, manifest_sha256=manifest_sha256)
    except ValueError as exc:
        raise SpecInvalid(f"{path}: {exc}") from None
