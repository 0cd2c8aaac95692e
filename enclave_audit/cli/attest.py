"""``enclave-audit attest``: sign and verify in-toto attestations (Sigstore bundles)."""

from __future__ import annotations

from pathlib import Path

import click

from enclave_audit.cli._common import emit_json, input_path, json_option, out_console, warn
from enclave_audit.errors import InvalidInput
from enclave_audit.fsutil import read_bytes, write_bytes_atomic
from enclave_audit.model.attestation import (
    DEFAULT_VERIFIER_ID,
    PROVENANCE_V1,
    ProvenancePredicate,
    Statement,
)
from enclave_audit.model.digests import Digest
from enclave_audit.model.findings import Verdict
from enclave_audit.model.measurements import PcrSet

_file = click.Path(path_type=Path, dir_okay=False)
_in = input_path()
_STATEMENT_LIMIT = 16 << 20


#: the signing key of ``attest provenance`` and ``attest vsa`` (the same syntax as the
#: verifying ``--key``: file:PATH or PATH; sigstore: for keyless signing in CI)
_signing_key = click.option(
    "--key",
    "key_uri",
    required=True,
    metavar="KEY",
    help="Signing key: file:PATH or PATH (a private key from 'keys generate'), or sigstore:.",
)


@click.group("attest")
def attest_group() -> None:
    """Write and verify signed in-toto attestations (DSSE in Sigstore bundles v0.3).

    --key KEY names a key the same way when signing and verifying: file:PATH or a
    plain PATH (a local ECDSA P-256 or Ed25519 key from `enclave-audit keys generate`:
    the .key file signs, the .pub file verifies), or sigstore: to sign keyless
    (ambient OIDC in CI).

    \b
    Example:
      enclave-audit attest verify prov.sigstore.json --artifact enclave.eif --key release.pub
    """


def _write_bundle(output: Path, bundle: bytes) -> None:
    write_bytes_atomic(output, bundle)


def _signed_summary(
    output: Path, statement: Statement, payload: bytes, signer: str
) -> dict[str, object]:
    import hashlib

    return {
        "bundle": str(output),
        "signer": signer,
        "predicate_type": statement.predicate_type,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "subjects": [s.to_json_obj() for s in statement.subject],
    }


@attest_group.command("provenance")
@click.option("--manifest", type=_in, help="Build manifest (build-manifest.json) to describe.")
@click.option(
    "--statement",
    "statement_path",
    type=_in,
    help="Existing provenance statement to sign as is.",
)
@_signing_key
@click.option("-o", "--output", required=True, type=_file, help="Bundle to write (.sigstore.json).")
@json_option
def provenance(
    manifest: Path | None,
    statement_path: Path | None,
    key_uri: str,
    output: Path,
    as_json: bool,
) -> None:
    """Sign SLSA provenance v1 for a build (from its manifest, or an existing statement).

    \b
    Example:
      enclave-audit attest provenance --manifest out/build-manifest.json \\
        --key file:keys/release.key -o out/provenance.sigstore.json
    """
    from verifier.attest.signing import sign_payload, sign_statement, signer_for_uri

    if (manifest is None) == (statement_path is None):
        raise click.UsageError("give exactly one of --manifest, --statement")
    signer = signer_for_uri(key_uri)
    if statement_path is not None:
        payload = read_bytes(statement_path, limit=_STATEMENT_LIMIT)
        statement = Statement.from_bytes(payload, source=str(statement_path))
        if statement.predicate_type != PROVENANCE_V1:
            raise InvalidInput(
                f"{statement_path}: predicateType is {statement.predicate_type!r}, "
                f"expected {PROVENANCE_V1}"
            )
        statement.predicate_as(ProvenancePredicate)
        signed = sign_payload(payload, signer, source=str(statement_path))
    else:
        from verifier.attest.documents import provenance_from_manifest

        assert manifest is not None
        statement = provenance_from_manifest(manifest)
        signed = sign_statement(statement, signer)
    _write_bundle(output, signed.bundle)
    summary = _signed_summary(output, statement, signed.payload, signed.signer)
    if as_json:
        emit_json(summary, schema="enclave-audit/attest-signed")
    else:
        out_console.print(f"wrote {output} (SLSA provenance v1, signed by {signed.signer})")


@attest_group.command("vsa")
@click.option("--eif", required=True, type=_in, help="The image the summary is about.")
@click.option("--measurements", required=True, type=_in, help="Measurements JSON (nitro-cli form).")
@click.option(
    "--verdict",
    required=True,
    type=click.Choice([v.value for v in Verdict]),
    help="Audit verdict; only PASS gives verificationResult PASSED.",
)
@click.option("--policy", required=True, type=_in, help="The policy file the audit applied.")
@click.option("--policy-uri", help="URI recorded for the policy (default file:NAME).")
@click.option(
    "--rebuilds",
    required=True,
    type=click.IntRange(min=0),
    help="Independent rebuilds that matched.",
)
@click.option("--source-commit", help="Git commit (hex) that was rebuilt.")
@click.option("--resource-uri", help="Where consumers fetch the image (default file:NAME).")
@click.option("--verifier-id", default=DEFAULT_VERIFIER_ID, show_default=True)
@click.option(
    "--input-attestation",
    "inputs",
    multiple=True,
    type=_in,
    help="Bundle used as input (repeatable).",
)
@_signing_key
@click.option("-o", "--output", required=True, type=_file, help="Bundle to write (.sigstore.json).")
@json_option
def vsa(
    eif: Path,
    measurements: Path,
    verdict: str,
    policy: Path,
    policy_uri: str | None,
    rebuilds: int,
    source_commit: str | None,
    resource_uri: str | None,
    verifier_id: str,
    inputs: tuple[Path, ...],
    key_uri: str,
    output: Path,
    as_json: bool,
) -> None:
    """Sign a SLSA Verification Summary (VSA v1) with the PCRs, commit, rebuilds and verdict.

    With --verdict PASS the image is re-measured and must match --measurements.

    \b
    Example:
      enclave-audit attest vsa --eif out/enclave.eif --measurements out/measurements.json \\
        --verdict PASS --policy policy.json --rebuilds 2 --source-commit 0123abcd \\
        --key file:keys/audit.key -o out/vsa.sigstore.json
    """
    from verifier.attest.documents import vsa_for_image
    from verifier.attest.signing import sign_statement, signer_for_uri

    signer = signer_for_uri(key_uri)
    statement = vsa_for_image(
        eif=eif,
        measurements=PcrSet.load(measurements),
        verdict=Verdict(verdict),
        policy=policy,
        policy_uri=policy_uri,
        rebuilds=rebuilds,
        source_commit=source_commit.lower() if source_commit else None,
        resource_uri=resource_uri,
        verifier_id=verifier_id,
        input_attestations=inputs,
    )
    signed = sign_statement(statement, signer)
    _write_bundle(output, signed.bundle)
    if as_json:
        emit_json(
            _signed_summary(output, statement, signed.payload, signed.signer),
            schema="enclave-audit/attest-signed",
        )
    else:
        out_console.print(f"wrote {output} (VSA v1, verdict {verdict}, signed by {signed.signer})")


def _key_path(key: str) -> Path:
    """--key KEY when verifying: ``file:PATH`` or ``PATH`` (the syntax signing takes)."""
    scheme, sep, rest = key.partition(":")
    if sep and scheme == "file":
        return Path(rest[2:] if rest.startswith("//") else rest)
    if sep and scheme == "sigstore":
        raise click.UsageError(
            "--key sigstore: signs keyless; verify keyless bundles with --identity and --issuer"
        )
    return Path(key)


def _looks_like_bundle(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and (
        b'"mediaType"' in head or b'"dsseEnvelope"' in head or b'"payloadType"' in head
    )


def _check_not_swapped(bundle: Path, artifact: Path | None) -> None:
    """BUNDLE and --artifact given the other way round: say so, with the right order."""
    if artifact is None or _looks_like_bundle(bundle) or not _looks_like_bundle(artifact):
        return
    from enclave_audit.errors import BundleMalformed

    raise BundleMalformed(
        f"{bundle}: not a Sigstore bundle or DSSE envelope, while --artifact {artifact} is one",
        hint=f"the arguments look swapped: enclave-audit attest verify {artifact}"
        f" --artifact {bundle} ...",
    )


@attest_group.command("verify")
@click.argument("bundle", type=_in)
@click.option("--artifact", type=_in, help="The artifact the statement must be about (- = stdin).")
@click.option("--digest", "digest_text", metavar="ALG:HEX", help="Or its digest, e.g. sha256:...")
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="KEY",
    help="Trusted public key: file:PATH or PATH of a PEM public key (repeatable).",
)
@click.option("--identity", help="Expected certificate identity (SAN), exact.")
@click.option("--issuer", help="Expected OIDC issuer, exact.")
@click.option("--repository", help="Expected GitHub repository owner/name (keyless).")
@click.option("--ref", help="Expected GitHub ref, e.g. refs/tags/v1.0.0 (keyless).")
@click.option("--trigger", help="Expected GitHub event, e.g. push, release (keyless).")
@click.option("--sha", help="Expected source commit (keyless).")
@click.option("--runner-environment", help="Expected runner, e.g. github-hosted (keyless).")
@click.option(
    "--trusted-root",
    type=_in,
    help="Sigstore trusted_root.json (default: the production root pinned in this tool).",
)
@click.option("--predicate-type", help="Require this predicateType (URI).")
@click.option(
    "--insecure-no-subject-check",
    is_flag=True,
    help="INSECURE: accept the statement without matching its subject to an artifact.",
)
@json_option
def verify(
    bundle: Path,
    artifact: Path | None,
    digest_text: str | None,
    keys: tuple[str, ...],
    identity: str | None,
    issuer: str | None,
    repository: str | None,
    ref: str | None,
    trigger: str | None,
    sha: str | None,
    runner_environment: str | None,
    trusted_root: Path | None,
    predicate_type: str | None,
    insecure_no_subject_check: bool,
    as_json: bool,
) -> None:
    """Verify a bundle offline: signature, signer policy, subject, predicate.

    Key bundles are checked with --key; keyless bundles with --identity and
    --issuer (plus optional GitHub workflow checks) against a local trusted
    root. A provenance builder.id that is not the signer is reported as an
    untrusted claim.

    \b
    Example:
      enclave-audit attest verify out/provenance.sigstore.json --artifact out/enclave.eif \\
        --key keys/release.pub
    """
    from verifier.attest.keys import load_public_key
    from verifier.attest.policy import (
        AllOf,
        GitHubWorkflowPolicy,
        IdentityPolicy,
        KeyPolicy,
        VerificationPolicy,
    )
    from verifier.attest.verify import VerifiedStatement, digest_of_file, verify_any

    if artifact is not None and digest_text is not None:
        raise click.UsageError("give --artifact or --digest, not both")
    if artifact is None and digest_text is None and not insecure_no_subject_check:
        raise click.UsageError("give --artifact FILE or --digest ALG:HEX")
    if insecure_no_subject_check:
        if artifact is not None or digest_text is not None:
            raise click.UsageError("--insecure-no-subject-check conflicts with --artifact/--digest")
        warn(
            "--insecure-no-subject-check: the statement is NOT bound to any artifact; "
            "do not rely on this result"
        )
    github = any((repository, ref, trigger, sha, runner_environment))
    if keys and (identity or issuer or github):
        raise click.UsageError("give --key, or --identity/--issuer, not both")
    policy: VerificationPolicy
    if keys:
        policy = KeyPolicy([load_public_key(_key_path(k)) for k in keys])
    elif identity and issuer:
        parts: list[VerificationPolicy] = [IdentityPolicy(identity=identity, issuer=issuer)]
        if github:
            parts.append(
                GitHubWorkflowPolicy(
                    repository=repository,
                    ref=ref,
                    trigger=trigger,
                    sha=sha,
                    runner_environment=runner_environment,
                )
            )
        policy = AllOf(parts)
    else:
        raise click.UsageError("give --key PUB, or both --identity and --issuer")

    _check_not_swapped(bundle, artifact)
    digest: Digest | None = None
    if artifact is not None:
        digest = digest_of_file(artifact)
    elif digest_text is not None:
        digest = Digest.parse(digest_text)
    result = verify_any(
        read_bytes(bundle, limit=16 << 20),
        policy,
        artifact_digest=digest,
        trusted_root=trusted_root,
        predicate_type=predicate_type,
        source=bundle.name,
    )
    report = result.report()
    for line in report.warnings:
        if line != "subject not checked against an artifact":
            warn(line)
    if as_json:
        emit_json(report)
        return
    what = (
        f"{result.predicate_type} about {report.matched_subject or 'an unchecked subject'}"
        if isinstance(result, VerifiedStatement)
        else f"message signature over {report.matched_subject}"
    )
    out_console.print(f"verified: {what}; signed by {report.signer.summary()}")
