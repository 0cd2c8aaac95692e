"""The exit-code table is one place, distinct where it must be, and the README shows it."""

from __future__ import annotations

import re

from conftest import ROOT, run_cli

from enclave_audit.cli import COMMANDS, LazyGroup, cli
from enclave_audit.errors import EnclaveAuditError, exit_code_table


def _readme_table() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- exit-codes:start -->\n(.*?)<!-- exit-codes:end -->", text, re.S)
    assert match, "README lacks the exit-code table markers"
    return match.group(1).strip()


def test_readme_exit_code_table_is_generated_from_errors():
    rows = ["| Code | Meaning | Raised as |", "| --- | --- | --- |"]
    rows += [f"| {c} | {m} | {n or '-'} |" for c, m, n in exit_code_table()]
    assert _readme_table() == "\n".join(rows)


def test_every_error_class_has_a_code_in_range():
    codes = {code for code, _, _ in exit_code_table()}
    assert codes <= set(range(0, 128))
    assert {0, 1, 2, 3, 4, 5, 70} <= codes


def test_readme_has_exactly_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert [b.strip() for b in blocks] == ["scripts/demo", "scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci


def test_every_registered_verb_imports_and_has_an_example():
    group = cli
    assert isinstance(group, LazyGroup)
    import click

    ctx = click.Context(group)
    missing = []
    for name in COMMANDS:
        command = group.get_command(ctx, name)
        assert command is not None, name
        stack = [(name, command)]
        while stack:
            label, cmd = stack.pop()
            if not (cmd.help and "example" in cmd.help.lower()):
                missing.append(label)
            if isinstance(cmd, click.Group):
                stack += [(f"{label} {sub}", c) for sub, c in cmd.commands.items()]
    assert not missing, f"--help without an example: {missing}"


def test_top_level_help_lists_verbs_and_exit_codes():
    result = run_cli(["--help"])
    assert result.exit_code == 0
    for verb in COMMANDS:
        assert verb in result.stdout
    assert "Exit codes" in result.stdout


def test_unknown_verb_is_a_usage_error():
    result = run_cli(["frobnicate"])
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr


def test_diagnostic_is_one_line():
    err = EnclaveAuditError("first line\nsecond   line")
    assert err.diagnostic() == "error: first line second line"
