"""``enclave-audit client ask``: the attested, encrypted question."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from builder.eif.pcr import tpm_extend
from enclave_audit.errors import (
    AttestationMalformed,
    AttestationUnsigned,
    EnclaveRefused,
    InvalidInput,
    ProtocolError,
    ServiceUnavailable,
)
from enclave_audit.fsutil import read_bytes, read_json
from enclave_audit.model.attestation_doc import AttestationResult
from enclave_audit.model.findings import Verdict
from enclave_audit.model.measurements import PcrSet
from enclave_runtime import hpke, wire
from enclave_runtime.config import MODEL_PCR

ASK_SCHEMA = "enclave-audit/client-answer/v1"
DEFAULT_MAX_AGE = dt.timedelta(minutes=5)
_MAX_RESPONSE = 4 << 20


@dataclass(frozen=True)
class Expectation:
    """What the enclave must measure: image PCRs and the model's PCR16."""

    pcrs: PcrSet
    source: str

    def __post_init__(self) -> None:
        if MODEL_PCR not in self.pcrs.values:
            raise InvalidInput(
                f"{self.source}: the expectation names no model (PCR{MODEL_PCR}); "
                "the client refuses to trust an enclave without knowing which model it serves"
            )
        if 0 not in self.pcrs.values:
            raise InvalidInput(f"{self.source}: the expectation names no image (PCR0)")


def _is_bundle(data: object) -> bool:
    return isinstance(data, dict) and any(
        k in data for k in ("payloadType", "dsseEnvelope", "mediaType", "envelope")
    )


def load_expectation(
    path: Path,
    *,
    vsa_keys: list[Path] | None = None,
    verifier_id: str | None = None,
    model_sha256: bytes | None = None,
) -> Expectation:
    """Measurements JSON (nitro-cli ``Measurements``, describe-eif, ``{"pcrs": ...}``) or a VSA.

    A signed SLSA VSA (a bundle) is verified with ``vsa_keys`` first: signature,
    statement, verifier id, ``PASSED``; its certified PCR0-2 become the expectation
    and PCR16 is derived from ``model_sha256`` (a VSA is about the image, not the model).
    """
    data = read_json(path)
    if not _is_bundle(data):
        return Expectation(PcrSet.from_nitro_json(data, source=str(path)), str(path))
    if not vsa_keys or model_sha256 is None:
        raise InvalidInput(
            f"{path}: a signed VSA needs --vsa-key (who may sign it) and --model-sha256"
        )
    from enclave_audit.model.attestation import DEFAULT_VERIFIER_ID, VSA_V1
    from verifier.attest.keys import load_public_key
    from verifier.attest.policy import KeyPolicy
    from verifier.attest.verify import check_vsa, verify_bundle

    verified = verify_bundle(
        read_bytes(path),
        KeyPolicy([load_public_key(k) for k in vsa_keys]),
        artifact_digest=None,  # the client has no EIF: the certified PCRs are the binding
        predicate_type=VSA_V1,
        source=str(path),
    )
    vsa = check_vsa(verified, verifier_id=verifier_id or DEFAULT_VERIFIER_ID)
    certified = vsa.pcrs()
    if certified is None or any(certified.get(i) is None for i in (0, 1, 2)):
        raise InvalidInput(f"{path}: the VSA certifies no PCR0-2 for the image")
    values = {i: v for i, v in certified.values.items() if i != MODEL_PCR}
    values[MODEL_PCR] = tpm_extend(model_sha256)
    return Expectation(PcrSet(values=values), f"{path} (verified VSA)")


class AskResult(BaseModel):
    """The decrypted answer and what was verified before asking."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: str = Field(default=ASK_SCHEMA, alias="schema")
    answer: str
    tokens: int
    prompt_tokens: int
    stop_reason: str
    module_id: str
    root_name: str | None
    root_sha256: str | None
    verified_pcrs: dict[str, str]
    nonce: str
    attestation_seconds: float
    round_trip_seconds: float
    enclave_prefill_seconds: float
    enclave_decode_seconds: float


class _Endpoint:
    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise InvalidInput(f"endpoint {url!r}: expected http://HOST:PORT")
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self.url = url

    def call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read(_MAX_RESPONSE + 1)
            declared = resp.getheader("Content-Length", "")
            if declared.isdigit() and len(data) < int(declared) <= _MAX_RESPONSE:
                # read(amt) returns a short body when the peer closes early: a cut, not an answer
                raise ServiceUnavailable(
                    f"enclave endpoint {self.url}{path}: connection closed after "
                    f"{len(data)} of {declared} bytes"
                )
        except (OSError, http.client.HTTPException) as exc:
            raise ServiceUnavailable(f"enclave endpoint {self.url}: {exc}") from None
        finally:
            conn.close()
        if len(data) > _MAX_RESPONSE:
            raise ProtocolError(f"enclave endpoint {self.url}: response too large")
        if resp.status != 200:
            reason = _reason(data)
            where = f"enclave endpoint {self.url}{path}: HTTP {resp.status}{reason}"
            if resp.status in (429, 503):  # busy, over a limit: an outage, try again later
                raise ServiceUnavailable(where)
            if resp.status == 413:
                raise InvalidInput(where)
            raise ProtocolError(where)
        return data


def _reason(body: bytes) -> str:
    """``: <reason>`` from an ``{"error": ...}`` body, printable and short, else empty."""
    try:
        obj = wire.json_object(body[:4096], "error body")
    except ProtocolError:
        return ""
    text = obj.get("error")
    if not isinstance(text, str):
        return ""
    shown = "".join(ch if ch.isprintable() else "?" for ch in text[:200])
    return f": {shown}"


def verify_enclave_document(
    document: bytes,
    *,
    expectation: Expectation,
    roots: list[object],
    nonce: bytes,
    now: dt.datetime,
    max_age: dt.timedelta = DEFAULT_MAX_AGE,
) -> tuple[X25519PublicKey, AttestationResult]:
    """Everything the client checks before it sends a byte; :class:`EnclaveRefused` if not."""
    from verifier.nitro import verify_attestation

    try:
        result = verify_attestation(
            document,
            roots=roots,  # type: ignore[arg-type]
            expected_pcrs=expectation.pcrs,
            nonce=nonce,
            max_age=max_age,
            allow_debug=False,
            now=now,
        )
    except (AttestationMalformed, AttestationUnsigned) as exc:
        raise EnclaveRefused(f"enclave refused: {exc.message}") from None
    if result.verdict is not Verdict.PASS:
        failed = result.failed() or result.not_run()
        reasons = "; ".join(f"{c.name}: {c.detail}" for c in failed[:3]) or "verdict not PASS"
        raise EnclaveRefused(f"enclave refused ({result.verdict.value}): {reasons}")
    for index, value in expectation.pcrs.values.items():
        # belt and braces: every expected PCR, PCR16 included, is in the signed document
        if result.pcrs.get(index) != value:
            raise EnclaveRefused(f"enclave refused: PCR{index} is not the expected value")
    if result.user_data != wire.HPKE_KEY_PURPOSE:
        raise EnclaveRefused(
            "enclave refused: the attested key is not an HPKE key of this protocol"
        )
    if result.public_key is None or len(result.public_key) != 32:
        raise EnclaveRefused("enclave refused: the document carries no X25519 public key")
    return hpke.public_key_from_bytes(bytes(result.public_key)), result


def ask(
    endpoint: str,
    prompt: str,
    *,
    expectation: Expectation,
    roots: list[object] | None = None,
    max_tokens: int = 48,
    max_age: dt.timedelta = DEFAULT_MAX_AGE,
    timeout: float = 300.0,
    now: dt.datetime | None = None,
) -> AskResult:
    """Attest, encrypt, ask, decrypt. ``roots`` default to the pinned AWS root."""
    from verifier.nitro import default_roots

    request = wire.InferenceRequest(prompt, max_tokens)  # validated before anything is sent
    if not prompt or len(prompt) > wire.MAX_PROMPT_CHARS:
        raise InvalidInput(f"prompt must be 1..{wire.MAX_PROMPT_CHARS} characters")
    if not 1 <= max_tokens <= wire.MAX_TOKENS_LIMIT:
        raise InvalidInput(f"max tokens must be 1..{wire.MAX_TOKENS_LIMIT}")
    ep = _Endpoint(endpoint, timeout)
    nonce = secrets.token_bytes(32)
    t0 = time.perf_counter()
    body = ep.call("GET", f"/v1/attestation?nonce={nonce.hex()}")
    obj = wire.json_object(body, "attestation response")
    document = wire.b64d(obj.get("document"), "attestation document")
    public_key, result = verify_enclave_document(
        document,
        expectation=expectation,
        roots=list(roots) if roots is not None else list(default_roots()),
        nonce=nonce,
        now=now or dt.datetime.now(dt.UTC),
        max_age=max_age,
    )
    t1 = time.perf_counter()
    sealed = wire.seal_request(public_key, request)
    answer_body = ep.call("POST", "/v1/infer", sealed.body)
    envelope = wire.parse_answer(answer_body)  # malformed on the way: ProtocolError
    try:  # the enclave's authenticated answer: any problem with it is a trust failure
        answer = wire.open_answer(sealed, envelope)
    except ProtocolError as exc:
        raise EnclaveRefused(f"enclave answer refused: {exc.message}") from None
    t2 = time.perf_counter()
    return AskResult(
        answer=answer.text,
        tokens=answer.tokens,
        prompt_tokens=answer.prompt_tokens,
        stop_reason=answer.stop_reason,
        module_id=result.module_id,
        root_name=result.root_name,
        root_sha256=result.root_sha256,
        verified_pcrs={f"PCR{i}": v.hex() for i, v in sorted(expectation.pcrs.values.items())},
        nonce=nonce.hex(),
        attestation_seconds=round(t1 - t0, 4),
        round_trip_seconds=round(t2 - t1, 4),
        enclave_prefill_seconds=round(answer.prefill_seconds, 4),
        enclave_decode_seconds=round(answer.decode_seconds, 4),
    )


def load_roots(paths: list[Path]) -> list[object]:
    """Trust roots from PEM files (e.g. the simulation CA's root.pem)."""
    from verifier.nitro import TrustRoot

    return [TrustRoot.from_pem(read_bytes(p), name=f"{p}") for p in paths]


def expectation_json(pcrs: PcrSet) -> str:
    return json.dumps({"Measurements": pcrs.to_nitro()}, indent=2)
