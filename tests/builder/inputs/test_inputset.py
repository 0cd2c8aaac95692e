"""Input sets: content-addressed, checked on use, refused when anything is off."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from local_archive import make_deb, sha256

from builder.inputs.inputset import InputSet, write_input_set
from builder.inputs.store import InputStore
from enclave_audit.errors import DigestMismatch, InvalidInput
from enclave_audit.model.manifest import InputKind, PinnedInput


def _items(tmp_path: Path) -> list[tuple[PinnedInput, Path]]:
    out = []
    for name, version in (("alpha", "1.0-1"), ("beta", "2:0.1-3")):
        deb = make_deb(tmp_path, name, version)
        ref = PinnedInput(
            name=name, kind=InputKind.DEBIAN_PACKAGE, version=version, arch="all",
            origin=f"apt://deb.debian.org/{name}={version}", sha256=sha256(deb),
        )  # fmt: skip
        out.append((ref, deb))
    return out


@pytest.mark.parametrize("target", ["set", "set.tar"])
def test_round_trip(tmp_path: Path, store_dir: Path, debtools: None, target: str) -> None:
    items = _items(tmp_path)
    index = write_input_set(tmp_path / target, items)
    assert [e.name for e in index.inputs] == ["alpha", "beta"]
    with InputSet(tmp_path / target) as inputs:
        verified = inputs.verify()
        assert verified.blobs == 2
        for ref, deb in items:
            assert inputs.has(ref.sha256)
            stored = inputs.copy_into(ref.sha256, InputStore())
            assert stored.read_bytes() == deb.read_bytes()
    doc = json.loads(
        (tmp_path / target / "index.json").read_text()
        if target == "set"
        else tarfile.open(tmp_path / target).extractfile("index.json").read()  # type: ignore[union-attr]
    )
    assert doc["schema"] == "enclave-audit/input-set" and doc["schema_version"] == 1


def test_tar_is_deterministic(tmp_path: Path, debtools: None) -> None:
    items = _items(tmp_path)
    write_input_set(tmp_path / "a.tar", items)
    write_input_set(tmp_path / "b.tar", list(reversed(items)))
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_a_tampered_blob_is_refused(tmp_path: Path, store_dir: Path, debtools: None) -> None:
    items = _items(tmp_path)
    write_input_set(tmp_path / "set", items)
    blob = tmp_path / "set" / "blobs" / "sha256" / items[0][0].sha256
    data = bytearray(blob.read_bytes())
    data[100] ^= 1
    blob.unlink()  # the set hard-links the originals: replace, do not edit in place
    blob.write_bytes(bytes(data))
    with InputSet(tmp_path / "set") as inputs:
        with pytest.raises(DigestMismatch, match="alpha"):
            inputs.verify()
        with pytest.raises(DigestMismatch, match="does not hash to its name"):
            inputs.copy_into(items[0][0].sha256, InputStore())
    assert not InputStore().has(items[0][0].sha256)
    result = run_cli(["inputs", "verify", str(tmp_path / "set")])
    assert_one_line_error(result, 32, "alpha")


def test_unlisted_files_and_bad_indices_are_refused(tmp_path: Path, debtools: None) -> None:
    items = _items(tmp_path)
    write_input_set(tmp_path / "set", items)
    (tmp_path / "set" / "blobs" / "sha256" / "stray").write_bytes(b"x")
    with InputSet(tmp_path / "set") as inputs, pytest.raises(InvalidInput, match="stray"):
        inputs.verify()
    index = tmp_path / "set" / "index.json"
    good = index.read_text()
    doc = json.loads(good)
    doc["inputs"][0]["path"] = "blobs/sha256/../../../etc/passwd"
    index.write_text(json.dumps(doc))
    with pytest.raises(InvalidInput, match="blobs/sha256"):
        InputSet(tmp_path / "set")
    twice = '"schema_version": 1, "schema_version": 2'
    index.write_text(good.replace('"schema_version": 1', twice))
    with pytest.raises(InvalidInput, match="repeats the key"):
        InputSet(tmp_path / "set")
    index.write_text("[" * 100_000)
    with pytest.raises(InvalidInput, match="not valid JSON"):
        InputSet(tmp_path / "set")
    (tmp_path / "empty").mkdir()
    result = run_cli(["inputs", "verify", str(tmp_path / "empty")])
    assert_one_line_error(result, 3, "not an input set")
    result = run_cli(["inputs", "verify", str(tmp_path / "absent.tar")])
    assert_one_line_error(result, 6, "absent.tar")
