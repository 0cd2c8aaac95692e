"""BuildManifest: schema-versioned, round-trips, bad files are one SpecInvalid line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from builder.provenance import provenance_for
from enclave_audit.errors import InputNotFound, SpecInvalid
from enclave_audit.model.attestation import ProvenancePredicate, Statement
from enclave_audit.model.manifest import (
    MANIFEST_SCHEMA,
    BuilderInfo,
    BuildManifest,
    BuildOutput,
    InputKind,
    KernelInfo,
    PinnedInput,
    SourceInfo,
    SpecInfo,
)
from enclave_audit.model.measurements import PcrSet

H256 = "ab" * 32
H384 = "cd" * 48


def _manifest() -> BuildManifest:
    out = BuildOutput(name="enclave.eif", path="enclave.eif", size=10, sha256=H256, sha384=H384)
    return BuildManifest(
        name="x",
        version="1",
        builder=BuilderInfo(version="0.1.0", backend="native"),
        source_date_epoch=1_700_000_000,
        rootfs_source_date_epoch=1_600_000_000,
        source=SourceInfo(git_commit="c" * 40, tree_sha256=H256, packages=("app",)),
        spec=SpecInfo(
            path="s/enclave.toml", sha256=H256, text="schema = 1\n", lock_path="s/l", lock_text=""
        ),
        kernel=KernelInfo(
            release="6.12.117",
            cmdline="console=ttyS0",
            bzimage_sha256=H256,
            config_sha256=H256,
            input_digest=H256,
            source_date_epoch=1_794_660_961,
        ),
        inputs=(
            PinnedInput(
                name="libc6",
                kind=InputKind.DEBIAN_PACKAGE,
                version="2.36",
                origin="apt://x",
                sha256=H256,
            ),
        ),
        toolchain={"gcc": "gcc 12"},
        ramdisks=(BuildOutput(name="bootstrap-ramdisk", size=4, sha256=H256, sha384=H384),),
        outputs=(out,),
        pcrs=PcrSet(values={0: bytes(48), 1: bytes(48), 2: bytes(48)}),
    )


def test_round_trip(tmp_path: Path) -> None:
    m = _manifest()
    path = tmp_path / "build-manifest.json"
    path.write_text(m.to_json())
    assert json.loads(path.read_text())["schema"] == MANIFEST_SCHEMA
    assert BuildManifest.load(path) == m
    assert m.input("libc6") is not None and m.output("enclave.eif") is not None


def test_bad_manifests(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("{not json")
    with pytest.raises(SpecInvalid):
        BuildManifest.load(path)
    data = json.loads(_manifest().to_json())
    data["schema"] = "https://example.invalid/v9"
    path.write_text(json.dumps(data))
    with pytest.raises(SpecInvalid, match="schema"):
        BuildManifest.load(path)
    data = json.loads(_manifest().to_json())
    data["inputs"][0]["sha256"] = "XYZ"
    path.write_text(json.dumps(data))
    with pytest.raises(SpecInvalid, match="sha256"):
        BuildManifest.load(path)
    with pytest.raises(InputNotFound):
        BuildManifest.load(tmp_path / "absent.json")


def test_provenance_from_manifest_is_deterministic() -> None:
    m = _manifest()
    one = provenance_for(m, manifest_sha256=H256).to_bytes()
    assert one == provenance_for(m, manifest_sha256=H256).to_bytes()
    stmt = Statement.from_bytes(one)
    assert stmt.subject[0].digest == {"sha256": H256, "sha384": H384}
    pred = stmt.predicate_as(ProvenancePredicate)
    assert pred.pcrs() == m.pcrs
    deps = {d.name: d for d in pred.build_definition.resolved_dependencies or []}
    assert deps["source"].digest == {"gitCommit": "c" * 40}
    assert deps["libc6"].digest == {"sha256": H256}
    assert b"startedOn" not in one and b"invocationId" not in one


def test_manifest_and_input_set_follow_the_published_schemas(tmp_path: Path) -> None:
    """schema + schema_version, validated against docs/schemas (a real build's manifest is
    validated the same way by tests/builder/test_reference_image.py)."""
    from conftest import _schema_validator, json_schema_for

    from builder.inputs.inputset import write_input_set

    doc = json.loads(_manifest().to_json())
    assert list(doc)[:2] == ["schema", "schema_version"] and doc["schema_version"] == 2
    name = json_schema_for(doc)
    assert name == "build-manifest.v2.schema.json"
    _schema_validator(name).validate(doc)
    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    ref = PinnedInput(
        name="x", kind=InputKind.WHEEL, version="1", filename="x-1-py3-none-any.whl",
        origin="pypi", sha256=hashlib.sha256(b"x").hexdigest(),
    )  # fmt: skip
    write_input_set(tmp_path / "set", [(ref, blob)])
    index = json.loads((tmp_path / "set" / "index.json").read_text())
    assert json_schema_for(index) == "input-set.v1.schema.json"
    _schema_validator("input-set.v1.schema.json").validate(index)


def test_version_1_manifests_of_older_releases_still_read(tmp_path: Path) -> None:
    data = json.loads(_manifest().to_json())
    data.pop("schema_version")
    data["schema"] = "https://enclave-audit.dev/schemas/build-manifest/v1"
    for item in data["inputs"]:
        for key in ("arch", "filename", "served_by"):
            item.pop(key)
    data["spec"].pop("lock_resolved_at")
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = BuildManifest.load(path)
    assert old.schema_version == 1 and old.pcrs == _manifest().pcrs
    data["schema_version"] = 1  # v1 never carried it: a forged mix is refused
    path.write_text(json.dumps(data))
    with pytest.raises(SpecInvalid, match="schema_version"):
        BuildManifest.load(path)
