"""JSON Schemas of every JSON document the CLI writes, published in ``docs/schemas/``.

Our documents follow one convention: the first two members are ``schema``
(``enclave-audit/NAME``) and ``schema_version`` (an integer, bumped on an incompatible
change).  Their schemas are ``docs/schemas/NAME.v<version>.schema.json`` (one file per
name, for the version the CLI writes now): generated
from the pydantic models where a model is the document, written here where the
document is a small dict.  Documents in a peer's format keep that format and have no
label: nitro-cli's ``describe-eif`` and measurements JSON (schemas here too), SPDX,
CycloneDX, SARIF and in-toto statements (their own published schemas).

``python -m enclave_audit.schemas [DIR]`` rewrites the files; a test keeps them equal to
what this module generates and validates the CLI's outputs against them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://github.com/enclave-audit/enclave-audit/blob/main/docs/schemas/"
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"

HEX96 = {"type": "string", "pattern": "^[0-9a-f]{96}$"}
HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}


def _object(
    properties: dict[str, Any], *, optional: tuple[str, ...] = (), **extra: Any
) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": [k for k in properties if k not in optional],
        **extra,
    }


def _labelled(name: str, properties: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return _object(
        {
            "schema": {"const": f"enclave-audit/{name}"},
            "schema_version": {"const": 1},
            **properties,
        },
        additionalProperties=False,
        **kw,
    )


def _from_model(name: str, import_path: str) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        import importlib

        module_name, _, attr = import_path.rpartition(".")
        model = getattr(importlib.import_module(module_name), attr)
        if isinstance(model, type) and dataclasses.is_dataclass(model):  # attestation types
            from enclave_audit.model._pydantic_types import adapter

            doc: dict[str, Any] = adapter(model).json_schema(by_alias=True, mode="serialization")
            fields = {f.name: f for f in dataclasses.fields(model)}
            field = fields.get("schema_version")
        else:
            doc = model.model_json_schema(by_alias=True, mode="serialization")
            field = model.model_fields.get("schema_version")
        props = doc.setdefault("properties", {})
        props.pop("schema_", None)
        props["schema"] = {"const": f"enclave-audit/{name}"}
        # the version the model writes (diff is at 2: its causes and significance changed)
        version = field.default if field is not None else 1
        props["schema_version"] = {"const": version if isinstance(version, int) else 1}
        required = [r for r in doc.get("required", []) if r not in ("schema", "schema_version")]
        doc["required"] = ["schema", "schema_version", *required]
        return doc

    return make


def _measurements() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"HashAlgorithm": {"const": "Sha384 { ... }"}},
        "required": ["HashAlgorithm", "PCR0", "PCR1", "PCR2"],
        "patternProperties": {"^PCR[0-9]+$": HEX96},
        "additionalProperties": False,
    }


#: our documents: NAME -> schema (a callable for the generated ones)
LABELLED: dict[str, dict[str, Any] | Callable[[], dict[str, Any]]] = {
    "error": _labelled(
        "error",
        {
            "ok": {"const": False},
            "exit_code": _INT,
            "error": _object({"class": _STR, "message": _STR}, additionalProperties=False),
        },
    ),
    "pcr": _labelled("pcr", {}, patternProperties={"^PCR[0-9]*$": HEX96}, minProperties=3),
    "build": _labelled(
        "build",
        {
            "output": _STR,
            "eif": _STR,
            "Measurements": _measurements(),
            "kernel_reused": _BOOL,
            "rootfs_reused": _BOOL,
            "timings": {"type": "object", "additionalProperties": {"type": "number"}},
        },
    ),
    "attest-signed": _labelled(
        "attest-signed",
        {
            "bundle": _STR,
            "signer": _STR,
            "predicate_type": _STR,
            "payload_sha256": HEX64,
            "subjects": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        },
    ),
    "keys": _labelled(
        "keys",
        {
            "private_key": _STR,
            "public_key": _STR,
            "type": {"enum": ["ecdsa-p256", "ed25519"]},
            "fingerprint": _STR,
            "hint": _STR,
            "encrypted": _BOOL,
        },
    ),
    "kms-key": _labelled("kms-key", {"KeyId": _STR, "Arn": _STR}),
    "kms-policy-check": _labelled(
        "kms-policy-check", {"path": _STR, "valid": {"const": True}, "statements": _INT}
    ),
    "sim-ca": _labelled("sim-ca", {"root": _STR, "root_sha256": HEX64}),
    "enclave-run": _labelled("enclave-run", {"url": _STR, "module_id": _STR, "pid": _INT}),
    "qemu-build": _labelled(
        "qemu-build",
        {
            "binary": _STR,
            "firmware_dir": _STR,
            "version": _STR,
            "source": _STR,
            "build_seconds": {"type": ["number", "null"]},
        },
    ),
    "model-file-info": _labelled(
        "model-file-info",
        {
            "format_version": _INT,
            "algorithm": _STR,
            "header_length": _INT,
            "chunk_size": _INT,
            "chunk_count": _INT,
            "plaintext_length": _INT,
            "file_length": _INT,
            "plaintext_sha256": HEX64,
            "header_sha256": HEX64,
            "model_id": _STR,
            "model_version": _STR,
            "kms_key_id": _STR,
            "wrapped_key_length": _INT,
            "encryption_context": {"type": "object", "additionalProperties": _STR},
        },
        optional=("kms_key_id", "wrapped_key_length", "encryption_context"),
    ),
    "model-run": {
        **_labelled("model-run", {"model": _STR, "text": _STR, "prompt": _STR}),
        "additionalProperties": True,
    },
    "accelerator-reference-values": {
        **_labelled("accelerator-reference-values", {"vendor_root_sha256": HEX64}),
        "additionalProperties": True,
    },
    "inputs-export": _labelled("inputs-export", {"output": _STR, "inputs": _INT, "bytes": _INT}),
    "inputs-verify": _labelled(
        "inputs-verify", {"input_set": _STR, "ok": {"const": True}, "inputs": _INT, "bytes": _INT}
    ),
    "lock-update": _labelled(
        "lock-update",
        {
            "lock": _STR,
            "resolved_at": _STR,
            "source_date_epoch": _INT,
            "written": _BOOL,
            "changes": {
                "type": "array",
                "items": _object(
                    {
                        "name": _STR,
                        "arch": _STR,
                        "old": {"type": ["string", "null"]},
                        "new": {"type": ["string", "null"]},
                        "security": _BOOL,
                        "suite": {"type": ["string", "null"]},
                    },
                    additionalProperties=False,
                ),
            },
            "notes": {"type": "array", "items": _STR},
        },
    ),
    "nitro-attestation-result": _from_model(
        "nitro-attestation-result", "enclave_audit.model.attestation_doc.AttestationResult"
    ),
    "nitro-attestation-document": _from_model(
        "nitro-attestation-document", "enclave_audit.model.attestation_doc.AttestationDocument"
    ),
    "attest-verify": _from_model("attest-verify", "verifier.attest.verify.VerificationReport"),
    "diff": _from_model("diff", "enclave_audit.model.difference.DiffReport"),
    "audit": _from_model("audit", "verifier.audit.report.ImageAuditReport"),
    "report": _from_model("report", "enclave_audit.model.report.AuditReport"),
    "verify": _from_model("verify", "verifier.rebuild.VerifyResult"),
    "repro-report": _from_model("repro-report", "builder.repro.ReproReport"),
    "client-answer": _from_model("client-answer", "reference_enclave.client.ask.AskResult"),
    "demo-report": _from_model("demo-report", "reference_enclave.demo.DemoReport"),
    "qemu-boot": _from_model("qemu-boot", "verifier.qemu.result.QemuBootResult"),
    "decision-log-entry": _from_model("decision-log-entry", "reports.decision_log.DecisionEntry"),
    # files the build and `inputs export` write (not stdout documents)
    "build-manifest": _from_model("build-manifest", "enclave_audit.model.manifest.BuildManifest"),
    "input-set": _from_model("input-set", "builder.inputs.inputset.InputSetIndex"),
}

#: peer formats the CLI writes unlabelled: file name -> schema
PEER: dict[str, dict[str, Any]] = {
    "nitro-measurements": {
        "description": "nitro-cli build-enclave's measurements (eif assemble, build, verify)",
        **_object({"Measurements": _measurements()}, additionalProperties=True),
    },
    "nitro-describe-eif": {
        "description": "nitro-cli describe-eif --json",
        **_object(
            {
                "EifVersion": _INT,
                "Measurements": _measurements(),
                "IsSigned": _BOOL,
                "CheckCRC": _BOOL,
                "ImageName": _STR,
                "ImageVersion": _STR,
                "Metadata": {"type": "object"},
            },
            optional=("ImageName", "ImageVersion", "Metadata"),
            additionalProperties=True,
        ),
    },
}


def file_name(name: str, *, peer: bool = False, version: int = 1) -> str:
    return f"{name}.schema.json" if peer else f"{name}.v{version}.schema.json"


def generate() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema document, for every schema this project publishes."""
    out: dict[str, dict[str, Any]] = {}
    for name, source in LABELLED.items():
        body = source() if callable(source) else dict(source)
        version = int(body["properties"]["schema_version"]["const"])
        fname = file_name(name, version=version)
        title = f"enclave-audit/{name} v{version}"
        out[fname] = {"$schema": DRAFT, "$id": ID_BASE + fname, "title": title, **body}
    for name, body in PEER.items():
        fname = file_name(name, peer=True)
        out[fname] = {"$schema": DRAFT, "$id": ID_BASE + fname, "title": name, **body}
    return out


def text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0]) if args else SCHEMA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for fname, doc in generate().items():
        (folder / fname).write_text(text(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
