"""Valid inputs for every fuzz target, made with the project's own writers and real fixtures.

The fuzzers start from these (coverage-guided mutation needs a foothold past the
magic numbers); the adversarial corpora tamper with them.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuzz.targets import FIXED_NOW, MODEL_KEY, _auditor_key, _enclave_key, _rsa_key, workdir

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
PRINCIPAL = "arn:aws:iam::111122223333:role/enclave-parent"


def _files(*parts: str, pattern: str = "*") -> list[Path]:
    folder = FIXTURES.joinpath(*parts)
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


# --- EIF ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningMaterial:
    certificate: Path
    key: Path


@functools.cache
def signing_material() -> SigningMaterial:
    """A self-signed P-384 certificate and key, as ``nitro-cli build-enclave --signing-*`` use."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enclave-audit fuzz signer")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(FIXED_NOW - dt.timedelta(days=1))
        .not_valid_after(FIXED_NOW + dt.timedelta(days=3650))
        .sign(key, hashes.SHA384())
    )
    folder = workdir() / "signing"
    folder.mkdir(exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return SigningMaterial(cert_path, key_path)


def make_eif(
    folder: Path, *, signed: bool, seed: int = 1, sizes: tuple[int, ...] = (600, 300, 200)
) -> Path:
    """A small, structurally real EIF (random kernel and ramdisk bytes)."""
    from builder.eif import write_eif

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for name, size in zip(("kernel", "ramdisk0", "ramdisk1"), sizes, strict=True):
        path = folder / f"{name}-{seed}"
        path.write_bytes(rng.randbytes(size))
        parts.append(path)
    out = folder / f"{'signed' if signed else 'plain'}-{seed}.eif"
    material = signing_material() if signed else None
    write_eif(
        out,
        kernel=parts[0],
        cmdline="console=ttyS0 reboot=k",
        ramdisks=parts[1:],
        name="fuzz",
        version="1.0",
        build_time="2026-01-01T00:00:00+00:00",
        signing=(material.certificate, material.key) if material else None,
    )
    return out


def eif_seeds() -> list[bytes]:
    from fuzz.hostile import METADATA_VALUES, eif_with_metadata

    folder = workdir() / "seed-eif"
    return [
        make_eif(folder, signed=False).read_bytes(),
        make_eif(folder, signed=True).read_bytes(),
        *(eif_with_metadata(folder, kind).read_bytes() for kind in METADATA_VALUES),
    ]


def eif_signature_seeds() -> list[bytes]:
    from builder.eif import EifReader

    path = make_eif(workdir() / "seed-eif", signed=True)
    with EifReader.open(path) as reader:
        assert reader.signature is not None
        return [reader.read(reader.signature)]


# --- cpio ---------------------------------------------------------------------------------


def cpio_seeds() -> list[bytes]:
    from builder.initramfs import directory, file_bytes, symlink, write_newc

    out = io.BytesIO()
    write_newc(
        out,
        [
            directory("etc"),
            file_bytes("etc/hostname", b"enclave\n"),
            file_bytes("init", b"#!/bin/sh\necho hi\n", perm=0o755),
            directory("bin"),
            symlink("bin/sh", "busybox"),
            file_bytes("empty", b""),
        ],
        epoch=0,
    )
    return [out.getvalue()]


def decompression_seeds() -> list[bytes]:
    """A ramdisk with a compressed segment after its trailer, nested gzip, a zip."""
    import gzip
    import lzma
    import zipfile

    plain = cpio_seeds()[0]
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/b.txt", b"hello\n" * 100)
        zf.writestr("zeros", bytes(1 << 16))
    return [
        plain + bytes(8) + gzip.compress(plain, mtime=0),
        gzip.compress(gzip.compress(bytes(1 << 18), mtime=0), mtime=0),
        lzma.compress(plain),
        zipped.getvalue(),
    ]


# --- attestation --------------------------------------------------------------------------


def attestation_seeds() -> list[bytes]:
    docs = [p.read_bytes() for p in _files("nitro", "attestation")]
    if not docs:
        docs = [simulated_attestation()]
    return docs


def cbor_seeds() -> list[bytes]:
    from verifier.nitro import unwrap_transport

    return [unwrap_transport(d) for d in attestation_seeds()]


def simulated_attestation(public_key: bytes | None = None) -> bytes:
    from enclave_runtime.nsm import protocol
    from reference_enclave.nsm.simulator import SimulatedNsm

    ca = simulation_ca()
    nsm = SimulatedNsm({0: b"\xa1" * 48, 1: b"\xb2" * 48, 2: b"\xc3" * 48}, ca)
    response = protocol.decode_response(
        nsm.handle(protocol.attestation(public_key=public_key, nonce=b"fuzz-nonce")), "Attestation"
    )
    document = response["document"]
    assert isinstance(document, bytes)
    return document


@functools.cache
def simulation_ca() -> Any:
    from reference_enclave.nsm.sim_ca import SimulationCa

    return SimulationCa.create()


# --- CMS, model file -------------------------------------------------------------------------


def cms_seeds() -> list[bytes]:
    from enclave_runtime.cms import build_enveloped_data

    return [build_enveloped_data(bytes(range(32)), _rsa_key().public_key())]


def model_bytes(size: int = 10_000, chunk: int = 4096) -> bytes:
    from reference_enclave.model_files import encrypt_model

    folder = workdir() / "seed-model"
    folder.mkdir(exist_ok=True)
    src, dst = folder / f"plain-{size}", folder / f"model-{size}.cimf"
    src.write_bytes(random.Random(size).randbytes(size))
    encrypt_model(
        src,
        dst,
        MODEL_KEY,
        chunk_size=chunk,
        model_id="fuzz-model",
        model_version="1",
        kms_key_id="arn:aws:kms:us-east-1:111122223333:key/fuzz",
        wrapped_key=b"w" * 40,
        encryption_context={"model": "fuzz"},
    )
    return dst.read_bytes()


def model_seeds() -> list[bytes]:
    return [model_bytes()]


# --- DSSE, bundles --------------------------------------------------------------------------


def signed_vsa(pcrs: dict[int, bytes] | None = None, *, key: Any = None) -> bytes:
    """A key-signed SLSA VSA bundle over a fixed EIF digest, as an auditor would publish."""
    from enclave_audit.model.attestation import ResourceDescriptor, vsa_statement
    from enclave_audit.model.digests import Digest, HashAlgorithm
    from enclave_audit.model.findings import Verdict
    from enclave_audit.model.measurements import PcrSet
    from verifier.attest.signing import KeySigner, sign_statement

    values = pcrs or {0: b"\xa1" * 48, 1: b"\xb2" * 48, 2: b"\xc3" * 48}
    statement = vsa_statement(
        subjects=[
            ResourceDescriptor.for_digest(
                "enclave.eif", Digest(algorithm=HashAlgorithm.SHA256, value=b"\x11" * 32)
            )
        ],
        resource_uri="git+https://example.org/enclave@" + "a" * 40,
        policy_uri="https://example.org/audit-policy.toml",
        policy_digest=None,
        verdict=Verdict.PASS,
        time_verified=FIXED_NOW - dt.timedelta(hours=1),
        verified_levels=("ENCLAVE_AUDIT_BINARY_AUDIT_PASSED",),
        pcrs=PcrSet(values=values),
        source_commit="a" * 40,
        rebuilds=1,
    )
    return sign_statement(statement, KeySigner(key or _auditor_key())).bundle


def dsse_seeds() -> list[bytes]:
    seeds = [
        p.read_bytes() for p in _files("sigstore", "generated-key-dsse", pattern="*.dsse.json")
    ]
    seeds.append(json.dumps(json.loads(signed_vsa())["dsseEnvelope"]).encode())
    return seeds


def bundle_seeds() -> list[bytes]:
    seeds = [signed_vsa()]
    seeds += [
        p.read_bytes() for p in _files("sigstore", "generated-key-dsse", pattern="*.sigstore.json")
    ]
    seeds += [p.read_bytes() for p in _files("sigstore", "conformance-dsse-slsa-provenance-v1")]
    return seeds


# --- KMS ------------------------------------------------------------------------------------


def _op(name: str) -> bytes:
    from fuzz.targets import KMS_OPERATIONS

    return bytes([KMS_OPERATIONS.index(name)])


def kms_request_seeds() -> list[bytes]:
    blob = base64.b64encode(b"x" * 40).decode()
    bodies = [
        (
            "Encrypt",
            {
                "KeyId": "$key",
                "Plaintext": base64.b64encode(b"hello").decode(),
                "EncryptionContext": {"model": "m"},
            },
        ),
        ("Decrypt", {"CiphertextBlob": blob, "EncryptionContext": {"model": "m"}}),
        ("GenerateDataKey", {"KeyId": "$key", "KeySpec": "AES_256"}),
        ("GenerateDataKeyWithoutPlaintext", {"KeyId": "$key", "NumberOfBytes": 32}),
        ("GenerateRandom", {"NumberOfBytes": 16}),
        ("DescribeKey", {"KeyId": "$key"}),
        ("ListKeys", {"Limit": 2}),
        ("GetKeyPolicy", {"KeyId": "$key", "PolicyName": "default"}),
        (
            "PutKeyPolicy",
            {"KeyId": "$key", "PolicyName": "default", "Policy": kms_policy_seeds()[0].decode()},
        ),
        (
            "Decrypt",
            {
                "CiphertextBlob": blob,
                "Recipient": {
                    "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                    "AttestationDocument": base64.b64encode(b"\x84\x44").decode(),
                },
            },
        ),
    ]
    return [_op(op) + json.dumps(params).encode() for op, params in bodies]


def kms_policy_seeds() -> list[bytes]:
    account = "111122223333"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Admin",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:user/admin"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "EnclaveDecrypt",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:role/enclave-instance-role"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": "*",
                "Condition": {
                    "StringEqualsIgnoreCase": {
                        "kms:RecipientAttestation:ImageSha384": "a1" * 48,
                        "kms:RecipientAttestation:PCR1": "b2" * 48,
                    }
                },
            },
            {
                "Sid": "Deny",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {
                    "StringNotEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": "a1" * 48}
                },
            },
        ],
    }
    return [json.dumps(policy).encode()]


def key_policy_seeds() -> list[bytes]:
    from enclave_audit.model.measurements import PcrSet
    from reports.key_policy import KeyPolicy, propose

    base = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "KeyAdministrators",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                "Action": ["kms:PutKeyPolicy", "kms:GetKeyPolicy"],
                "Resource": "*",
            }
        ],
    }
    proposed = propose(
        KeyPolicy.from_document(base),
        candidate=PcrSet(values={0: b"\xa1" * 48, 1: b"\xb2" * 48, 2: b"\xc3" * 48}),
        principal=PRINCIPAL,
        pinned_pcrs=(0, 1, 2),
        now=FIXED_NOW,
        rollout_until=FIXED_NOW + dt.timedelta(hours=24),
    )
    return [json.dumps(base).encode(), proposed.to_json().encode()]


# --- manifest, trust, decision log ---------------------------------------------------------


def manifest_seeds() -> list[bytes]:
    from enclave_audit.model.manifest import (
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

    out = BuildOutput(
        name="enclave.eif", path="enclave.eif", size=123, sha256="11" * 32, sha384="22" * 48
    )
    fields: dict[str, Any] = {
        "name": "fuzz",
        "version": "1",
        "builder": BuilderInfo(version="0.1", backend="native"),
        "source_date_epoch": 1700000000,
        "rootfs_source_date_epoch": 1700000000,
        "source": SourceInfo(tree_sha256="33" * 32),
        "spec": SpecInfo(
            path="enclave.toml",
            sha256="44" * 32,
            text="name='x'",
            lock_path="enclave.lock",
            lock_text="",
        ),
        "kernel": KernelInfo(
            release="6.1",
            cmdline="console=ttyS0",
            bzimage_sha256="55" * 32,
            config_sha256="66" * 32,
            input_digest="77" * 32,
            source_date_epoch=1700000000,
        ),
        "inputs": (
            PinnedInput(
                name="busybox",
                kind=InputKind.DEBIAN_PACKAGE,
                version="1.35",
                origin="https://deb.debian.org",
                sha256="88" * 32,
            ),
        ),
        "toolchain": {"gcc": "12.2"},
        "ramdisks": (out,),
        "outputs": (out,),
        "pcrs": PcrSet(values={0: b"\xa1" * 48, 1: b"\xb2" * 48, 2: b"\xc3" * 48}),
    }
    known = set(BuildManifest.model_fields)
    manifest = BuildManifest(**{k: v for k, v in fields.items() if k in known})
    return [manifest.to_json().encode()]


def trust_text(
    key_paths: dict[str, str], log: str = "decisions.jsonl", gate_key: str = "gate.key"
) -> str:
    auditors = "".join(
        f'[[auditor]]\nname = "{name}"\nkey = "{path}"\n' for name, path in key_paths.items()
    )
    return (
        "threshold = 2\nmax_vsa_age_hours = 48\nrollout_hours = 24\n"
        'required_levels = ["ENCLAVE_AUDIT_BINARY_AUDIT_PASSED"]\n'
        f'decision_log = "{log}"\ngate_key = "{gate_key}"\n'
        f'[enclave]\nprincipal = "{PRINCIPAL}"\n' + auditors
    )


def trust_seeds() -> list[bytes]:
    from cryptography.hazmat.primitives import serialization

    pem = (
        _auditor_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (workdir() / "alice.pub").write_bytes(pem)
    (workdir() / "bob.pub").write_bytes(pem)
    return [trust_text({"alice": "alice.pub", "bob": "bob.pub"}).encode()]


def decision_log_seeds() -> list[bytes]:
    from fuzz.gate_scene import scene

    log = scene().log
    return [log, b"\n".join(log.split(b"\n")[:2]) + b"\n"]


def decision_entry(i: int) -> Any:
    """A plausible decision (not yet chained or signed), for the log's fault scenario."""
    from reports.decision_log import DecisionEntry

    return DecisionEntry(
        seq=0,
        time=f"2026-11-23T12:00:{i:02d}Z",
        decision="approved" if i % 2 else "refused",
        reason=f"decision {i}",
        candidate_pcrs={"0": "a1" * 48},
        inputs={"measurements": "sha256:" + "00" * 32},
        agreeing=["alice"],
        dissenting=[],
        rejected=[],
        threshold=2,
        policy_sha256=None,
        prev_sha256="0" * 64,
    )


def gate_inputs_seeds() -> list[bytes]:
    from fuzz.gate_scene import seeds

    return seeds()


# --- GPU bridge, enclave endpoint -------------------------------------------------------------


def gpu_report_seeds() -> list[bytes]:
    from reference_enclave.gpu_bridge.service import DEFAULT_MEASUREMENTS, device_identity
    from reference_enclave.gpu_bridge.vendor import make_report

    device = device_identity(FIXED_NOW)
    return [
        make_report(
            device,
            nonce=b"n" * 32,
            enclave_share=b"e" * 32,
            device_share=b"d" * 32,
            measurements=dict(DEFAULT_MEASUREMENTS),
            cc_mode=True,
            debug=False,
            version="1.0",
        )
    ]


def kms_http_seeds() -> list[bytes]:
    """One of each mutation family: the operation byte, the flags byte, the mutations."""
    from fuzz.kms_http import OPERATIONS

    def duplicate(header: int, operation: str, *, first: bool) -> int:
        # botocore's header order: Host, Content-Type, X-Amz-Target, X-Amz-Date, Authorization
        return next(
            arg
            for arg in range(256)
            if arg % 5 == header
            and (arg >> 3) % len(OPERATIONS) == OPERATIONS.index(operation)
            and bool(arg & 128) == first
        )

    list_keys, create_key = OPERATIONS.index("ListKeys"), OPERATIONS.index("CreateKey")
    return [
        bytes([list_keys, 0, 0]),  # a plain signed ListKeys
        bytes([create_key, 0, 0]),  # a plain signed CreateKey
        # ListKeys + a CreateKey target placed first, then last (the finding)
        bytes([list_keys, 0, 1, 0, duplicate(2, "CreateKey", first=True)]),
        bytes([list_keys, 0, 1, 0, duplicate(2, "CreateKey", first=False)]),
        bytes([list_keys, 0, 1, 0, duplicate(4, "CreateKey", first=True)]),  # two Authorization
        bytes([list_keys, 0, 1, 0, duplicate(0, "CreateKey", first=False)]),  # two Host
        bytes([list_keys, 4, 0, 0]),  # x-amz-target left out of SignedHeaders
        bytes([list_keys, 1, 0, 0]),  # a 5,000-digit Limit
        bytes([create_key, 1, 3, 0]),  # a lone surrogate in Description
        bytes([list_keys, 0, 1, 4, 0]),  # Content-Length: superscript two
        bytes([list_keys, 0, 1, 4, 1]),  # Content-Length: Arabic-Indic digit one
        bytes([list_keys, 0, 1, 5, 0]),  # Transfer-Encoding: chunked
        bytes([list_keys, 0, 1, 3, 1]),  # an unsigned X-Amz-Extra header
        bytes([list_keys, 0, 1, 7, 1]),  # a non-ASCII byte in a value
        bytes([OPERATIONS.index("DescribeKey"), 2]) + b'{"KeyId": "x", "KeyId": "y"}',
    ]


def enclave_request_seeds() -> list[bytes]:
    from enclave_runtime.wire import InferenceRequest, seal_request

    sealed = seal_request(_enclave_key().public_key(), InferenceRequest("What is 2+2?", 8))
    return [sealed.body, InferenceRequest("hello", 4).to_bytes()]


def terminal_seeds() -> list[bytes]:
    return [
        b"usr/bin/hello",
        b"\x1b[2J\x1b]0;owned\x07[link=https://evil.example]i-legit[/link]",
        b"[bold red]PASS[/] [/] \r\x9b2J \xe2\x80\xaegnp.exe \xff\xfe",
    ]


def enclave_infer_seeds() -> list[bytes]:
    from fuzz.endpoint import enclave_infer_seeds as seeds

    return seeds()


def proxy_http_seeds() -> list[bytes]:
    from fuzz.endpoint import proxy_http_seeds as seeds

    return seeds()


SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "terminal_render": terminal_seeds,
    "eif": eif_seeds,
    "eif_signature": eif_signature_seeds,
    "cpio": cpio_seeds,
    "cpio_extract": cpio_seeds,
    "decompression": decompression_seeds,
    "cbor": cbor_seeds,
    "attestation": attestation_seeds,
    "cms": cms_seeds,
    "model_file": model_seeds,
    "dsse_envelope": dsse_seeds,
    "bundle": bundle_seeds,
    "kms_request": kms_request_seeds,
    "kms_http": kms_http_seeds,
    "kms_policy": kms_policy_seeds,
    "key_policy": key_policy_seeds,
    "manifest": manifest_seeds,
    "trust_file": trust_seeds,
    "decision_log": decision_log_seeds,
    "gate_inputs": gate_inputs_seeds,
    "gpu_report": gpu_report_seeds,
    "enclave_request": enclave_request_seeds,
    "enclave_infer": enclave_infer_seeds,
    "proxy_http": proxy_http_seeds,
}
