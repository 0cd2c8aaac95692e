"""One fuzz target per parser of untrusted bytes.

A target takes arbitrary bytes and drives the project's own entry point for that
format the way the CLI or a service would.  The contract under test: the only
exceptions that may come out are :class:`enclave_audit.errors.EnclaveAuditError`
subclasses (the harness treats anything else as a crash), every input finishes
within :data:`INPUT_TIME_LIMIT` seconds and the process stays under
:data:`RSS_LIMIT_MB`.

Size limits the parsers enforce (the fuzzers check they hold):
attestation documents 32 KiB (``verifier.nitro.document.MAX_DOCUMENT_BYTES``), CMS
64 KiB (``enclave_runtime.cms.MAX_CMS_SIZE``), model-file header 64 KiB and the
plaintext limit the caller passes (``max_plaintext``), KMS request bodies 1 MiB,
key policies 32 KiB, bundles 16 MiB, GPU-bridge reports and frames 1 MiB.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import io
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: one input may take at most this long (libFuzzer ``-timeout`` and the hypothesis tests)
INPUT_TIME_LIMIT = 10
#: the fuzzing process may not grow past this (libFuzzer ``-rss_limit_mb``)
RSS_LIMIT_MB = 2048
#: the largest input the fuzzers generate
MAX_LEN = 64 << 10

#: fixed instants so that verification results do not depend on the wall clock
FIXED_NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
MODEL_KEY = bytes(range(32))


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    run: Callable[[bytes], None]


@functools.cache
def workdir() -> Path:
    """A private scratch directory for targets whose parser reads a path."""
    path = Path(tempfile.mkdtemp(prefix="enclave-audit-fuzz-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _each(call: Callable[[], object]) -> None:
    """Run one stage of a target; a project error there still lets the next stage run."""
    from enclave_audit.errors import EnclaveAuditError

    try:
        call()
    except EnclaveAuditError:
        pass


def _as_file(name: str, data: bytes) -> Path:
    path = workdir() / name
    path.write_bytes(data)
    return path


# --- EIF ---


def eif(data: bytes) -> None:
    from builder.eif import EifReader, describe_eif

    path = _as_file("fuzz.eif", data)
    with EifReader.open(path) as reader:
        reader.cmdline_text()
        reader.metadata()
        signature = reader.signature
        if signature is not None:
            reader.read(signature)
    describe_eif(path)


def eif_signature(data: bytes) -> None:
    from builder.eif import parse_signature_section

    info = parse_signature_section(data)
    info.covers(b"\0" * 48)
    info.describe_certificate()


# --- cpio ---


def cpio(data: bytes) -> None:
    from builder.initramfs import iter_members

    for member in iter_members(io.BytesIO(data)):
        if member.is_file and member.data is not None:
            member.data.read()


def cpio_extract(data: bytes) -> None:
    from builder.initramfs import extract

    src = _as_file("fuzz.cpio", data)
    dest = workdir() / "extract" / "root"
    shutil.rmtree(dest.parent, ignore_errors=True)
    dest.mkdir(parents=True)
    before = set(os.listdir(workdir()))
    try:
        extract(src, dest)
    finally:
        _assert_contained(dest, before)
        shutil.rmtree(dest.parent, ignore_errors=True)


#: small budgets for the decompression target: any input must stay inside them
FUZZ_DECOMPRESSED = 8 << 20
FUZZ_MEMORY = 1 << 20


def decompression(data: bytes) -> None:
    """Untrusted bytes through the readers that decompress: the kernel-view initramfs
    reader and ``diff`` (gzip, xz, zip, tar, cpio, ELF...) against a one-byte variant,
    with small budgets.  Past a budget, the result must be reported (INCONCLUSIVE) and
    the work must stop within one buffer of it."""
    from builder.initramfs.unpack import iter_initramfs
    from enclave_audit.limits import MIB, ByteBudget, Limits
    from verifier.compare import compare_paths

    budget = ByteBudget(FUZZ_DECOMPRESSED, "decompressed bytes", "--max-decompressed")
    try:
        for item in iter_initramfs(io.BytesIO(data), budget=budget):
            if item.member.data is not None:
                item.member.data.read()
    finally:
        if budget.used > FUZZ_DECOMPRESSED + 2 * MIB:
            raise AssertionError(f"initramfs reader decompressed {budget.used} bytes")
    a = _as_file("budget-a", data)
    b = _as_file("budget-b", data[:-1] + bytes([data[-1] ^ 1]) if data else b"\x00")
    report = compare_paths(a, b, limits=Limits(decompressed=FUZZ_DECOMPRESSED, memory=FUZZ_MEMORY))
    used = report.stats.bytes_decompressed
    if used > FUZZ_DECOMPRESSED + 2 * MIB:
        raise AssertionError(f"diff decompressed {used} bytes")
    if report.stats.limits_reached and report.verdict != "INCONCLUSIVE":
        raise AssertionError("a budget was hit but the diff is not INCONCLUSIVE")


def _assert_contained(dest: Path, before: set[str]) -> None:
    """Nothing an archive extracts may land outside ``dest`` (checked after each input)."""
    if set(os.listdir(workdir())) != before or os.listdir(dest.parent) != ["root"]:
        raise AssertionError("cpio extract wrote outside its destination")


# --- attestation documents (CBOR / COSE) ---


def cbor(data: bytes) -> None:
    from enclave_runtime.cbor import loads

    loads(data, what="fuzz input")


def attestation(data: bytes) -> None:
    from verifier.nitro import parse_attestation, unwrap_transport, verify_attestation

    raw = unwrap_transport(data)
    _each(lambda: parse_attestation(raw))
    verify_attestation(raw, at="document", now=FIXED_NOW)


# --- CMS EnvelopedData ---


@functools.cache
def _rsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def cms(data: bytes) -> None:
    from enclave_runtime.cms import open_enveloped_data, parse_enveloped_data

    _each(lambda: parse_enveloped_data(data))
    open_enveloped_data(data, _rsa_key())


# --- the chunked model format ---


def model_file(data: bytes) -> None:
    from enclave_runtime.model_format import decrypt_model, read_header

    _each(lambda: read_header(io.BytesIO(data)))
    decrypt_model(io.BytesIO(data), MODEL_KEY, max_plaintext=1 << 20)


# --- DSSE envelopes and Sigstore bundles ---


@functools.cache
def _auditor_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def dsse_envelope(data: bytes) -> None:
    from verifier.attest.dsse import Envelope

    envelope = Envelope.from_bytes(data)
    envelope.pae()
    envelope.to_bytes()


def bundle(data: bytes) -> None:
    from verifier.attest.dsse import parse_bundle
    from verifier.attest.policy import KeyPolicy
    from verifier.attest.verify import verify_bundle

    _each(lambda: parse_bundle(data))
    policy = KeyPolicy([_auditor_key().public_key()])
    verify_bundle(data, policy, artifact_digest=None)


# --- KMS: JSON requests and key policies ---


@dataclass(frozen=True)
class _Kms:
    service: Any
    admin: Any
    key_id: str


@functools.cache
def _kms() -> _Kms:
    from reference_enclave.kms import Credential
    from reference_enclave.kms.config import KmsConfig
    from reference_enclave.kms.recipient import RecipientVerifier
    from reference_enclave.kms.service import AuditNote, KmsService
    from reference_enclave.kms.store import KeyStore
    from reference_enclave.nsm.sim_ca import SimulationCa
    from verifier.nitro import TrustRoot

    admin = Credential(
        access_key_id="AKIAFUZZADMIN0000001",
        secret_access_key="fuzz-secret-" + "f" * 30,
        principal="arn:aws:iam::111122223333:user/admin",
    )
    root = TrustRoot.from_pem(SimulationCa.create().root_pem(), name="fuzz simulation root")
    store = KeyStore(workdir() / "kms.db")
    verifier = RecipientVerifier([root], max_age_seconds=300, allow_debug=False, clock=time.time)
    service = KmsService(store, KmsConfig(credentials=(admin,)), verifier)
    key_id = service.call("CreateKey", {}, admin, AuditNote())["KeyMetadata"]["KeyId"]
    return _Kms(service, admin, str(key_id))


KMS_OPERATIONS = (
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateRandom",
    "DescribeKey",
    "ListKeys",
    "GetKeyPolicy",
    "PutKeyPolicy",
    "CreateKey",
)


def kms_request(data: bytes) -> None:
    """The server's path for a request body: JSON decode, object check, dispatch."""
    from reference_enclave.kms.errors import KmsApiError
    from reference_enclave.kms.service import AuditNote

    if not data:
        return
    kms = _kms()
    operation = KMS_OPERATIONS[data[0] % len(KMS_OPERATIONS)]
    body = data[1:]
    from enclave_runtime import strictjson

    try:  # exactly the server's decoding (refusals are SerializationException answers)
        params = strictjson.loads_object(
            body or b"{}", what="request body", error=KmsApiError.bad_json
        )
    except KmsApiError:
        return
    if isinstance(params.get("KeyId"), str) and params["KeyId"] == "$key":
        params["KeyId"] = kms.key_id
    try:
        kms.service.call(operation, params, kms.admin, AuditNote())
    except KmsApiError as exc:
        if exc.status >= 500:
            raise AssertionError(
                f"KMS answered {exc.status} {exc.code}: {exc.api_message}"
            ) from exc
        raise


@dataclass(frozen=True)
class _KmsServer:
    running: Any
    address: tuple[str, int]
    host: str
    key_id: str
    admin: Any


@functools.cache
def _kms_server() -> _KmsServer:
    from reference_enclave.kms import Credential, kms_client, start_kms

    admin = Credential(
        access_key_id="AKIAFUZZHTTP00000001",
        secret_access_key="fuzz-http-secret-" + "h" * 24,
        principal="arn:aws:iam::111122223333:user/admin",
    )
    running = start_kms(workdir() / "kms-http.db", credentials=[admin])
    atexit.register(running.stop)
    host, port = running.server.server_address[:2]
    client = kms_client(running.url, admin.access_key_id, admin.secret_access_key)
    key_id = str(client.create_key()["KeyMetadata"]["KeyId"])
    return _KmsServer(running, (str(host), int(port)), f"{host}:{port}", key_id, admin)


def kms_http(data: bytes) -> None:
    """Signed requests, mutated at the HTTP layer, sent to a running KMS over a socket.

    Properties: every request gets an HTTP answer (never a dropped connection),
    never a 5xx, and nothing succeeds but the operation the signer meant: the audit
    event of a 200 names that operation, and no key appears unless it was CreateKey.
    """
    from fuzz.kms_http import mutated_request, send

    kms = _kms_server()
    request = mutated_request(
        data,
        kms.host,
        access_key=kms.admin.access_key_id,
        secret=kms.admin.secret_access_key,
        key_id=kms.key_id,
    )
    store = kms.running.store
    keys_before = len(store.list_ids(after=None, limit=100_000))
    reply = send(kms.address, request.data)
    if reply.status >= 500:
        raise AssertionError(f"KMS answered {reply.status}: {reply.body[:200]!r}")
    if reply.status != 200 and "__type" not in reply.json():
        raise AssertionError(f"KMS error without __type: {reply.body[:200]!r}")
    keys_after = len(store.list_ids(after=None, limit=100_000))
    if reply.status == 200:
        event = store.events(limit=1)[-1]
        if event["eventName"] != request.operation or event["errorCode"] is not None:
            raise AssertionError(f"signed as {request.operation}, executed as {event['eventName']}")
    if keys_after != keys_before and not (reply.status == 200 and request.operation == "CreateKey"):
        raise AssertionError(f"a key was created by a request signed as {request.operation}")


def kms_policy(data: bytes) -> None:
    from reference_enclave.kms.policy import RequestContext, evaluate, parse_policy

    text = data.decode("utf-8", "replace")
    policy = parse_policy(text)
    ctx = RequestContext(
        principal="arn:aws:sts::111122223333:assumed-role/enclave-instance-role/i-0123",
        account="111122223333",
        action="kms:Decrypt",
        resource="arn:aws:kms:us-east-1:111122223333:key/k",
        keys={"kms:recipientattestation:imagesha384": ("a1" * 48,)},
    )
    evaluate(policy, ctx)


def key_policy(data: bytes) -> None:
    from reports.key_policy import KeyPolicy, allowed_images

    policy = KeyPolicy.parse(data, source="fuzz key policy")
    allowed_images(policy)
    # what the gate writes back must parse to the same policy
    again = KeyPolicy.parse(policy.to_json(), source="fuzz key policy (written back)")
    if again != policy:
        raise AssertionError("key policy does not survive its own round trip")


# --- build manifests, trust files, the decision log ---


def manifest(data: bytes) -> None:
    from enclave_audit.model.manifest import BuildManifest

    BuildManifest.load(_as_file("build-manifest.json", data))


def trust_file(data: bytes) -> None:
    from reports.trust import load_trust

    load_trust(_as_file("trust.toml", data))


def decision_log(data: bytes) -> None:
    from fuzz.gate_scene import scene
    from reports.decision_log import read_log

    read_log(_as_file("decisions.jsonl", data), scene().keys["gate"].public_key())


def gate_inputs(data: bytes) -> None:
    from fuzz.gate_scene import run

    run(data)


# --- GPU bridge and the enclave endpoint ---


@functools.cache
def _reference_values() -> Any:
    from enclave_runtime.gpu_bridge.client import load_reference_values

    return load_reference_values()


def gpu_report(data: bytes) -> None:
    from enclave_runtime.gpu_bridge.attestation import verify_report

    verify_report(
        data,
        _reference_values(),
        nonce=b"n" * 32,
        enclave_share=b"e" * 32,
        now=FIXED_NOW,
    )


@functools.cache
def _enclave_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(bytes(range(32)))


def enclave_request(data: bytes) -> None:
    from enclave_runtime.wire import InferenceRequest, open_request

    _each(lambda: InferenceRequest.from_bytes(data))
    open_request(_enclave_key(), data)


#: what a terminal may receive from the CLI besides text: SGR colour/style codes only
_SGR = re.compile(r"\x1b\[[0-9;]*m")
_TERMINAL_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]"
)


def render_untrusted(text: str) -> str:
    """``text`` through every rendering path of the CLI, as on a colour terminal.

    The console (plain strings, a table cell, styled text), the diff tree and headlines
    with ``text`` as a member name, symlink target, summary and note, the progress bar
    and the stage lines with ``text`` as a stage description, and the error line.
    """
    from rich.table import Table

    from enclave_audit.model.difference import (
        Cause,
        CauseHint,
        Change,
        DiffNode,
        DiffReport,
        DiffStats,
        NodeKind,
        Side,
    )
    from enclave_audit.output import make_console, styled, visible
    from enclave_audit.progress import RichProgress, StageLines
    from verifier.compare.render import render_text

    buffer = io.StringIO()
    console = make_console(
        file=buffer, force_terminal=True, no_color=False, color_system="standard", width=80
    )
    console.print(text)
    console.print(styled(("PASS", "bold green"), " " + text))
    table = Table("key", "value")
    table.add_row(text, text)
    console.print(table)
    leaf = DiffNode(
        path=("a vs b", text, text),
        kind=NodeKind.MEMBER,
        change=Change.CONTENT,
        left=Side.of(value=text),
        right=Side.of(value="->" + text),
        summary=text,
        unified_diff=f"--- a/{text}\n+++ b/{text}\n-{text}\n+x",
        notes=(text,),
        causes=(CauseHint(cause=Cause.UNKNOWN, evidence=text),),
        pcrs=(2,),
    )
    root = DiffNode(
        path=("a vs b",),
        kind=NodeKind.IMAGE,
        change=Change.CONTENT,
        left=None,
        right=None,
        summary=text,
        pcrs=(2,),
        children=(leaf,),
    )
    report = DiffReport(
        left=text,
        right=text,
        identical=False,
        root=root,
        stats=DiffStats(nodes=2, truncated=False, bytes_compared=1, seconds=0.0),
    )
    render_text(report, console)
    lines = StageLines(buffer)
    lines.start(text, 10)
    lines.done()
    bar = RichProgress(force=True)
    bar.start(text, 10)  # the bar's rows, as its live display draws them
    bar.advance(5)
    if bar._bar is not None:
        console.print(bar._bar.get_renderable())
    bar.done()
    buffer.write("error: " + visible(text) + "\n")
    return buffer.getvalue()


def terminal_unsafe(output: str) -> str | None:
    """The first character a terminal would act on (besides SGR styles), if any."""
    if "\x1b]8;" in output:
        return "OSC 8 hyperlink"
    found = _TERMINAL_UNSAFE.search(_SGR.sub("", output))
    return None if found is None else repr(found.group(0))


def terminal_render(data: bytes) -> None:
    """Untrusted text through the CLI's rendering layer: nothing reaches a terminal raw."""
    text = data.decode("utf-8", "surrogateescape")
    output = render_untrusted(text)
    problem = terminal_unsafe(output)
    if problem is not None:
        raise AssertionError(f"unsafe {problem} reached the terminal for input {text!r}")


def enclave_infer(data: bytes) -> None:
    from fuzz.endpoint import enclave_infer as run

    run(data)


def proxy_http(data: bytes) -> None:
    from fuzz.endpoint import proxy_http as run

    run(data)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("eif", "EIF image (reader, metadata, describe: CRC, PCRs, signature)", eif),
        Target("eif_signature", "EIF signature section (CBOR/COSE, certificate)", eif_signature),
        Target("cpio", "newc cpio ramdisk (streaming reader)", cpio),
        Target("cpio_extract", "newc cpio extraction (path containment)", cpio_extract),
        Target(
            "decompression",
            "initramfs reader and diff on compressed input (budgets hold)",
            decompression,
        ),
        Target("cbor", "strict CBOR decoder of attestation documents", cbor),
        Target("attestation", "Nitro attestation document (COSE_Sign1, chain)", attestation),
        Target("cms", "CMS EnvelopedData (KMS CiphertextForRecipient)", cms),
        Target("model_file", "chunked encrypted model format (CIMF)", model_file),
        Target("dsse_envelope", "DSSE envelope JSON", dsse_envelope),
        Target("bundle", "Sigstore / key bundle (parse and verify)", bundle),
        Target("kms_request", "reference KMS JSON request bodies", kms_request),
        Target(
            "kms_http",
            "reference KMS over HTTP: signed requests mutated (headers, framing, JSON)",
            kms_http,
        ),
        Target("kms_policy", "KMS key policy (parse and evaluate)", kms_policy),
        Target("key_policy", "gate key policy (parse, validate, allowed images)", key_policy),
        Target("manifest", "build manifest JSON", manifest),
        Target("trust_file", "gate trust file (TOML)", trust_file),
        Target("decision_log", "gate decision log (signed entries, chain)", decision_log),
        Target(
            "gate_inputs",
            "the gate end to end: log, VSAs, policy, measurements (order of effects)",
            gate_inputs,
        ),
        Target("gpu_report", "GPU-bridge accelerator report (CBOR, ES384)", gpu_report),
        Target("enclave_request", "enclave endpoint sealed request (JSON, HPKE)", enclave_request),
        Target("terminal_render", "untrusted text through the CLI's rendering", terminal_render),
        Target(
            "enclave_infer",
            "enclave request path: strict JSON, HPKE, replay cache, budget, tiny model",
            enclave_infer,
        ),
        Target(
            "proxy_http",
            "host proxy client channel over a socket: framing, deadlines, whole requests",
            proxy_http,
        ),
    )
}


def allowed_error() -> type[BaseException]:
    from enclave_audit.errors import EnclaveAuditError

    return EnclaveAuditError


def run_one(target: Target, data: bytes) -> None:
    """Run ``target`` on ``data``; project errors are the expected outcome of bad input."""
    try:
        target.run(data)
    except allowed_error():
        pass


def environment() -> dict[str, str]:
    """Variables the fuzzing subprocesses need (quiet, deterministic hashing off)."""
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    return env
