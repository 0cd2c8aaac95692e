"""``trust.toml``: who the gate trusts and what it requires of them.

Example::

    threshold = 2                      # k distinct auditors must agree
    required_verdict = "PASS"          # only PASS counts; anything else is dissent
    max_vsa_age_hours = 168            # older verification summaries are refused
    rollout_hours = 24                 # old measurements stay allowed this long
    required_levels = ["ENCLAVE_AUDIT_BINARY_AUDIT_PASSED"]   # must be in verifiedLevels
    pinned_pcrs = [0, 1, 2]            # PCRs bound in the key policy (0 = ImageSha384)
    decision_log = "decisions.jsonl"   # relative to this file
    gate_key = "keys/gate.key"         # signs the decision log (`enclave-audit keys generate`)

    [enclave]
    principal = "arn:aws:iam::111122223333:role/enclave-parent"
    actions = ["kms:Decrypt", "kms:GenerateDataKey"]

    [[auditor]]
    name = "alice"
    key = "keys/alice.pub.pem"         # a key-signed bundle

    [[auditor]]
    name = "release-ci"
    identity = "https://github.com/org/repo/.github/workflows/audit.yml@refs/heads/main"
    issuer = "https://token.actions.githubusercontent.com"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclave_audit.errors import SpecInvalid
from enclave_audit.fsutil import read_bytes
from enclave_audit.model.findings import Verdict
from reports.key_policy import DEFAULT_ACTIONS
from verifier.attest.keys import load_public_key
from verifier.attest.policy import IdentityPolicy, KeyPolicy, VerificationPolicy


@dataclass(frozen=True)
class Auditor:
    name: str
    policy: VerificationPolicy
    description: str


@dataclass(frozen=True)
class TrustConfig:
    source: Path
    auditors: tuple[Auditor, ...]
    threshold: int
    required_verdict: Verdict
    max_vsa_age_hours: float
    rollout_hours: float
    required_levels: tuple[str, ...]
    pinned_pcrs: tuple[int, ...]
    principal: str
    actions: tuple[str, ...]
    decision_log: Path
    gate_key: Path
    verifier_id: str | None = None
    trusted_root: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_TOP_KEYS = {
    "threshold",
    "required_verdict",
    "max_vsa_age_hours",
    "rollout_hours",
    "required_levels",
    "pinned_pcrs",
    "decision_log",
    "gate_key",
    "verifier_id",
    "trusted_root",
    "enclave",
    "auditor",
}


def load_trust(path: Path) -> TrustConfig:
    """Parse and validate a trust file; every problem is one SpecInvalid line."""
    raw = read_bytes(path, limit=1 << 20)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecInvalid(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise SpecInvalid(f"{path}: unknown keys {sorted(unknown)}")
    base = path.parent

    def need(key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = data.get(key, default)
        if value is None or isinstance(value, bool) or not isinstance(value, kind):
            raise SpecInvalid(f"{path}: '{key}' missing or of the wrong type")
        return value

    auditors_raw = data.get("auditor")
    if not isinstance(auditors_raw, list) or not auditors_raw:
        raise SpecInvalid(f"{path}: no [[auditor]] entries")
    auditors: list[Auditor] = []
    names: set[str] = set()
    for number, entry in enumerate(auditors_raw):
        where = f"{path}: auditor {number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise SpecInvalid(f"{where}: needs a name")
        name = entry["name"]
        if name in names:
            raise SpecInvalid(f"{where}: duplicate auditor name {name!r}")
        names.add(name)
        if "key" in entry:
            if set(entry) - {"name", "key"}:
                raise SpecInvalid(f"{where}: a key auditor has only name and key")
            key_path = (base / str(entry["key"])).resolve()
            policy: VerificationPolicy = KeyPolicy([load_public_key(key_path)])
            description = f"key {key_path.name}"
        elif "identity" in entry and "issuer" in entry:
            policy = IdentityPolicy(identity=str(entry["identity"]), issuer=str(entry["issuer"]))
            description = f"{entry['identity']} via {entry['issuer']}"
        else:
            raise SpecInvalid(f"{where}: needs either key, or identity and issuer")
        auditors.append(Auditor(name, policy, description))
    threshold = need("threshold", int)
    if not 1 <= threshold <= len(auditors):
        raise SpecInvalid(
            f"{path}: threshold {threshold} must be between 1 and the {len(auditors)} auditors"
        )
    verdict_text = data.get("required_verdict", "PASS")
    if verdict_text != "PASS":
        raise SpecInvalid(f"{path}: required_verdict can only be PASS (got {verdict_text!r})")
    enclave = data.get("enclave")
    if not isinstance(enclave, dict) or not isinstance(enclave.get("principal"), str):
        raise SpecInvalid(f"{path}: [enclave] principal is required")
    actions = enclave.get("actions", list(DEFAULT_ACTIONS))
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise SpecInvalid(f"{path}: [enclave] actions must be a list of strings")
    pinned = data.get("pinned_pcrs", [0, 1, 2])
    if (
        not isinstance(pinned, list)
        or 0 not in pinned
        or not all(isinstance(i, int) and 0 <= i <= 31 for i in pinned)
    ):
        raise SpecInvalid(f"{path}: pinned_pcrs must list PCR indices and include 0")
    levels = data.get("required_levels", [])
    if not isinstance(levels, list) or not all(isinstance(x, str) for x in levels):
        raise SpecInvalid(f"{path}: required_levels must be a list of strings")
    max_age = need("max_vsa_age_hours", (int, float), 168)
    rollout = need("rollout_hours", (int, float), 0)
    if max_age <= 0 or rollout < 0:
        raise SpecInvalid(f"{path}: max_vsa_age_hours must be > 0 and rollout_hours >= 0")
    log_name = data.get("decision_log", "decisions.jsonl")
    if not isinstance(log_name, str):
        raise SpecInvalid(f"{path}: decision_log must be a path")
    gate_key = data.get("gate_key")
    if not isinstance(gate_key, str) or not gate_key:
        raise SpecInvalid(
            f"{path}: 'gate_key' must name the private key that signs the decision log"
            " (make one with `enclave-audit keys generate -o keys/gate`)"
        )
    root = data.get("trusted_root")
    return TrustConfig(
        source=path,
        auditors=tuple(auditors),
        threshold=threshold,
        required_verdict=Verdict.PASS,
        max_vsa_age_hours=float(max_age),
        rollout_hours=float(rollout),
        required_levels=tuple(levels),
        pinned_pcrs=tuple(sorted(set(pinned))),
        principal=enclave["principal"],
        actions=tuple(actions),
        decision_log=(base / log_name).resolve(),
        gate_key=(base / gate_key).resolve(),
        verifier_id=data.get("verifier_id"),
        trusted_root=(base / str(root)).resolve() if isinstance(root, str) else None,
    )
