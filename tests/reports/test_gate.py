"""The gate: k-of-n real signed VSAs, refusals that leave everything untouched, the log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import assert_one_line_error, run_cli

from enclave_audit.errors import DecisionLogTampered
from enclave_audit.model.findings import Verdict
from enclave_audit.model.measurements import PcrSet
from reports import decision_log
from reports.key_policy import DENY_SID, IMAGE_KEY, KeyPolicy, allowed_images

NOW_ARG = ["--now", "2026-11-23T12:00:00Z"]


def _gate(world, *vsas, extra=()):  # type: ignore[no-untyped-def]
    return run_cli([*_args(world, *vsas), *extra])


def _args(world, *vsas):  # type: ignore[no-untyped-def]
    args = [
        "gate",
        "--policy",
        str(world.policy),
        "--measurements",
        str(world.measurements),
        "--trust",
        str(world.trust),
        "--eif",
        str(world.eif),
        "-o",
        str(world.root / "new-policy.json"),
        "--report",
        str(world.root / "report"),
        *NOW_ARG,
    ]
    for v in vsas:
        args += ["--vsa", str(v)]
    return args


def test_two_agreeing_auditors_approve_and_policy_binds_pcrs(world):
    result = _gate(world, world.vsa("alice"), world.vsa("bob"))
    assert result.exit_code == 0, result.stderr
    new = json.loads((world.root / "new-policy.json").read_text())
    sids = [s.get("Sid") for s in new["Statement"]]
    assert sids[0] == "KeyAdministrators"  # unrelated statements kept, first, unchanged
    assert new["Statement"][0] == json.loads(world.policy.read_text())["Statement"][0]
    allowed = allowed_images(KeyPolicy.from_document(new))
    assert [a.pcrs.hex(0) for a in allowed] == [world.pcrs.hex(0)]
    allow = new["Statement"][1]
    cond = allow["Condition"]["StringEqualsIgnoreCase"]
    assert cond[IMAGE_KEY] == world.pcrs.hex(0)
    assert cond["kms:RecipientAttestation:PCR1"] == world.pcrs.hex(1)
    assert cond["kms:RecipientAttestation:PCR2"] == world.pcrs.hex(2)
    deny = next(s for s in new["Statement"] if s["Sid"] == DENY_SID)
    assert deny["Effect"] == "Deny"
    assert deny["Condition"]["StringNotEqualsIgnoreCase"][IMAGE_KEY] == [world.pcrs.hex(0)]
    assert "+" in result.stdout and IMAGE_KEY in result.stdout  # readable diff on stdout
    entries = decision_log.read_log(world.root / "decisions.jsonl", world.gate_public_key())
    assert [e.decision for e in entries] == ["approved"]
    assert entries[0].entry.agreeing == ["alice", "bob"]
    assert new["Id"] == f"EnclaveAuditLogHead-0-{entries[0].sha256}"
    report = json.loads((world.root / "report" / "report.json").read_text())
    assert report["verdict"] == "PASS" and report["gate"]["decision"] == "approved"


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("one-vsa", "only 1 of the required 2"),
        ("same-auditor-twice", "only 1 of the required 2"),
        ("tampered", "only 1 of the required 2"),
        ("other-image", "only 1 of the required 2"),
        ("expired", "only 1 of the required 2"),
        ("untrusted-signer", "only 1 of the required 2"),
        ("fail-verdict", "dissent"),
        ("inconclusive-verdict", "dissent"),
        ("other-pcrs", "dissent"),
        ("missing-level", "dissent"),
    ],
)
def test_refusals_exit_1_and_change_nothing(world, case, needle):
    good = world.vsa("alice")
    if case == "one-vsa":
        second = []
    elif case == "same-auditor-twice":
        second = [world.vsa("alice", name="alice-again.json")]
    elif case == "tampered":
        raw = bytearray(world.vsa("bob").read_bytes())
        data = json.loads(raw)
        payload = data["dsseEnvelope"]["payload"]
        data["dsseEnvelope"]["payload"] = (
            payload[:-8] + ("A" if payload[-8] != "A" else "B") + payload[-7:]
        )
        tampered = world.root / "bob-tampered.json"
        tampered.write_text(json.dumps(data))
        second = [tampered]
    elif case == "other-image":
        from enclave_audit.model.digests import Digest, HashAlgorithm

        second = [
            world.vsa("bob", digest=Digest(algorithm=HashAlgorithm.SHA256, value=b"\x11" * 32))
        ]
    elif case == "expired":
        now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
        second = [world.vsa("bob", when=now - timedelta(hours=49))]
    elif case == "untrusted-signer":
        second = [world.vsa("mallory")]
    elif case == "fail-verdict":
        second = [world.vsa("bob", verdict=Verdict.FAIL)]
    elif case == "inconclusive-verdict":
        second = [world.vsa("bob", verdict=Verdict.INCONCLUSIVE)]
    elif case == "other-pcrs":
        values = dict(world.pcrs.values)
        values[2] = b"\x22" * 48
        second = [world.vsa("bob", pcrs=PcrSet(values=values))]
    elif case == "missing-level":
        second = [world.vsa("bob", levels=("SLSA_BUILD_LEVEL_UNEVALUATED",))]
    else:
        raise AssertionError(case)
    before = world.policy.read_bytes()
    result = _gate(world, good, *second)
    assert_one_line_error(result, 1, needle)
    assert not (world.root / "new-policy.json").exists()
    assert world.policy.read_bytes() == before
    entries = decision_log.read_log(world.root / "decisions.jsonl", world.gate_public_key())
    assert entries[-1].decision == "refused"
    report = json.loads((world.root / "report" / "report.json").read_text())
    assert report["verdict"] == "FAIL" and report["gate"]["decision"] == "refused"


def test_dissent_is_recorded_by_name(world):
    result = _gate(
        world, world.vsa("alice"), world.vsa("bob"), world.vsa("carol", verdict=Verdict.FAIL)
    )
    assert result.exit_code == 1
    entry = decision_log.read_log(world.root / "decisions.jsonl", world.gate_public_key())[-1]
    assert entry.entry.dissenting == ["carol"] and entry.entry.agreeing == ["alice", "bob"]


def test_rollout_keeps_old_measurements_until_window_closes(world):
    first = _gate(world, world.vsa("alice"), world.vsa("bob"))
    assert first.exit_code == 0
    world.policy.write_text((world.root / "new-policy.json").read_text())
    old_pcr0 = world.pcrs.hex(0)
    values = dict(world.pcrs.values)
    values[0] = b"\x33" * 48
    values[2] = b"\x44" * 48
    newer = PcrSet(values=values)
    world.pcrs = newer
    world.measurements.write_text(json.dumps({"Measurements": newer.to_nitro()}))
    world.eif_digest = world.eif_digest  # same file: the VSAs name it
    result = _gate(world, world.vsa("alice"), world.vsa("bob"))
    assert result.exit_code == 0, result.stderr
    new = json.loads((world.root / "new-policy.json").read_text())
    allowed = allowed_images(KeyPolicy.from_document(new))
    assert [a.pcrs.hex(0) for a in allowed] == [newer.hex(0), old_pcr0]
    assert allowed[0].until is None
    assert allowed[1].until is not None and allowed[1].until.isoformat().startswith("2026-11-24T12")
    deny = next(s for s in new["Statement"] if s["Sid"] == DENY_SID)
    assert sorted(deny["Condition"]["StringNotEqualsIgnoreCase"][IMAGE_KEY]) == sorted(
        [newer.hex(0), old_pcr0]
    )


def test_decision_log_detects_tampering_with_any_earlier_entry(world):
    for _ in range(3):
        _gate(world, world.vsa("alice"))
    log = world.root / "decisions.jsonl"
    key = world.gate_public_key()
    lines = log.read_bytes().splitlines()
    assert len(lines) == 3
    assert len(decision_log.read_log(log, key)) == 3
    for index in range(3):
        for mutate in ("edit", "delete", "swap"):
            bad = list(lines)
            if mutate == "edit":
                envelope = json.loads(bad[index])
                envelope["payloadType"] += "x"
                bad[index] = json.dumps(envelope).encode()
            elif mutate == "delete":
                del bad[index]
                if index == 2:
                    continue  # cutting a refusal off the tail: see the head tests
            else:
                j = (index + 1) % 3
                bad[index], bad[j] = bad[j], bad[index]
            log.write_bytes(b"\n".join(bad) + b"\n")
            with pytest.raises(DecisionLogTampered):
                decision_log.read_log(log, key)
    log.write_bytes(b"\n".join(lines) + b"\n")
    other = world.root / "other-trust.toml"
    other.write_text(world.trust.read_text().replace("keys/gate.key", "keys/alice.key"))
    result = run_cli([*_args(world, world.vsa("alice"), world.vsa("bob")), "--trust", str(other)])
    assert_one_line_error(result, 60, "not signed by the gate's key")
    assert not (world.root / "new-policy.json").exists()


def test_bad_trust_file_and_policy_are_one_line_errors(world):
    world.trust.write_text(
        "threshold = 5\n[[auditor]]\nname='x'\nkey='keys/alice.pub'\n[enclave]\nprincipal='p'\n"
    )
    assert_one_line_error(_gate(world, world.vsa("alice")), 30, "threshold")
    world.trust.write_text("not toml = = =")
    assert_one_line_error(_gate(world, world.vsa("alice")), 30, "toml")


def test_malformed_policy_is_refused(world):
    world.policy.write_text('{"Statement": [{"Effect": "Maybe"}]}')
    assert_one_line_error(_gate(world, world.vsa("alice"), world.vsa("bob")), 3, "effect")


def test_debug_measurements_are_never_allowed(world):
    zero = PcrSet(values={0: bytes(48), 1: bytes(48), 2: bytes(48)})
    world.measurements.write_text(json.dumps({"Measurements": zero.to_nitro()}))
    result = _gate(world, world.vsa("alice", pcrs=zero), world.vsa("bob", pcrs=zero))
    assert_one_line_error(result, 1, "debug")


def test_gate_json_and_every_log_entry_follow_the_json_convention(world):
    """gate --json (approved and refused) is a labelled document that validates against
    docs/schemas (run_cli checks it); each line of decisions.jsonl is a DSSE envelope whose
    payload is labelled enclave-audit/decision-log-entry v2 and validates against its
    published schema."""
    import base64

    from conftest import ROOT
    from jsonschema import Draft202012Validator

    approved = _gate(world, world.vsa("alice"), world.vsa("bob"), extra=("--json",))
    assert approved.exit_code == 0, approved.stderr
    doc = json.loads(approved.stdout)
    assert list(doc)[:2] == ["schema", "schema_version"]
    assert doc["gate"]["decision"] == "approved"
    refused = _gate(world, world.vsa("alice"), extra=("--json",))
    assert refused.exit_code == 1, refused.stderr
    assert json.loads(refused.stdout)["gate"]["decision"] == "refused"
    schema = json.loads(
        (ROOT / "docs" / "schemas" / "decision-log-entry.v2.schema.json").read_text()
    )
    validator = Draft202012Validator(schema)
    lines = (world.root / "decisions.jsonl").read_bytes().splitlines()
    assert len(lines) == 2
    for line in lines:
        envelope = json.loads(line)
        assert envelope["payloadType"] == decision_log.PAYLOAD_TYPE
        payload = json.loads(base64.b64decode(envelope["payload"]))
        assert payload["schema"] == "enclave-audit/decision-log-entry"
        assert payload["schema_version"] == 2
        errors = list(validator.iter_errors(payload))
        assert not errors, errors[0].message
