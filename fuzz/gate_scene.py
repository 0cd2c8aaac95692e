"""A gate with history, for fuzzing the gate through its inputs (``gate_inputs`` target).

The scene: three auditors' keys and the gate's key, a trust file, a decision log of
three signed entries (an approval, a refusal, an approval) and the key policy that the
last approval wrote (its ``Id`` names entry 2 as the log head), plus two valid VSAs for
a new candidate.  Unchanged, these inputs make the gate approve.  A fuzz input replaces
one of them (the log, a VSA, the policy, the measurements) or adds a third VSA, and the
gate runs the way ``enclave-audit gate --apply`` runs it: every check and decision
first (:func:`reports.gate.plan_gate`), then the effects (:func:`reports.gate.commit_gate`).

Properties (:func:`run`): only project errors escape; a run that raises wrote nothing
(log bytes unchanged, nothing applied); a log that differs from the real one in
anything that is signed is never accepted; an approval applies exactly one policy,
whose ``Id`` names the entry just written.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuzz.targets import FIXED_NOW

PRINCIPAL = "arn:aws:iam::111122223333:role/enclave-parent"
OLD = {0: b"\xa1" * 48, 1: b"\xb2" * 48, 2: b"\xc3" * 48}
NEW = {0: b"\xd4" * 48, 1: b"\xb2" * 48, 2: b"\xe5" * 48}
INPUTS = ("log", "vsa", "policy", "extra_vsa", "measurements")


@dataclass(frozen=True)
class Scene:
    folder: Path
    trust_path: Path
    keys: dict[str, Any]
    log: bytes
    log_digests: tuple[str, ...]
    policy: bytes
    vsas: tuple[bytes, bytes]
    measurements: bytes


def _base_policy() -> dict[str, Any]:
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


def vsa(pcrs: dict[int, bytes], key: Any) -> bytes:
    """An auditor's key-signed VSA over ``pcrs`` (the seeds' one, with this scene's keys)."""
    from fuzz.seeds import signed_vsa

    return signed_vsa(pcrs, key=key)


def _measurements(pcrs: dict[int, bytes]) -> bytes:
    from enclave_audit.model.measurements import PcrSet, measurements_json

    return measurements_json(PcrSet(values=pcrs)).encode()


@functools.cache
def scene() -> Scene:
    """Build the scene once per process (keys, history), in a private directory."""
    import atexit

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from reports.decision_log import read_log
    from reports.key_policy import policy_text

    folder = Path(tempfile.mkdtemp(prefix="enclave-audit-gate-scene-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    keys: dict[str, Any] = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("alice", "bob")}
    keys["mallory"] = ed25519.Ed25519PrivateKey.generate()
    keys["gate"] = ed25519.Ed25519PrivateKey.generate()
    for name, key in keys.items():
        (folder / f"{name}.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    gate_key = folder / "gate.key"
    gate_key.touch(mode=0o600)
    gate_key.write_bytes(
        keys["gate"].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    trust_path = folder / "trust.toml"
    trust_path.write_text(
        "threshold = 2\nmax_vsa_age_hours = 48\nrollout_hours = 24\n"
        'required_levels = ["ENCLAVE_AUDIT_BINARY_AUDIT_PASSED"]\n'
        'decision_log = "decisions.jsonl"\ngate_key = "gate.key"\n'
        f'[enclave]\nprincipal = "{PRINCIPAL}"\n'
        '[[auditor]]\nname = "alice"\nkey = "alice.pub"\n'
        '[[auditor]]\nname = "bob"\nkey = "bob.pub"\n'
    )
    old_vsas = (vsa(OLD, keys["alice"]), vsa(OLD, keys["bob"]))
    policy = policy_text(_base_policy()).encode()
    # history: approve OLD, refuse OLD (one VSA), approve OLD again over the first policy
    for vsas in (old_vsas, old_vsas[:1], old_vsas):
        outcome = run_gate_once(
            folder, trust_path, policy=policy, vsas=list(vsas), measurements=_measurements(OLD)
        )
        if outcome.policy is not None:
            policy = policy_text(outcome.policy).encode()
    log = (folder / "decisions.jsonl").read_bytes()
    public = keys["gate"].public_key()
    digests = tuple(e.sha256 for e in read_log(folder / "decisions.jsonl", public))
    return Scene(
        folder,
        trust_path,
        keys,
        log,
        digests,
        policy,
        (vsa(NEW, keys["alice"]), vsa(NEW, keys["bob"])),
        _measurements(NEW),
    )


@dataclass
class Outcome:
    approved: bool
    policy: dict[str, Any] | None
    applied: list[dict[str, Any]]


def run_gate_once(
    folder: Path,
    trust_path: Path,
    *,
    policy: bytes,
    vsas: list[bytes],
    measurements: bytes,
) -> Outcome:
    """What ``enclave-audit gate --apply`` does with these inputs (KMS: a recorder)."""
    from enclave_audit.errors import InvalidInput
    from enclave_audit.model.measurements import PcrSet
    from enclave_runtime import strictjson
    from reports.gate import commit_gate, load_gate_signer, plan_gate
    from reports.key_policy import parse_policy
    from reports.trust import load_trust

    trust = load_trust(trust_path)
    signer = load_gate_signer(trust)
    current = parse_policy(policy, source="current policy")
    candidate = PcrSet.from_nitro_json(
        strictjson.loads(measurements, what="measurements", error=InvalidInput),
        source="measurements",
    )
    applied: list[dict[str, Any]] = []
    plan = plan_gate(
        current_policy=current,
        current_policy_bytes=policy,
        candidate=candidate,
        candidate_bytes=measurements,
        vsas=[(f"vsa{i}.json", data) for i, data in enumerate(vsas)],
        trust=trust,
        artifact=None,
        now=FIXED_NOW,
        signer=signer,
    )
    result = commit_gate(plan, apply=applied.append)
    return Outcome(result.approved, result.new_policy, applied)


def run(data: bytes) -> None:
    """The ``gate_inputs`` fuzz target: ``data[0]`` picks the input, the rest replaces it."""
    from enclave_audit.errors import EnclaveAuditError
    from reports.decision_log import head_id, read_log

    if not data:
        return
    base = scene()
    which = INPUTS[data[0] % len(INPUTS)]
    body = data[1:]
    work = base.folder / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    for name in ("trust.toml", "gate.key", "alice.pub", "bob.pub"):
        shutil.copy2(base.folder / name, work / name)
    log_path = work / "decisions.jsonl"
    log_bytes = body if which == "log" else base.log
    log_path.write_bytes(log_bytes)
    vsas = [body if which == "vsa" else base.vsas[0], base.vsas[1]]
    if which == "extra_vsa":
        vsas.append(body)
    public = base.keys["gate"].public_key()
    try:
        outcome = run_gate_once(
            work,
            work / "trust.toml",
            policy=body if which == "policy" else base.policy,
            vsas=vsas,
            measurements=body if which == "measurements" else base.measurements,
        )
    except EnclaveAuditError:
        if log_path.read_bytes() != log_bytes:
            raise AssertionError("the gate stopped with an error after writing the log") from None
        raise
    entries = read_log(log_path, public)
    before = [e.sha256 for e in entries[: len(entries) - (2 if outcome.applied else 1)]]
    if which == "log" and tuple(before) != base.log_digests:
        raise AssertionError("the gate accepted a decision log that is not the one it wrote")
    if outcome.approved:
        decision = entries[-2]
        if len(outcome.applied) != 1 or outcome.applied[0].get("Id") != head_id(decision):
            raise AssertionError("an approval did not apply exactly the policy it logged")
        if decision.decision != "approved" or entries[-1].decision != "applied":
            raise AssertionError("an applied approval is not logged as approved, then applied")
    elif outcome.applied:
        raise AssertionError("a refusal applied a policy")


def seeds() -> list[bytes]:
    base = scene()
    markup = json.dumps({"mediaType": "[/]", "x": "[link=http://e]y[/link]"}).encode()
    return [
        bytes([INPUTS.index("log")]) + base.log,
        bytes([INPUTS.index("log")]) + b"\n".join(base.log.split(b"\n")[:1]) + b"\n",
        bytes([INPUTS.index("vsa")]) + base.vsas[0],
        bytes([INPUTS.index("policy")]) + base.policy,
        bytes([INPUTS.index("measurements")]) + base.measurements,
        bytes([INPUTS.index("extra_vsa")]) + markup,
        bytes([INPUTS.index("extra_vsa")]) + b'{"mediaType": ' + b"1" * 5000 + b"}",
        bytes([INPUTS.index("extra_vsa")]) + vsa(NEW, base.keys["mallory"]),
    ]
