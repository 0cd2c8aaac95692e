"""Real auditor keys, a real candidate EIF and real signed VSAs for gate tests."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from builder.eif import write_eif
from enclave_audit.model.attestation import ResourceDescriptor, vsa_statement
from enclave_audit.model.digests import Digest, HashAlgorithm
from enclave_audit.model.findings import Verdict
from enclave_audit.model.measurements import PcrSet, measurements_json
from verifier.attest.keys import KeyType, generate_key_pair
from verifier.attest.signing import KeySigner, sign_statement

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PRINCIPAL = "arn:aws:iam::111122223333:role/enclave-parent"


@dataclass
class GateWorld:
    root: Path
    eif: Path
    eif_digest: Digest
    pcrs: PcrSet
    measurements: Path
    policy: Path
    trust: Path
    keys: dict[str, Path]  # auditor (and "gate") -> private key path

    def vsa(
        self,
        auditor: str,
        *,
        name: str | None = None,
        verdict: Verdict = Verdict.PASS,
        pcrs: PcrSet | None = None,
        digest: Digest | None = None,
        when: datetime | None = None,
        levels: tuple[str, ...] = ("ENCLAVE_AUDIT_BINARY_AUDIT_PASSED",),
    ) -> Path:
        statement = vsa_statement(
            subjects=[ResourceDescriptor.for_digest("enclave.eif", digest or self.eif_digest)],
            resource_uri="git+https://example.org/enclave@" + "a" * 40,
            policy_uri="https://example.org/audit-policy.toml",
            policy_digest=None,
            verdict=verdict,
            time_verified=when or NOW - timedelta(hours=1),
            verified_levels=levels if verdict is Verdict.PASS else (),
            pcrs=pcrs or self.pcrs,
            source_commit="a" * 40,
            rebuilds=1,
        )
        signed = sign_statement(statement, KeySigner.from_path(self.keys[auditor]))
        out = self.root / (name or f"{auditor}.vsa.json")
        out.write_bytes(signed.bundle)
        return out

    def gate_public_key(self) -> Any:
        from verifier.attest.signing import KeySigner

        return KeySigner.from_path(self.keys["gate"]).public_key()


def base_policy() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "KeyAdministrators",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                "Action": ["kms:PutKeyPolicy", "kms:GetKeyPolicy", "kms:DescribeKey"],
                "Resource": "*",
            }
        ],
    }


def make_eif(directory: Path, seed: int) -> Path:
    rng = random.Random(seed)
    for name, size in (("k", 50_000), ("b", 9_000), ("a", 20_000)):
        (directory / f"{name}{seed}").write_bytes(rng.randbytes(size))
    out = directory / f"enclave{seed}.eif"
    write_eif(
        out,
        kernel=directory / f"k{seed}",
        cmdline="console=ttyS0",
        ramdisks=[directory / f"b{seed}", directory / f"a{seed}"],
        name="t",
        version="1",
        build_time="2025-01-01T00:00:00+00:00",
    )
    return out


@pytest.fixture
def world(tmp_path: Path) -> GateWorld:
    from builder.eif import describe_eif
    from enclave_audit.fsutil import hash_file

    eif = make_eif(tmp_path, 1)
    pcrs = PcrSet(values={i: v for i, v in describe_eif(eif).pcrs.values.items() if i in (0, 1, 2)})
    measurements = tmp_path / "measurements.json"
    measurements.write_text(measurements_json(pcrs))
    keys = {}
    for auditor, kind in (
        ("alice", KeyType.ECDSA_P256),
        ("bob", KeyType.ED25519),
        ("carol", KeyType.ECDSA_P256),
        ("mallory", KeyType.ED25519),
    ):
        pair = generate_key_pair(kind, tmp_path / "keys" / auditor)
        keys[auditor] = pair.private
    keys["gate"] = generate_key_pair(KeyType.ED25519, tmp_path / "keys" / "gate").private
    policy = tmp_path / "current-policy.json"
    policy.write_text(json.dumps(base_policy(), indent=2))
    trust = tmp_path / "trust.toml"
    trust.write_text(
        "threshold = 2\nmax_vsa_age_hours = 48\nrollout_hours = 24\n"
        'required_levels = ["ENCLAVE_AUDIT_BINARY_AUDIT_PASSED"]\n'
        'decision_log = "decisions.jsonl"\n'
        'gate_key = "keys/gate.key"\n'
        f'[enclave]\nprincipal = "{PRINCIPAL}"\n'
        '[[auditor]]\nname = "alice"\nkey = "keys/alice.pub"\n'
        '[[auditor]]\nname = "bob"\nkey = "keys/bob.pub"\n'
        '[[auditor]]\nname = "carol"\nkey = "keys/carol.pub"\n'
    )
    digest = Digest(algorithm=HashAlgorithm.SHA256, value=hash_file(eif)["sha256"])
    return GateWorld(tmp_path, eif, digest, pcrs, measurements, policy, trust, keys)
