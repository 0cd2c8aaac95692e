"""The gate and its decision log under hostile inputs (issue 18, findings reproduced).

Each test runs ``enclave-audit gate`` as a user would.  The log is DSSE-signed by the
gate's key, parsed strictly and anchored in the key policy (its ``Id`` names the
decision that wrote it); every check runs before anything is written.  The
``gate_inputs`` and ``decision_log`` fuzz targets drive the same inputs.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, assert_one_line_error, run_cli

from fuzz.gate_scene import NEW, OLD, vsa
from reports import decision_log
from verifier.attest.keys import KeyType, generate_key_pair, load_private_key
from verifier.attest.signing import KeySigner

NOW = ["--now", "2026-11-23T12:00:00Z"]
PRINCIPAL = "arn:aws:iam::111122223333:role/enclave-parent"


@dataclass
class World:
    root: Path
    keys: dict[str, Any]

    @property
    def log(self) -> Path:
        return self.root / "decisions.jsonl"

    @property
    def policy(self) -> Path:
        return self.root / "policy.json"

    @property
    def output(self) -> Path:
        return self.root / "new-policy.json"

    def vsa(self, auditor: str, pcrs: dict[int, bytes] = NEW, name: str | None = None) -> Path:
        path = self.root / (name or f"{auditor}-{pcrs[0][:1].hex()}.vsa.json")
        path.write_bytes(vsa(pcrs, self.keys[auditor]))
        return path

    def measurements(self, pcrs: dict[int, bytes]) -> Path:
        path = self.root / f"measurements-{pcrs[0][:1].hex()}.json"
        path.write_text(json.dumps({"Measurements": {f"PCR{i}": v.hex() for i, v in pcrs.items()}}))
        return path

    def gate(
        self, *vsas: Path, pcrs: dict[int, bytes] = NEW, extra: tuple[str, ...] = ()
    ) -> CliResult:
        args = [
            "gate",
            "--policy",
            str(self.policy),
            "--measurements",
            str(self.measurements(pcrs)),
            "--trust",
            str(self.root / "trust.toml"),
            "-o",
            str(self.output),
            *NOW,
            *extra,
        ]
        for path in vsas:
            args += ["--vsa", str(path)]
        return run_cli(args)

    def approve(self, pcrs: dict[int, bytes]) -> None:
        """Approve ``pcrs`` and make the written policy the current one."""
        result = self.gate(self.vsa("alice", pcrs), self.vsa("bob", pcrs), pcrs=pcrs)
        assert result.exit_code == 0, result.stderr
        self.policy.write_bytes(self.output.read_bytes())
        self.output.unlink()

    def entries(self) -> list[decision_log.LoggedEntry]:
        return decision_log.read_log(self.log, self.keys["gate"].public_key())

    def resign(
        self, line: bytes, edit: Any, *, key: str = "gate", raw: bytes | None = None
    ) -> bytes:
        """The log line with its payload edited (``edit(dict)``) and signed by ``key``."""
        envelope = json.loads(line)
        payload = json.loads(base64.b64decode(envelope["payload"]))
        edit(payload)
        body = (
            raw
            if raw is not None
            else json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        )
        signed = KeySigner(self.keys[key]).envelope(body, decision_log.PAYLOAD_TYPE)
        return json.dumps(signed.to_json_obj(), separators=(",", ":")).encode()


def _new_world(tmp_path: Path) -> World:
    keys: dict[str, Any] = {}
    for name, kind in (
        ("alice", KeyType.ECDSA_P256),
        ("bob", KeyType.ED25519),
        ("mallory", KeyType.ED25519),
        ("gate", KeyType.ED25519),
    ):
        pair = generate_key_pair(kind, tmp_path / "keys" / name)
        keys[name] = load_private_key(pair.private)
    (tmp_path / "trust.toml").write_text(
        "threshold = 2\nmax_vsa_age_hours = 48\nrollout_hours = 0\n"
        'decision_log = "decisions.jsonl"\ngate_key = "keys/gate.key"\n'
        f'[enclave]\nprincipal = "{PRINCIPAL}"\n'
        '[[auditor]]\nname = "alice"\nkey = "keys/alice.pub"\n'
        '[[auditor]]\nname = "bob"\nkey = "keys/bob.pub"\n'
    )
    (tmp_path / "policy.json").write_text(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "KeyAdministrators",
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                        "Action": "kms:*",
                        "Resource": "*",
                    }
                ],
            }
        )
    )
    return World(tmp_path, keys)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return _new_world(tmp_path)


@pytest.fixture(scope="module")
def built_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An approval (OLD), a refusal, an approval (NEW): the policy names entry 2."""
    world = _new_world(tmp_path_factory.mktemp("history"))
    world.approve(OLD)
    refused = world.gate(world.vsa("alice"))
    assert refused.exit_code == 1
    world.approve(NEW)
    assert json.loads(world.policy.read_text())["Id"].startswith("EnclaveAuditLogHead-2-")
    return world.root


@pytest.fixture
def history(built_history: Path, tmp_path: Path) -> World:
    """A copy of the built history to tamper with."""
    import shutil

    root = tmp_path / "w"
    shutil.copytree(built_history, root)
    keys = {p.stem: load_private_key(p) for p in (root / "keys").glob("*.key")}
    return World(root, keys)


def _lines(world: World) -> list[bytes]:
    return world.log.read_bytes().splitlines()


def _refused_untouched(world: World, result: CliResult, code: int, *needles: str) -> None:
    before = world.log.read_bytes() if world.log.exists() else None
    assert_one_line_error(result, code, *needles)
    assert not world.output.exists()
    assert (world.log.read_bytes() if world.log.exists() else None) == before


# --- truncation and rollback -----------------------------------------------------------------


def test_log_truncated_to_entry_0_is_refused(history: World) -> None:
    world = history
    lines = _lines(world)
    world.log.write_bytes(lines[0] + b"\n")
    result = world.gate(world.vsa("alice"), world.vsa("bob"))
    _refused_untouched(world, result, 60, "written at decision 2", "truncated")


def test_log_rolled_back_to_an_older_copy_is_refused(world: World) -> None:
    world.approve(OLD)
    older = world.log.read_bytes()
    world.approve(NEW)
    world.log.write_bytes(older)
    _refused_untouched(world, world.gate(world.vsa("alice"), world.vsa("bob")), 60, "truncated")
    world.log.unlink()  # no log at all is the shortest rollback
    _refused_untouched(world, world.gate(world.vsa("alice"), world.vsa("bob")), 60, "truncated")


def test_log_replaced_by_another_history_of_the_same_length_is_refused(history: World) -> None:
    world = history
    policy = world.policy.read_bytes()
    # another history, as long, signed by the real gate key (a second gate run elsewhere)
    world.log.unlink()
    world.policy.write_text(json.dumps({k: v for k, v in json.loads(policy).items() if k != "Id"}))
    world.approve(OLD)
    world.approve(OLD)
    world.approve(NEW)
    world.policy.write_bytes(policy)
    _refused_untouched(
        world, world.gate(world.vsa("alice"), world.vsa("bob")), 60, "not the decision"
    )


# --- rewritten entries ------------------------------------------------------------------------


@pytest.mark.parametrize("signer", ["unchanged", "mallory"])
def test_refusal_rewritten_as_approved_with_the_chain_recomputed_is_refused(
    history: World, signer: str
) -> None:
    world = history
    lines = _lines(world)
    bad = list(lines)
    prev = decision_log.GENESIS
    import hashlib

    for index, line in enumerate(lines):

        def edit(payload: dict[str, Any], index: int = index, prev: str = prev) -> None:
            payload["prev_sha256"] = prev
            if payload["decision"] == "refused":
                payload["decision"] = "approved"
                payload["reason"] = "2 of 2 required auditors agree: alice, bob"

        if signer == "unchanged":  # new payload, old signature
            envelope = json.loads(line)
            payload = json.loads(base64.b64decode(envelope["payload"]))
            edit(payload)
            body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
            envelope["payload"] = base64.b64encode(body).decode()
            bad[index] = json.dumps(envelope, separators=(",", ":")).encode()
        else:
            bad[index] = world.resign(line, edit, key="mallory")
            body = base64.b64decode(json.loads(bad[index])["payload"])
        prev = hashlib.sha256(body).hexdigest()
    world.log.write_bytes(b"\n".join(bad) + b"\n")
    result = world.gate(world.vsa("alice"), world.vsa("bob"))
    _refused_untouched(world, result, 60, "line ", "not signed by the gate's key")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda p: p.update(seq=str(p["seq"])), "seq"),
        (lambda p: p.update(applied="off"), "applied"),
        (lambda p: p.update(threshold=2.0), "threshold"),
        (lambda p: p.update(agreeing="alice"), "agreeing"),
        (lambda p: p.update(decision="maybe"), "decision"),
        (lambda p: p.update(time="yesterday"), "time"),
    ],
)
def test_wrong_types_are_refused_even_when_signed_by_the_gate_key(
    history: World, edit: Any, needle: str
) -> None:
    world = history
    lines = _lines(world)
    lines[0] = world.resign(lines[0], edit)
    world.log.write_bytes(b"\n".join(lines) + b"\n")
    _refused_untouched(world, world.gate(world.vsa("alice"), world.vsa("bob")), 60, needle)


def test_duplicate_keys_are_refused_even_when_signed_by_the_gate_key(history: World) -> None:
    world = history
    original = _lines(world)
    lines = list(original)
    envelope = json.loads(lines[1])
    payload = base64.b64decode(envelope["payload"])
    assert b'"decision":"refused"' in payload
    # the first value says "refused", the (hashed, last) value says otherwise
    twice = payload.replace(b'"decision":"refused"', b'"decision":"refused","decision":"approved"')
    lines[1] = world.resign(lines[1], lambda p: None, raw=twice)
    world.log.write_bytes(b"\n".join(lines) + b"\n")
    _refused_untouched(
        world, world.gate(world.vsa("alice"), world.vsa("bob")), 60, "duplicate key 'decision'"
    )
    # a duplicated member of the envelope itself
    lines = list(original)
    lines[1] = b'{"payloadType":"x",' + lines[1][1:]
    world.log.write_bytes(b"\n".join(lines) + b"\n")
    _refused_untouched(
        world, world.gate(world.vsa("alice"), world.vsa("bob")), 60, "duplicate key 'payloadType'"
    )


def test_a_log_signed_with_another_key_is_refused(history: World) -> None:
    world = history
    trust = world.root / "trust.toml"
    trust.write_text(trust.read_text().replace("keys/gate.key", "keys/mallory.key"))
    _refused_untouched(
        world, world.gate(world.vsa("alice"), world.vsa("bob")), 60, "not signed by the gate's key"
    )


def test_an_untouched_history_is_accepted_and_extended(history: World) -> None:
    world = history
    result = world.gate(world.vsa("alice"), world.vsa("bob"))
    assert result.exit_code == 0, result.stderr
    entries = world.entries()
    assert [e.decision for e in entries] == ["approved", "refused", "approved", "approved"]
    assert json.loads(world.output.read_text())["Id"] == decision_log.head_id(entries[-1])


# --- order of effects: a malformed VSA is a refusal with its reason -----------------------------


MALFORMED = {
    "markup": json.dumps(
        {"mediaType": "[/]", "x": "[link=https://evil.example]ok[/link]"}
    ).encode(),
    "big-integer": b'{"mediaType": ' + b"1" * 5000 + b"}",
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "lone-surrogate": b'{"mediaType": "\\ud800"}',
    "not-json": b"\x00\xffnot json",
    "array": b"[]",
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
@pytest.mark.parametrize("as_json", [False, True])
def test_one_malformed_vsa_among_two_valid_ones_is_rejected_with_its_reason(
    world: World, kind: str, as_json: bool
) -> None:
    """The finding: a malformed VSA made gate exit 70 after writing the policy and the log."""
    bad = world.root / f"{kind}.vsa.json"
    bad.write_bytes(MALFORMED[kind])
    result = world.gate(
        world.vsa("alice"), bad, world.vsa("bob"), extra=("--json",) if as_json else ()
    )
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    entry = world.entries()[-1].entry
    assert entry.decision == "approved"
    assert [r for r in entry.rejected if r.startswith(bad.name)], entry.rejected
    if as_json:
        report = json.loads(result.stdout)
        assert report["gate"]["decision"] == "approved"
        assert any(r.startswith(bad.name) for r in report["gate"]["rejected"])
    else:
        assert f"rejected  {bad.name}" in result.stderr
    assert json.loads(world.output.read_text())["Id"].startswith("EnclaveAuditLogHead-0-")


def test_a_vsa_with_a_name_that_is_not_utf8_is_recorded_readably(world: World) -> None:
    name = os.fsencode(str(world.root)) + b"/\xff\xfe.vsa.json"
    with open(name, "wb") as fh:
        fh.write(b"garbage")
    result = run_cli(
        [
            "gate",
            "--policy",
            str(world.policy),
            "--measurements",
            str(world.measurements(NEW)),
            "--trust",
            str(world.root / "trust.toml"),
            "-o",
            str(world.output),
            *NOW,
            "--vsa",
            str(world.vsa("alice")),
            "--vsa",
            str(world.vsa("bob")),
            "--vsa",
            os.fsdecode(name),
        ]
    )
    assert result.exit_code == 0, result.stderr
    entry = world.entries()[-1].entry
    assert "vsa:\\xff\\xfe.vsa.json" in entry.inputs


@pytest.mark.parametrize("target", ["fifo", "socket"])
def test_an_output_that_will_be_refused_is_refused_before_the_log(
    world: World, target: str
) -> None:
    import socket

    listener = socket.socket(socket.AF_UNIX)
    if target == "fifo":
        os.mkfifo(world.output)
    else:
        listener.bind(str(world.output))
    with listener:
        result = world.gate(world.vsa("alice"), world.vsa("bob"))
    assert_one_line_error(result, 7, "not a regular file")
    assert not world.log.exists()  # nothing logged: the run stopped at a check


# --- with --apply: nothing reaches the KMS before every check has passed ------------------------


def test_apply_reaches_the_kms_only_after_every_check(world: World) -> None:
    from reference_enclave.kms import Credential, kms_client, start_kms

    admin = Credential(
        access_key_id="AKIAGATEHOSTILE00001",
        secret_access_key="gate-hostile-secret-" + "h" * 22,
        principal="arn:aws:iam::111122223333:user/release-admin",
    )
    policy = json.loads(world.policy.read_text())
    policy["Statement"][0]["Principal"] = {"AWS": admin.principal}
    world.policy.write_text(json.dumps(policy))
    with start_kms(world.root / "kms.db", credentials=[admin]) as running:
        client = kms_client(running.url, admin.access_key_id, admin.secret_access_key)
        key_id = client.create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
        env = {
            "AWS_ACCESS_KEY_ID": admin.access_key_id,
            "AWS_SECRET_ACCESS_KEY": admin.secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        apply = ("--apply", "--kms-endpoint", running.url, "--key-id", key_id)
        bad = world.root / "markup.vsa.json"
        bad.write_bytes(MALFORMED["markup"])
        vsas = [world.vsa("alice"), bad, world.vsa("bob")]

        def live() -> dict[str, Any]:
            return dict(json.loads(client.get_key_policy(KeyId=key_id)["Policy"]))

        # a check that fails late (the output target) stops the run before the log and KMS
        os.mkfifo(world.output)
        args = [
            str(a)
            for a in (
                "gate",
                "--policy",
                world.policy,
                "--measurements",
                world.measurements(NEW),
                "--trust",
                world.root / "trust.toml",
                "-o",
                world.output,
                *NOW,
                *apply,
            )
        ]
        for path in vsas:
            args += ["--vsa", str(path)]
        result = run_cli(args, env=env)
        assert_one_line_error(result, 7, "not a regular file")
        assert live() == policy and not world.log.exists()
        world.output.unlink()
        # the same run with a writable output: logged, applied, the outcome logged
        result = run_cli(args, env=env)
        assert result.exit_code == 0, result.stderr
        entries = world.entries()
        assert [e.decision for e in entries] == ["approved", "applied"]
        assert entries[1].entry.applies == 0
        assert live()["Id"] == decision_log.head_id(entries[0])
        assert live() == json.loads(world.output.read_text())
        assert any(r.startswith(bad.name) for r in entries[0].entry.rejected)
