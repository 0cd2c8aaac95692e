"""GitHub Actions workflows: they parse, call only CLI verbs and options that exist,
and the release workflow keeps its security properties (it cannot run here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from enclave_audit.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
RELEASE = ROOT / ".github" / "workflows" / "release.yml"
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "(", ")", "2>", "2>&1"}


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: not a mapping"
    if True in data:  # YAML 1.1 reads the key `on` as a boolean
        data["on"] = data.pop(True)
    return data


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for job_name, job in (workflow.get("jobs") or {}).items():
        for step in job.get("steps") or []:
            out.append((job_name, step))
    return out


def invocations(script: str) -> list[list[str]]:
    """Every `enclave-audit ...` command line in a shell script, as tokens."""
    joined = re.sub(r"\\\n", " ", script)
    found: list[list[str]] = []
    for line in joined.splitlines():
        if "enclave-audit" not in line or line.lstrip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
        lexer.whitespace_split = True
        tokens = list(lexer)
        for index, token in enumerate(tokens):
            if token == "enclave-audit" or token.endswith("/enclave-audit"):
                command = []
                for tok in tokens[index + 1 :]:
                    if tok in _OPERATORS:
                        break
                    command.append(tok)
                found.append(command)
    return found


def resolve(tokens: list[str]) -> tuple[click.Command, list[str]]:
    """The click command a token list names, and the tokens after it."""
    assert tokens, "bare enclave-audit call"
    verb, rest = tokens[0], tokens[1:]
    assert verb in COMMANDS, f"unknown verb {verb!r} (known: {sorted(COMMANDS)})"
    ctx = click.Context(cli)
    try:
        command = cli.get_command(ctx, verb)
    except (ImportError, AttributeError) as exc:
        raise AssertionError(
            f"verb {verb!r} is listed in COMMANDS but not implemented: {exc}"
        ) from None
    assert command is not None
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"{verb}: unknown subcommand {rest[0]!r}"
        command, rest = sub, rest[1:]
    return command, rest


def test_there_are_workflows() -> None:
    assert RELEASE in WORKFLOWS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_parses_and_calls_real_verbs(path: Path) -> None:
    workflow = load(path)
    assert workflow.get("on"), f"{path.name}: no trigger"
    assert isinstance(workflow.get("jobs"), dict) and workflow["jobs"], f"{path.name}: no jobs"
    for job_name, step in steps(workflow):
        assert ("run" in step) != ("uses" in step), (
            f"{path.name}:{job_name}: step needs run or uses"
        )
        for tokens in invocations(step.get("run", "")):
            command, rest = resolve(tokens)
            known = {
                opt for param in command.params for opt in (*param.opts, *param.secondary_opts)
            }
            known |= {"-h", "--help"}
            for tok in rest:
                if tok.startswith("-") and tok != "-":
                    name = tok.split("=", 1)[0]
                    assert name in known, (
                        f"{path.name}:{job_name}: {command.name} has no option {name}"
                    )


def test_invocation_parser() -> None:
    script = (
        "set -e\n.venv/bin/enclave-audit attest verify b.json \\\n  --artifact x --json | jq .\n"
    )
    assert invocations(script) == [["attest", "verify", "b.json", "--artifact", "x", "--json"]]
    command, _ = resolve(["attest", "verify"])
    assert command.name == "verify"
    with pytest.raises(AssertionError, match="unknown verb"):
        resolve(["no-such-verb"])
    with pytest.raises(AssertionError, match="unknown subcommand"):
        resolve(["attest", "frobnicate"])


def test_release_workflow_security() -> None:
    workflow = load(RELEASE)
    text = RELEASE.read_text()
    assert workflow["permissions"] == {}, "top-level permissions must be {}"
    assert set(workflow["on"]) == {"push"} and workflow["on"]["push"] == {"tags": ["v*"]}
    token_jobs = []
    for name, job in workflow["jobs"].items():
        perms = job.get("permissions")
        assert isinstance(perms, dict), f"job {name} must declare its permissions"
        if perms.get("id-token") == "write":
            token_jobs.append(name)
        assert set(perms.values()) <= {"read", "write"}
    assert token_jobs == ["attest"], "only the attest job may mint OIDC tokens"
    attest_job = workflow["jobs"]["attest"]
    assert not any("build" in (s.get("run") or "").split() for s in attest_job["steps"])
    for job_name, step in steps(workflow):
        if "uses" in step:
            uses = step["uses"]
            assert SHA_PIN.match(uses), f"{job_name}: {uses} not pinned by full commit SHA"
            line = next(ln for ln in text.splitlines() if uses in ln)
            assert re.search(r"#\s*v\d", line), f"{job_name}: {uses} lacks a version comment"
            if uses.startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False
        if "run" in step:
            assert "${{" not in step["run"], f"{job_name}: expression inside a run script"
    # the keyless signature is produced by our CLI and checked offline before publishing
    signing = [t for _, s in steps(workflow) for t in invocations(s.get("run", ""))]
    assert any(t[:2] == ["attest", "provenance"] and "sigstore:" in t for t in signing)
    verify = next(t for t in signing if t[:2] == ["attest", "verify"])
    for option in ("--identity", "--issuer", "--repository", "--ref", "--sha", "--trigger"):
        assert option in verify
    publish = workflow["jobs"]["publish"]
    assert publish.get("environment") == "release"
    assert set(publish["needs"]) >= {"gate"}


def test_lock_update_workflow_proposes_a_pull_request() -> None:
    """Scheduled, least privilege, pinned actions, and it calls the real verb."""
    path = ROOT / ".github" / "workflows" / "lock-update.yml"
    workflow = load(path)
    assert "schedule" in workflow["on"] and "workflow_dispatch" in workflow["on"]
    assert workflow["permissions"] == {}
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    calls = [t for _, s in steps(workflow) for t in invocations(s.get("run", ""))]
    assert ["lock", "update"] == calls[0][:2]
    for _, step in steps(workflow):
        if "uses" in step:
            assert SHA_PIN.match(step["uses"])
        if "run" in step:
            assert "${{" not in step["run"], "expression inside a run script"
    assert "gh pr create" in path.read_text()
