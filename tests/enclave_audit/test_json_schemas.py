"""docs/schemas: one published JSON Schema per JSON document the CLI writes.

Every CLI run in the suite validates its JSON output against these files
(tests/conftest.py: check_json_output); here the files themselves are checked: they
are what enclave_audit.schemas generates (run ``python -m enclave_audit.schemas`` after
changing a model), each is a valid Draft 2020-12 schema, each labelled one pins its
``schema`` and ``schema_version``, and files written by the CLI (reports, the diff's
JSON file, the error document) validate too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, check_json_output, json_schema_for, run_cli
from jsonschema import Draft202012Validator

from enclave_audit import schemas

SCHEMA_DIR = ROOT / "docs" / "schemas"


def test_published_files_are_the_generated_ones() -> None:
    generated = schemas.generate()
    on_disk = {p.name for p in SCHEMA_DIR.glob("*.schema.json")}
    assert on_disk == set(generated), "run: .venv/bin/python -m enclave_audit.schemas"
    for name, doc in generated.items():
        assert (SCHEMA_DIR / name).read_text() == schemas.text(doc), (
            f"{name} is stale: run .venv/bin/python -m enclave_audit.schemas"
        )


@pytest.mark.parametrize("name", sorted(schemas.generate()))
def test_each_schema_is_valid_and_labelled(name: str) -> None:
    doc = json.loads((SCHEMA_DIR / name).read_text())
    Draft202012Validator.check_schema(doc)
    versioned = re.fullmatch(r"(.+)\.v([0-9]+)\.schema\.json", name)
    if versioned:
        label, version = versioned.group(1), int(versioned.group(2))
        assert doc["properties"]["schema"] == {"const": f"enclave-audit/{label}"}
        assert doc["properties"]["schema_version"] == {"const": version}
        assert doc["required"][:2] == ["schema", "schema_version"]
    else:
        assert name.startswith("nitro-"), name  # only the peer formats are unversioned


def test_error_document_on_failure_is_json(tmp_path: Path) -> None:
    result = run_cli(["describe-eif", str(tmp_path / "missing.eif"), "--json"])
    assert result.exit_code == 6
    doc = json.loads(result.stdout)
    assert doc["schema"] == "enclave-audit/error" and doc["exit_code"] == 6
    assert "missing.eif" in doc["error"]["message"]


def test_unlabelled_json_is_caught() -> None:
    """The suite-wide check refuses a JSON object without the label (it is not lax)."""
    from conftest import CliResult

    with pytest.raises(AssertionError, match="label"):
        check_json_output(["x", "--json"], CliResult(0, '{"PCR0": "00"}', ""))
    assert json_schema_for({"schema": "enclave-audit/diff", "schema_version": 1}) == (
        "diff.v1.schema.json"
    )
