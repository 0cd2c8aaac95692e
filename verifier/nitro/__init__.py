"""Nitro attestation documents: parse, verify against pinned roots, apply a relying-party policy.

Public API::

    from verifier.nitro import verify_attestation, parse_attestation, require_pass

    result = verify_attestation(doc_bytes, nonce=my_nonce, max_age=timedelta(minutes=5),
                                expected_pcrs=PcrSet.load(path), now=datetime.now(UTC))
    require_pass(result)   # raises the matching AttestationError unless verdict is PASS
"""

from verifier.nitro.chain import ChainCache
from verifier.nitro.document import parse_attestation, unwrap_transport
from verifier.nitro.policy import AttestationPolicy
from verifier.nitro.roots import (
    AWS_ROOT_NAME,
    AWS_ROOT_SHA256,
    TrustRoot,
    aws_nitro_root,
    default_roots,
)
from verifier.nitro.verify import (
    DEFAULT_CHAIN_CACHE,
    require_pass,
    verify_attestation,
    verify_with_policy,
)

__all__ = [
    "AWS_ROOT_NAME",
    "AWS_ROOT_SHA256",
    "DEFAULT_CHAIN_CACHE",
    "AttestationPolicy",
    "ChainCache",
    "TrustRoot",
    "aws_nitro_root",
    "default_roots",
    "parse_attestation",
    "require_pass",
    "unwrap_transport",
    "verify_attestation",
    "verify_with_policy",
]
