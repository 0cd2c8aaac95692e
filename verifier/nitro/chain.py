"""Certificate chain validation: leaf -> cabundle[n-1] -> ... -> cabundle[1] -> pinned root.

``cabundle[0]`` must be byte-identical to one of the trusted roots (it is in
every AWS document); it is never trusted just for being there.  Every link's
signature, every certificate's profile (see :mod:`verifier.nitro.certs`),
basicConstraints path lengths and every validity window at the requested time
are checked.  No CRL/OCSP (AWS says not to).

:class:`ChainCache` remembers intermediate chains that were fully validated,
keyed by the exact DER bytes of the intermediates and of the root.  A hit
skips re-verifying the intermediates' signatures and profiles; the validity
window of every cached certificate is still checked at the requested time,
and the leaf (profile, issuance signature, validity) is always checked.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from enclave_audit.model.attestation_doc import CertificateSummary, iso_utc
from enclave_audit.model.checks import Check, CheckOutcome
from verifier.nitro.certs import (
    Role,
    issuance_problem,
    name_of,
    parse_der,
    path_length,
    profile_problems,
    summarize,
)
from verifier.nitro.roots import TrustRoot

CHECK_ROOT: Final = "chain.root"
CHECK_PROFILE: Final = "chain.profile"
CHECK_SIGNATURES: Final = "chain.signatures"
CHECK_VALIDITY: Final = "chain.validity"


@dataclass(frozen=True)
class _CachedCert:
    name: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class _CachedChain:
    """A validated intermediate chain: the leaf's issuer and every CA's validity window."""

    leaf_issuer: x509.Certificate
    leaf_issuer_key: ec.EllipticCurvePublicKey
    windows: tuple[_CachedCert, ...]
    summaries: tuple[CertificateSummary, ...]


class ChainCache:
    """A bounded, thread-safe cache of validated intermediate chains (LRU).

    ``maxsize=0`` disables caching.  Only chains whose every intermediate
    signature and profile check passed are stored.
    """

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[bytes, _CachedChain] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(intermediates: Sequence[bytes], root: TrustRoot) -> bytes:
        h = hashlib.sha256(b"nitro-intermediate-chain/v1\0")
        for der in (*intermediates, root.der):
            h.update(len(der).to_bytes(4, "big"))
            h.update(der)
        return h.digest()

    def get(self, key: bytes) -> _CachedChain | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: bytes, entry: _CachedChain) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class ChainResult:
    root: TrustRoot | None
    leaf: x509.Certificate
    checks: list[Check]
    summaries: list[CertificateSummary]


def validate_chain(
    certificate: bytes,
    cabundle: Sequence[bytes],
    *,
    roots: Sequence[TrustRoot],
    at: datetime | None,
    cache: ChainCache,
) -> ChainResult:
    """Validate the document's chain; raises AttestationMalformed for non-DER certificates."""
    leaf = parse_der(certificate, what="attestation payload 'certificate'")
    root = next((r for r in roots if r.der == cabundle[0]), None)
    if root is None:
        return _untrusted(leaf, cabundle, roots, at)
    intermediates = list(reversed(cabundle[1:]))  # nearest to the leaf first
    key = ChainCache.key(intermediates, root)
    cached = cache.get(key)
    from_cache = cached is not None
    if cached is None:
        cached, problems = _validate_intermediates(intermediates, root)
        if cached is None:
            return _failed_intermediates(leaf, intermediates, root, problems, at)
        cache.put(key, cached)

    root_check = Check(
        name=CHECK_ROOT,
        outcome=CheckOutcome.PASS,
        detail=f"cabundle[0] is the trusted root {root.name} (sha256 {root.sha256})",
    )
    leaf_profile = list(profile_problems(leaf, Role.LEAF))
    source = " (intermediates from cache)" if from_cache else ""
    profile = _check(
        CHECK_PROFILE,
        [f"leaf: {p}" for p in leaf_profile],
        f"{len(intermediates) + 2} certificates meet the Nitro profile"
        f" (P-384, ecdsa-with-SHA384, CA constraints, path lengths, key usage){source}",
    )
    link = issuance_problem(leaf, cached.leaf_issuer, cached.leaf_issuer_key)
    signatures = _check(
        CHECK_SIGNATURES,
        [] if link is None else [f"leaf <- {name_of(cached.leaf_issuer)}: {link}"],
        f"{len(intermediates) + 1} issuance signatures verify up to {root.name}{source}",
    )
    validity = _validity(
        [("leaf ", leaf, leaf.not_valid_before_utc, leaf.not_valid_after_utc)]
        + [("", w.name, w.not_before, w.not_after) for w in cached.windows],
        at,
    )
    return ChainResult(
        root=root,
        leaf=leaf,
        checks=[root_check, profile, signatures, validity],
        summaries=[summarize(leaf, issuer=cached.summaries[0].subject), *cached.summaries],
    )


@dataclass(frozen=True)
class _Problems:
    profile: list[str]
    signatures: list[str]


def _validate_intermediates(
    intermediates: list[bytes], root: TrustRoot
) -> tuple[_CachedChain | None, _Problems]:
    """Profile, path length and issuance of every CA below the root (leaf excluded)."""
    certs = [
        parse_der(der, what=f"attestation payload 'cabundle[{len(intermediates) - i}]'")
        for i, der in enumerate(intermediates)
    ]
    problems = _Problems(profile=[], signatures=[])
    path = [*certs, root.certificate]  # nearest to the leaf first, root last
    for depth, cert in enumerate(certs):
        problems.profile.extend(
            f"{name_of(cert)}: {p}" for p in profile_problems(cert, Role.INTERMEDIATE)
        )
        issuer = path[depth + 1]
        bad = issuance_problem(cert, issuer)
        if bad is not None:
            problems.signatures.append(f"{name_of(cert)} <- {name_of(issuer)}: {bad}")
    # a CA's pathLenConstraint bounds the number of intermediate CAs below it
    for position, cert in enumerate(path):
        limit = path_length(cert)
        below = position  # intermediates between this CA and the leaf
        if limit is not None and below > limit:
            problems.profile.append(
                f"{name_of(cert)}: pathLenConstraint {limit} but {below} CA certificates below it"
            )
    if problems.profile or problems.signatures:
        return None, problems
    windows = tuple(
        _CachedCert(name_of(c), c.not_valid_before_utc, c.not_valid_after_utc) for c in path
    )
    leaf_issuer = path[0]
    leaf_issuer_key = leaf_issuer.public_key()
    assert isinstance(leaf_issuer_key, ec.EllipticCurvePublicKey)  # the profile checked it
    return (
        _CachedChain(
            leaf_issuer=leaf_issuer,
            leaf_issuer_key=leaf_issuer_key,
            windows=windows,
            summaries=tuple(summarize(c) for c in path),
        ),
        problems,
    )


def _failed_intermediates(
    leaf: x509.Certificate,
    intermediates: list[bytes],
    root: TrustRoot,
    problems: _Problems,
    at: datetime | None,
) -> ChainResult:
    certs = [parse_der(d, what="attestation payload 'cabundle'") for d in intermediates]
    path = [leaf, *certs, root.certificate]
    leaf_problems = [f"leaf: {p}" for p in profile_problems(leaf, Role.LEAF)]
    link = issuance_problem(leaf, path[1])
    signature_problems = list(problems.signatures)
    if link is not None:
        signature_problems.insert(0, f"leaf <- {name_of(path[1])}: {link}")
    checks = [
        Check(
            name=CHECK_ROOT,
            outcome=CheckOutcome.PASS,
            detail=f"cabundle[0] is the trusted root {root.name} (sha256 {root.sha256})",
        ),
        _check(
            CHECK_PROFILE,
            leaf_problems + problems.profile,
            "all certificates meet the Nitro profile",
        ),
        _check(CHECK_SIGNATURES, signature_problems, "all issuance signatures verify"),
        _validity(
            [
                ("leaf " if i == 0 else "", c, c.not_valid_before_utc, c.not_valid_after_utc)
                for i, c in enumerate(path)
            ],
            at,
        ),
    ]
    return ChainResult(root=root, leaf=leaf, checks=checks, summaries=[summarize(c) for c in path])


def _untrusted(
    leaf: x509.Certificate,
    cabundle: Sequence[bytes],
    roots: Sequence[TrustRoot],
    at: datetime | None,
) -> ChainResult:
    first = hashlib.sha256(cabundle[0]).hexdigest()
    trusted = ", ".join(f"{r.name} ({r.sha256[:16]}...)" for r in roots) or "none"
    certs = [parse_der(d, what="attestation payload 'cabundle'") for d in reversed(cabundle)]
    not_run = "not run: the chain does not end at a trusted root"
    return ChainResult(
        root=None,
        leaf=leaf,
        checks=[
            Check(
                name=CHECK_ROOT,
                outcome=CheckOutcome.FAIL,
                detail=f"cabundle[0] (sha256 {first}) is not a trusted root; trusted: {trusted}",
            ),
            Check(name=CHECK_PROFILE, outcome=CheckOutcome.NOT_RUN, detail=not_run),
            Check(name=CHECK_SIGNATURES, outcome=CheckOutcome.NOT_RUN, detail=not_run),
            Check(name=CHECK_VALIDITY, outcome=CheckOutcome.NOT_RUN, detail=not_run),
        ],
        summaries=[summarize(leaf), *(summarize(c) for c in certs)],
    )


#: (label prefix, certificate or its name, notBefore, notAfter); names are formatted lazily
_Window = tuple[str, "x509.Certificate | str", datetime, datetime]


def _validity(windows: list[_Window], at: datetime | None) -> Check:
    if at is None:
        return Check(
            name=CHECK_VALIDITY,
            outcome=CheckOutcome.NOT_RUN,
            detail="no verification time given (pass now= or at=); validity not checked",
        )
    problems = []
    for prefix, who, before, after in windows:
        if before <= at <= after:
            continue
        name = prefix + (who if isinstance(who, str) else name_of(who))
        if at < before:
            problems.append(f"{name}: not yet valid at {iso_utc(at)} (notBefore {_iso(before)})")
        else:
            problems.append(f"{name}: expired at {iso_utc(at)} (notAfter {_iso(after)})")
    return _check(CHECK_VALIDITY, problems, f"{len(windows)} certificates valid at {iso_utc(at)}")


def _check(name: str, problems: list[str], ok: str) -> Check:
    if problems:
        return Check(name=name, outcome=CheckOutcome.FAIL, detail="; ".join(problems))
    return Check(name=name, outcome=CheckOutcome.PASS, detail=ok)


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["ChainCache", "ChainResult", "validate_chain"]
