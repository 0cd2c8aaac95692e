"""Benchmark: cost of a full attestation verification vs the bare signature check.

`verify_bundle` on a key-signed bundle does strict JSON + base64 parsing, the
hint/keyid binding, the DSSE signature over PAE, and then parses and checks
the statement (subject, predicate, PCR byproduct).  The baseline, measured in
the same process, is the bare pyca/cryptography signature verification over
the same PAE bytes: the ratio says what the safety checks cost on top of the
cryptography.  A keyless bundle (real production fixture, offline, sigstore-python
chain + SCT + Rekor proof + signature) is reported the same way for scale.

    .venv/bin/python bench/attest_verify.py [--runs 300]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from enclave_audit.model.attestation import ResourceDescriptor, provenance_statement
from enclave_audit.model.digests import Digest
from enclave_audit.model.measurements import PcrSet
from verifier.attest.dsse import parse_bundle
from verifier.attest.keys import PrivateKey
from verifier.attest.policy import IdentityPolicy, KeyPolicy
from verifier.attest.signing import KeySigner, sign_statement
from verifier.attest.verify import digest_of_file, verify_bundle

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "sigstore"
BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)


def per_call(fn: Callable[[], object], runs: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(runs):
            fn()
        best = min(best, (time.perf_counter() - start) / runs)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    digest = Digest.parse("sha256:" + "ab" * 32)
    statement = provenance_statement(
        subjects=[ResourceDescriptor.for_digest("enclave.eif", digest)],
        builder_id="https://example.invalid/builder",
        external_parameters={"spec": "enclave.toml"},
        pcrs=PcrSet(values={0: "11" * 48, 1: "22" * 48, 2: "33" * 48}),
    )
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}",
        f"python {platform.python_version()}",
    )
    keys: list[tuple[str, PrivateKey]] = [
        ("ecdsa-p256", ec.generate_private_key(ec.SECP256R1())),
        ("ed25519", ed25519.Ed25519PrivateKey.generate()),
    ]
    for name, key in keys:
        bundle = sign_statement(statement, KeySigner(key)).bundle
        public = key.public_key()
        parsed = parse_bundle(bundle)
        message = parsed.envelope.pae()  # type: ignore[union-attr]
        sig = parsed.envelope.signatures[0].sig  # type: ignore[union-attr]
        policy = KeyPolicy([public])

        def bare(public: object = public, sig: bytes = sig, message: bytes = message) -> None:
            if isinstance(public, ed25519.Ed25519PublicKey):
                public.verify(sig, message)
            else:
                public.verify(sig, message, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]

        full = per_call(
            lambda b=bundle, p=policy: verify_bundle(b, p, artifact_digest=digest), args.runs
        )
        base = per_call(bare, args.runs)
        print(
            f"{name}: verify_bundle {full * 1e6:.0f} us, bare signature {base * 1e6:.0f} us, "
            f"ratio {full / base:.2f}x"
        )
    keyless = (
        FIXTURES / "conformance-dsse-slsa-provenance-v1" / "bundle.sigstore.json"
    ).read_bytes()
    a_txt = digest_of_file(FIXTURES / "artifacts" / "a.txt")
    policy_id = IdentityPolicy(
        identity=BEACON, issuer="https://token.actions.githubusercontent.com"
    )
    t = per_call(
        lambda: verify_bundle(keyless, policy_id, artifact_digest=a_txt), max(args.runs // 30, 5)
    )
    print(f"keyless (sigstore-python, offline, production root): {t * 1e3:.1f} ms per bundle")


if __name__ == "__main__":
    main()
