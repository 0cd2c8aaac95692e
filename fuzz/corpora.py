"""Adversarial corpora: tampered inputs for every verifier, all of which must be rejected.

Each corpus starts from one input the verifier accepts (checked first: a corpus
whose original is refused proves nothing) and generates tampered versions: every
byte position flipped for small inputs (``stride`` > 1 samples positions for the
short CI run), structural mutations for large ones.  ``accepts`` answers whether
the verifier took the input as genuine; a project error or a negative verdict is a
rejection, any other exception propagates (it is a crash, not a rejection).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclave_audit.errors import EnclaveAuditError
from fuzz.seeds import FIXTURES, make_eif, model_bytes, signed_vsa
from fuzz.targets import FIXED_NOW, MODEL_KEY, workdir

Mutation = tuple[str, bytes]


@dataclass
class CorpusResult:
    name: str
    verifier: str
    tried: int = 0
    accepted: int = 0
    accepted_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class Corpus:
    name: str
    verifier: str
    #: (original, accepts, mutations(original, stride))
    build: Callable[
        [], tuple[bytes, Callable[[bytes], bool], Callable[[bytes, int], Iterator[Mutation]]]
    ]


def flips(
    data: bytes, stride: int = 1, *, start: int = 0, end: int | None = None
) -> Iterator[Mutation]:
    """Every byte position in [start, end) changed (one bit, rotating through all eight)."""
    stop = len(data) if end is None else end
    for i in range(start, stop, stride):
        out = bytearray(data)
        out[i] ^= 1 << (i % 8)
        yield f"flip@{i}", bytes(out)


def truncations(data: bytes, count: int = 64) -> Iterator[Mutation]:
    step = max(1, len(data) // count)
    for n in range(0, len(data), step):
        yield f"truncate@{n}", data[:n]
    yield "append", data + b"\0"
    yield "append-copy", data + data[:64]


def _rejects(call: Callable[[], object]) -> bool:
    try:
        call()
    except EnclaveAuditError:
        return False
    return True


# --- attestation documents ---


def _attestation() -> tuple[
    bytes, Callable[[bytes], bool], Callable[[bytes, int], Iterator[Mutation]]
]:
    from enclave_audit.model.findings import Verdict
    from verifier.nitro import verify_attestation

    original = (
        FIXTURES / "nitro" / "attestation" / "base-nitro-validator_2024-11-30_prod.cbor"
    ).read_bytes()

    def accepts(doc: bytes) -> bool:
        try:
            result = verify_attestation(doc, at="document", now=FIXED_NOW)
        except EnclaveAuditError:
            return False
        return bool(result.verdict is Verdict.PASS)

    def mutations(doc: bytes, stride: int) -> Iterator[Mutation]:
        yield from flips(doc, stride)
        yield from truncations(doc)

    return original, accepts, mutations


# --- VSA / key bundle ---


def _bundle_parts(raw: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


def _rebuild(bundle: dict[str, Any], **envelope: Any) -> bytes:
    out = json.loads(json.dumps(bundle))
    out["dsseEnvelope"].update(envelope)
    return json.dumps(out, separators=(",", ":")).encode()


def bundle_mutations(raw: bytes, stride: int) -> Iterator[Mutation]:
    """Byte flips of the signed payload and the signature, then structural changes."""
    bundle = _bundle_parts(raw)
    env = bundle["dsseEnvelope"]
    payload = base64.b64decode(env["payload"])
    sig = base64.b64decode(env["signatures"][0]["sig"])
    for label, tampered in flips(payload, stride):
        yield f"payload-{label}", _rebuild(bundle, payload=base64.b64encode(tampered).decode())
    for label, tampered in flips(sig, 1):
        sigs = [{**env["signatures"][0], "sig": base64.b64encode(tampered).decode()}]
        yield f"signature-{label}", _rebuild(bundle, signatures=sigs)
    statement = json.loads(payload)
    reencoded = json.dumps(statement, indent=1).encode()
    yield "payload-reserialized", _rebuild(bundle, payload=base64.b64encode(reencoded).decode())
    statement["subject"][0]["digest"]["sha256"] = "22" * 32
    yield (
        "payload-other-subject",
        _rebuild(bundle, payload=base64.b64encode(json.dumps(statement).encode()).decode()),
    )
    for payload_type in ("application/json", "application/vnd.in-toto+jsonx", ""):
        yield f"payloadType={payload_type!r}", _rebuild(bundle, payloadType=payload_type)
    yield "no-signatures", _rebuild(bundle, signatures=[])
    yield "empty-signature", _rebuild(bundle, signatures=[{"sig": ""}])
    yield (
        "signature-of-other-payload",
        _rebuild(
            bundle,
            signatures=_bundle_parts(signed_vsa({0: b"\x00" * 48}))["dsseEnvelope"]["signatures"],
        ),
    )
    from cryptography.hazmat.primitives.asymmetric import ec

    stranger = ec.generate_private_key(ec.SECP256R1())
    foreign = _bundle_parts(signed_vsa(key=stranger))
    foreign["verificationMaterial"] = bundle["verificationMaterial"]
    yield "signed-by-untrusted-key-with-trusted-hint", json.dumps(foreign).encode()
    yield "payload-not-base64", _rebuild(bundle, payload="!!" + env["payload"])
    yield from truncations(raw, 32)


def _vsa_bundle() -> tuple[
    bytes, Callable[[bytes], bool], Callable[[bytes, int], Iterator[Mutation]]
]:
    from enclave_audit.model.digests import Digest, HashAlgorithm
    from fuzz.targets import _auditor_key
    from verifier.attest.policy import KeyPolicy
    from verifier.attest.verify import verify_bundle

    policy = KeyPolicy([_auditor_key().public_key()])
    artifact = Digest(algorithm=HashAlgorithm.SHA256, value=b"\x11" * 32)

    def accepts(raw: bytes) -> bool:
        return _rejects(lambda: verify_bundle(raw, policy, artifact_digest=artifact).vsa())

    return signed_vsa(), accepts, bundle_mutations


# --- EIF signature ---


def fix_crc(data: bytes) -> bytes:
    """Recompute the EIF header CRC so that only the signature check can notice a change."""
    from builder.eif.format import HEADER_SIZE, restamp_crc

    if len(data) < HEADER_SIZE:
        return data
    out = bytearray(data)
    restamp_crc(out)
    return bytes(out)


def signed_ranges(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of the data of the measured sections and of the signature section."""
    from builder.eif import EifReader, SectionType

    path = workdir() / "corpus-eif" / "ranges.eif"
    path.write_bytes(data)
    with EifReader.open(path) as reader:
        return [
            (s.data_offset, s.end) for s in reader.sections if s.type is not SectionType.METADATA
        ]


def _eif_signature() -> tuple[
    bytes, Callable[[bytes], bool], Callable[[bytes, int], Iterator[Mutation]]
]:
    from builder.eif import describe_eif

    original = make_eif(
        workdir() / "corpus-eif", signed=True, seed=7, sizes=(300, 120, 80)
    ).read_bytes()
    path = workdir() / "corpus-eif" / "candidate.eif"
    path.write_bytes(original)
    genuine = describe_eif(path).pcrs

    def accepts(data: bytes) -> bool:
        path.write_bytes(data)
        try:
            d = describe_eif(path)
        except EnclaveAuditError:
            return False
        return bool(d.crc_ok and d.is_signed and d.signature_ok and d.pcrs == genuine)

    def mutations(data: bytes, stride: int) -> Iterator[Mutation]:
        yield from flips(data, stride)  # CRC left stale: the CRC check must catch each one
        # CRC recomputed, so only the signature and PCR checks can notice: every byte the
        # signature protects (kernel, cmdline, ramdisks, the signature section itself).
        # Header fields, section flags and the metadata section are not measured in Nitro's
        # design (PCRs cover the measured sections only), so they are not part of this set.
        for start, end in signed_ranges(data):
            for label, tampered in flips(data, stride, start=start, end=end):
                if data[int(label.split("@")[1])] == 0x0A:
                    continue  # a PEM line break: whitespace in the armour, same certificate
                yield f"{label}+crc", fix_crc(tampered)
        yield from truncations(data, 32)

    return original, accepts, mutations


# --- model file ---


def _model_file() -> tuple[
    bytes, Callable[[bytes], bool], Callable[[bytes, int], Iterator[Mutation]]
]:
    from enclave_runtime.model_format import decrypt_model, read_header

    original = model_bytes(9000, 4096)
    other = model_bytes(9001, 4096)

    def accepts(data: bytes) -> bool:
        return _rejects(lambda: decrypt_model(io.BytesIO(data), MODEL_KEY, max_plaintext=1 << 20))

    def mutations(data: bytes, stride: int) -> Iterator[Mutation]:
        yield from flips(data, stride)
        header = read_header(io.BytesIO(data))
        hl = header.header_length
        chunks = [
            data[hl + sum(_ct(header, j) for j in range(i)) :][: _ct(header, i)]
            for i in range(header.chunk_count)
        ]
        yield "chunks-reordered", data[:hl] + chunks[1] + chunks[0] + b"".join(chunks[2:])
        yield "chunk-dropped", data[:hl] + b"".join(chunks[:-1])
        yield "chunk-duplicated", data[:hl] + chunks[0] + b"".join(chunks)
        other_header = read_header(io.BytesIO(other))
        yield "header-from-other-file", other[: other_header.header_length] + data[hl:]
        yield (
            "chunk-from-other-file",
            data[:hl]
            + other[other_header.header_length :][: len(chunks[0])]
            + b"".join(chunks[1:]),
        )
        yield from truncations(data, 64)

    return original, accepts, mutations


def _ct(header: Any, index: int) -> int:
    return int(header.chunk_plain_len(index)) + 16


# --- GPU-bridge session ---


def _gpu_report() -> tuple[
    bytes, Callable[[bytes], bool], Callable[[bytes, int], Iterator[Mutation]]
]:
    from enclave_runtime.gpu_bridge.attestation import verify_report
    from fuzz.seeds import gpu_report_seeds
    from fuzz.targets import _reference_values

    def accepts(report: bytes) -> bool:
        return _rejects(
            lambda: verify_report(
                report, _reference_values(), nonce=b"n" * 32, enclave_share=b"e" * 32, now=FIXED_NOW
            )
        )

    def mutations(data: bytes, stride: int) -> Iterator[Mutation]:
        yield from flips(data, stride)
        yield from truncations(data, 32)

    return gpu_report_seeds()[0], accepts, mutations


def _gpu_channel() -> tuple[
    bytes, Callable[[bytes], bool], Callable[[bytes, int], Iterator[Mutation]]
]:
    """A sealed bridge message, serialised as JSON so that every field can be tampered with."""
    from enclave_runtime.gpu_bridge.channel import Channel, Direction, Kind, Sealed, derive_export

    export = derive_export(b"s" * 32, b"t" * 48)
    sender = Channel(export, sending=Direction.ENCLAVE_TO_DEVICE)
    sealed = sender.seal(Kind(1), b"descriptor-bytes", b"activation payload " * 8)

    def encode(s: Sealed) -> bytes:
        return json.dumps(
            {
                "direction": int(s.direction),
                "epoch": s.epoch,
                "counter": s.counter,
                "kind": int(s.kind),
                "descriptor": s.descriptor.hex(),
                "ciphertext": s.ciphertext.hex(),
            }
        ).encode()

    def accepts(raw: bytes) -> bool:
        f = json.loads(raw)
        try:
            message = Sealed(
                Direction(f["direction"]),
                f["epoch"],
                f["counter"],
                Kind(f["kind"]),
                bytes.fromhex(f["descriptor"]),
                bytes.fromhex(f["ciphertext"]),
            )
        except ValueError:
            return False  # not representable on the wire (unknown direction or kind)
        receiver = Channel(export, sending=Direction.DEVICE_TO_ENCLAVE)
        return _rejects(lambda: receiver.open(message))

    def mutations(raw: bytes, stride: int) -> Iterator[Mutation]:
        f = json.loads(raw)
        for field_name in ("descriptor", "ciphertext"):
            data = bytes.fromhex(f[field_name])
            for label, tampered in flips(data, 1):
                yield (
                    f"{field_name}-{label}",
                    json.dumps({**f, field_name: tampered.hex()}).encode(),
                )
            yield f"{field_name}-truncated", json.dumps({**f, field_name: data[:-1].hex()}).encode()
        for name, values in (
            ("direction", (0, 1, 2, 3)),
            ("epoch", (1, 2, -1)),
            ("counter", (1, 2, 2**32)),
            ("kind", (0, 2, 3, 4)),
        ):
            for value in values:
                if value != f[name]:
                    yield f"{name}={value}", json.dumps({**f, name: value}).encode()
        replay = sender.seal(Kind(1), b"descriptor-bytes", b"second message")
        yield "second-message-first (reordered)", encode(replay)

    return encode(sealed), accepts, mutations


# --- gate ---


@dataclass
class GateWorld:
    trust: Any
    candidate: Any
    artifact: Any
    keys: dict[str, Any]


def gate_world() -> GateWorld:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from enclave_audit.model.digests import Digest, HashAlgorithm
    from enclave_audit.model.measurements import PcrSet
    from fuzz.seeds import trust_text
    from reports.trust import load_trust

    folder = workdir() / "gate"
    folder.mkdir(exist_ok=True)
    keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("alice", "bob", "mallory")}
    for name, key in keys.items():
        (folder / f"{name}.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    trust_path = folder / "trust.toml"
    trust_path.write_text(trust_text({"alice": "alice.pub", "bob": "bob.pub"}))
    return GateWorld(
        load_trust(trust_path),
        PcrSet(values={0: b"\xa1" * 48, 1: b"\xb2" * 48, 2: b"\xc3" * 48}),
        Digest(algorithm=HashAlgorithm.SHA256, value=b"\x11" * 32),
        keys,
    )


def _gate() -> tuple[bytes, Callable[[bytes], bool], Callable[[bytes, int], Iterator[Mutation]]]:
    from reports.gate import evaluate_vsa

    world = gate_world()

    def accepts(raw: bytes) -> bool:
        outcome = evaluate_vsa(
            raw,
            world.trust,
            candidate=world.candidate,
            artifact=world.artifact,
            now=FIXED_NOW,
            source="tampered.vsa.json",
        )
        return bool(outcome.status == "agrees")

    def mutations(raw: bytes, stride: int) -> Iterator[Mutation]:
        yield from bundle_mutations(raw, stride)
        yield "untrusted-auditor", signed_vsa(key=world.keys["mallory"])
        yield (
            "other-pcrs",
            signed_vsa(
                {0: b"\x00" * 48, 1: b"\xb2" * 48, 2: b"\xc3" * 48}, key=world.keys["alice"]
            ),
        )
        yield (
            "missing-pcr2",
            signed_vsa({0: b"\xa1" * 48, 1: b"\xb2" * 48}, key=world.keys["alice"]),
        )

    return signed_vsa(key=world.keys["alice"]), accepts, mutations


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            "attestation", "verifier.nitro.verify_attestation (real AWS document)", _attestation
        ),
        Corpus("vsa_bundle", "verifier.attest.verify_bundle (key-signed SLSA VSA)", _vsa_bundle),
        Corpus("eif_signature", "builder.eif.describe_eif: CRC, signature, PCRs", _eif_signature),
        Corpus("model_file", "enclave_runtime.model_format.decrypt_model", _model_file),
        Corpus("gpu_report", "gpu_bridge.verify_report (device attestation)", _gpu_report),
        Corpus("gpu_channel", "gpu_bridge.Channel.open (session messages)", _gpu_channel),
        Corpus("gate", "reports.gate.evaluate_vsa (auditor agreement)", _gate),
    )
}


def run_corpus(name: str, *, stride: int = 1) -> CorpusResult:
    import time

    corpus = CORPORA[name]
    started = time.monotonic()
    original, accepts, mutations = corpus.build()
    if not accepts(original):
        raise AssertionError(f"corpus {name}: the untampered original is refused; nothing proven")
    result = CorpusResult(name, corpus.verifier)
    for label, data in mutations(original, stride):
        if data == original:
            continue
        result.tried += 1
        if accepts(data):
            result.accepted += 1
            if len(result.accepted_examples) < 10:
                result.accepted_examples.append(label)
    result.seconds = round(time.monotonic() - started, 1)
    return result


def corpus_markdown(results: list[CorpusResult], command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        "| corpus | verifier | inputs tried | accepted | seconds |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| `{r.name}` | {r.verifier} | {r.tried} | {r.accepted} | {r.seconds:g} |")
    for r in results:
        if r.accepted_examples:
            lines.append(f"\nAccepted in `{r.name}`: {', '.join(r.accepted_examples)}")
    return "\n".join(lines) + "\n"


def write_corpus_report(results: list[CorpusResult], out: Path, command: str) -> None:
    from dataclasses import asdict

    from enclave_audit.fsutil import write_json_atomic, write_text_atomic

    write_json_atomic(
        out / "corpora.json",
        {
            "schema": "enclave-audit/adversarial-corpora/v1",
            "command": command,
            "corpora": [asdict(r) for r in results],
            "total_tried": sum(r.tried for r in results),
            "total_accepted": sum(r.accepted for r in results),
        },
    )
    write_text_atomic(out / "corpora.md", corpus_markdown(results, command))
