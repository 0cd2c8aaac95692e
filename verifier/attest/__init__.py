"""Signed in-toto attestations: DSSE in Sigstore bundles v0.3, key-based or keyless.

Public API (see each module for details)::

    from verifier.attest import (
        sign_statement, signer_for_uri,     # "file:KEY" or "sigstore:" -> SignedBundle
        verify_bundle, VerifiedStatement,   # bundle + policy + artifact digest
        KeyPolicy, IdentityPolicy, GitHubWorkflowPolicy, AllOf, AnyOf,
        check_vsa,
    )

Statements themselves are built with :mod:`enclave_audit.model.attestation`
(``provenance_statement``, ``vsa_statement``).
"""

from verifier.attest.policy import (
    AllOf,
    AnyOf,
    GitHubWorkflowPolicy,
    IdentityPolicy,
    KeyPolicy,
    SignerDescription,
    VerificationPolicy,
)
from verifier.attest.signing import (
    SIGNER_FOR_SCHEME,
    KeySigner,
    SignedBundle,
    Signer,
    SigstoreSigner,
    sign_payload,
    sign_statement,
    signer_for_uri,
)
from verifier.attest.verify import (
    DEFAULT_TRUSTED_ROOT,
    VerificationReport,
    VerifiedSignature,
    VerifiedStatement,
    check_vsa,
    digest_of_bytes,
    digest_of_file,
    load_trusted_root,
    verify_any,
    verify_bundle,
    verify_message_bundle,
)

__all__ = [
    "DEFAULT_TRUSTED_ROOT",
    "SIGNER_FOR_SCHEME",
    "AllOf",
    "AnyOf",
    "GitHubWorkflowPolicy",
    "IdentityPolicy",
    "KeyPolicy",
    "KeySigner",
    "SignedBundle",
    "Signer",
    "SignerDescription",
    "SigstoreSigner",
    "VerificationPolicy",
    "VerificationReport",
    "VerifiedSignature",
    "VerifiedStatement",
    "check_vsa",
    "digest_of_bytes",
    "digest_of_file",
    "load_trusted_root",
    "sign_payload",
    "sign_statement",
    "signer_for_uri",
    "verify_any",
    "verify_bundle",
    "verify_message_bundle",
]
