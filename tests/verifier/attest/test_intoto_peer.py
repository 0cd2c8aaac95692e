"""Provenance and VSA statements as the in-toto-attestation Python bindings read them.

The statements are made as a user makes them (``attest provenance --manifest`` and
``attest vsa --input-attestation``), taken out of the signed bundles, and parsed with
the in-toto-attestation protobuf bindings (Statement, ResourceDescriptor, SLSA
Provenance v1, VSA v1).  The spec rules the bindings leave out are checked here too:
extension fields are named by URIs, every ``inputAttestations`` entry has ``uri`` and
``digest``, ``policy`` has a ``uri``, timestamps are RFC 3339 UTC, ``verificationResult``
is PASSED/FAILED and ``verifiedLevels`` are SLSA level names, and hex digests are
lowercase of the right length.
"""

from __future__ import annotations

import base64
import json
import random
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from conftest import run_cli

from builder.eif import write_eif
from enclave_audit.model.attestation import (
    VSA_EXT_PCRS,
    VSA_EXT_REBUILDS,
    VSA_EXT_SOURCE_COMMIT,
    VSA_EXT_VERDICT,
)
from enclave_audit.model.measurements import measurements_json

intoto = pytest.importorskip("in_toto_attestation", reason="in-toto-attestation (dev extra)")

_RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128, "gitCommit": 40}


def _payload(bundle: Path) -> dict[str, Any]:
    envelope = json.loads(bundle.read_text())["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    data: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return data


def _statement_ok(data: dict[str, Any]) -> None:
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    proto = json_format.ParseDict(data, statement_pb2.Statement())
    Statement.copy_from_pb(proto).validate()
    for subject in data["subject"]:
        _descriptor_ok(subject, need_digest=True)


def _descriptor_ok(
    rd: dict[str, Any], *, need_digest: bool = False, need_uri: bool = False
) -> None:
    from google.protobuf import json_format
    from in_toto_attestation.v1 import resource_descriptor_pb2
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor

    proto = json_format.ParseDict(rd, resource_descriptor_pb2.ResourceDescriptor())
    ResourceDescriptor.copy_from_pb(proto).validate()
    if need_digest:
        assert rd.get("digest"), rd
    if need_uri:
        assert rd.get("uri"), rd
    if "uri" in rd:
        assert urlparse(rd["uri"]).scheme, rd["uri"]  # a URI, with its scheme
    for algorithm, value in (rd.get("digest") or {}).items():
        if algorithm in _HEX_LEN:
            assert re.fullmatch(f"[0-9a-f]{{{_HEX_LEN[algorithm]}}}", value), (algorithm, value)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from enclave_audit.fsutil import hash_file
    from enclave_audit.model.manifest import BuildManifest

    work = tmp_path_factory.mktemp("intoto")
    rng = random.Random(17)
    (work / "bzImage").write_bytes(rng.randbytes(4096))
    (work / "app.cpio").write_bytes(rng.randbytes(8192))
    eif = work / "enclave.eif"
    pcrs = write_eif(
        eif,
        kernel=work / "bzImage",
        cmdline="console=ttyS0",
        ramdisks=[work / "app.cpio"],
        name="t",
        version="1",
        build_time="2025-01-01T00:00:00Z",
    ).pcrs
    (work / "measurements.json").write_text(measurements_json(pcrs))
    digests = hash_file(eif, ("sha256", "sha384"))
    manifest = BuildManifest.model_validate(
        {
            "name": "t",
            "version": "1",
            "builder": {"version": "0.1.0", "backend": "native"},
            "source_date_epoch": 1700000000,
            "rootfs_source_date_epoch": 1700000000,
            "source": {"git_commit": "ab" * 20, "tree_sha256": "cd" * 32},
            "spec": {"path": "enclave.toml", "sha256": "ef" * 32, "text": "",
                     "lock_path": "l", "lock_text": ""},
            "kernel": {"release": "6.1", "cmdline": "console=ttyS0", "bzimage_sha256": "01" * 32,
                       "config_sha256": "02" * 32, "input_digest": "03" * 32,
                       "source_date_epoch": 1},
            "inputs": [],
            "toolchain": {"gcc": "12.2.0"},
            "ramdisks": [],
            "outputs": [{"name": "enclave.eif", "size": eif.stat().st_size,
                         "sha256": digests["sha256"].hex(), "sha384": digests["sha384"].hex()}],
            "pcrs": {"values": {str(i): pcrs.hex(i) for i in pcrs.indices()}},
        }
    )  # fmt: skip
    (work / "build-manifest.json").write_text(manifest.to_json())
    assert run_cli(["keys", "generate", "--prefix", str(work / "k")]).exit_code == 0
    provenance = work / "provenance.sigstore.json"
    result = run_cli(
        ["attest", "provenance", "--manifest", str(work / "build-manifest.json"),
         "--key", str(work / "k.key"), "-o", str(provenance)]
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (work / "policy.json").write_text("{}")
    vsa = work / "vsa.sigstore.json"
    result = run_cli(
        ["attest", "vsa", "--eif", str(eif), "--measurements", str(work / "measurements.json"),
         "--verdict", "PASS", "--policy", str(work / "policy.json"), "--rebuilds", "2",
         "--source-commit", "AB" * 20, "--input-attestation", str(provenance),
         "--key", f"file:{work / 'k.key'}", "-o", str(vsa)]
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return provenance, vsa


def test_provenance_parses_with_the_bindings(signed: tuple[Path, Path]) -> None:
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2

    data = _payload(signed[0])
    _statement_ok(data)
    assert data["predicateType"] == "https://slsa.dev/provenance/v1"
    predicate = data["predicate"]
    # no unknown fields anywhere in the provenance predicate
    proto = json_format.ParseDict(predicate, provenance_pb2.Provenance())
    assert proto.build_definition.build_type and proto.run_details.builder.id
    assert urlparse(proto.build_definition.build_type).scheme == "https"
    assert urlparse(proto.run_details.builder.id).scheme == "https"
    for rd in predicate["buildDefinition"].get("resolvedDependencies", []):
        _descriptor_ok(rd)
    for rd in predicate["runDetails"].get("byproducts", []):
        _descriptor_ok(rd)
    meta = predicate["runDetails"].get("metadata", {})
    for key in ("startedOn", "finishedOn"):
        if key in meta:
            assert _RFC3339_UTC.match(meta[key]), meta[key]


def test_vsa_parses_with_the_bindings_and_the_spec_rules(signed: tuple[Path, Path]) -> None:
    from google.protobuf import json_format
    from in_toto_attestation.predicates.vsa.v1 import vsa_pb2

    data = _payload(signed[1])
    _statement_ok(data)
    assert data["predicateType"] == "https://slsa.dev/verification_summary/v1"
    predicate = data["predicate"]
    # the bindings' v1 message declares verifiedLevels as one string while the VSA spec
    # (and every consumer) has an array of SLSA levels: it is checked by the spec below
    levels_field = vsa_pb2.VerificationSummary.DESCRIPTOR.fields_by_name["verified_levels"]
    assert not levels_field.is_repeated, "the bindings now follow the spec: parse it whole"
    as_bindings_read = {k: v for k, v in predicate.items() if k != "verifiedLevels"}
    proto = json_format.ParseDict(
        as_bindings_read, vsa_pb2.VerificationSummary(), ignore_unknown_fields=True
    )
    assert proto.verifier.id and proto.resource_uri and proto.policy.uri
    assert proto.verification_result == "PASSED"
    # extension fields: everything the VSA message does not define is named by a URI
    known = {f.json_name for f in vsa_pb2.VerificationSummary.DESCRIPTOR.fields}
    extensions = set(predicate) - known
    assert extensions == {VSA_EXT_PCRS, VSA_EXT_REBUILDS, VSA_EXT_SOURCE_COMMIT, VSA_EXT_VERDICT}
    for name in extensions:
        parsed = urlparse(name)
        assert parsed.scheme == "https" and parsed.netloc, name
    assert predicate[VSA_EXT_VERDICT] == "PASS" and predicate[VSA_EXT_REBUILDS] == 2
    assert predicate[VSA_EXT_SOURCE_COMMIT] == "ab" * 20
    assert set(predicate[VSA_EXT_PCRS]) >= {"PCR0", "PCR1", "PCR2"}
    # inputAttestations: each with uri and digest (VSA v1), the provenance bundle's sha256
    inputs = predicate["inputAttestations"]
    assert len(inputs) == 1
    for rd in inputs:
        _descriptor_ok(rd, need_digest=True, need_uri=True)
    _descriptor_ok(predicate["policy"], need_uri=True)
    assert _RFC3339_UTC.match(predicate["timeVerified"]), predicate["timeVerified"]
    assert predicate["verificationResult"] in ("PASSED", "FAILED")
    assert isinstance(predicate["verifiedLevels"], list) and predicate["verifiedLevels"]
    for level in predicate["verifiedLevels"]:
        assert re.fullmatch(
            r"SLSA_[A-Z]+_LEVEL_([0-9]|UNEVALUATED)|FAILED|[A-Z0-9]+_[A-Z0-9_]+", level
        )
