"""The gate's decision log: signed, hash-chained entries, one DSSE envelope per line.

Each line is a DSSE envelope (``{"payload", "payloadType", "signatures"}``) whose
payload is the canonical JSON of one :class:`DecisionEntry`, signed with the gate's
key (an ECDSA P-256 or Ed25519 key from ``enclave-audit keys generate``, the keys
``attest`` signs with).  An entry's digest is the SHA-256 of its payload bytes; each
entry names the digest of the one before it (``prev_sha256``) and its own sequence
number.  Reading the log checks, for every line, in this order: strict JSON (no
duplicate keys, no NaN, bounded numbers and nesting), the envelope's shape, the
signature (by the gate's key, over DSSE's PAE), the payload's exact types (a
``"seq": "0"`` or an ``"applied": "off"`` is refused, not coerced), the sequence and
the chain.

A hash chain alone only catches edits that are not re-chained, and the signature
only catches entries the gate did not write; neither catches a log cut short or
replaced by an older copy.  That is what the *head* is for: the gate writes the
sequence number and digest of the entry that approved a policy into that policy's
``Id`` (:func:`head_id`), and before any action checks that the log holds exactly
that entry (:func:`check_head`).  Entries after the head (later refusals) are
signed and chained but can still be dropped from the tail unnoticed; the policy in
force cannot be dissociated from the decision that wrote it.

The log is rewritten through a temp file and a rename, so it is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from enclave_audit.errors import BundleMalformed, DecisionLogTampered
from enclave_audit.fsutil import read_bytes, write_bytes_atomic
from enclave_runtime import strictjson
from verifier.attest.dsse import Envelope
from verifier.attest.keys import PublicKey
from verifier.attest.signing import KeySigner
from verifier.attest.verify import signature_ok

GENESIS = "0" * 64
SCHEMA: Final = "enclave-audit/decision-log-entry"
SCHEMA_VERSION: Final = 2
PAYLOAD_TYPE = "application/vnd.enclave-audit.decision-log-entry+json"
#: the largest log read (a decision is about 1-2 KiB: over 100 000 decisions)
MAX_LOG_BYTES = 256 << 20
#: the largest single line (one envelope)
MAX_LINE_BYTES = 1 << 20
#: the prefix of the key policy ``Id`` that carries the log head
HEAD_PREFIX = "EnclaveAuditLogHead"

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Sha256Ref = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
Timestamp = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")]
Decision = Literal["approved", "refused", "applied", "apply-failed"]
_HEAD_RE = re.compile(rf"^{HEAD_PREFIX}-(0|[1-9][0-9]{{0,17}})-([0-9a-f]{{64}})$")


class DecisionEntry(BaseModel):
    """One decision, or the outcome of applying an approved one (``applies`` names it)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)

    schema_: Literal["enclave-audit/decision-log-entry"] = Field(default=SCHEMA, alias="schema")
    schema_version: Literal[2] = SCHEMA_VERSION
    seq: int
    time: Timestamp
    decision: Decision
    reason: str
    candidate_pcrs: dict[str, str]
    inputs: dict[str, str]  # name -> "sha256:<hex>" (or the image digest)
    agreeing: list[str]
    dissenting: list[str]
    rejected: list[str]
    threshold: int
    #: SHA-256 of the approved policy without its ``Id`` (which carries this entry's digest)
    policy_sha256: Hex64 | None
    #: for "applied"/"apply-failed": the sequence number of the approval carried out
    applies: int | None = None
    prev_sha256: Hex64

    def payload(self) -> bytes:
        """The exact signed bytes: canonical JSON (sorted keys, no spaces, ASCII)."""
        data = self.model_dump(by_alias=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("ascii")


@dataclass(frozen=True)
class LoggedEntry:
    """An entry as read from (or written to) the log, with its digest."""

    entry: DecisionEntry
    sha256: str
    line: bytes

    @property
    def seq(self) -> int:
        return self.entry.seq

    @property
    def decision(self) -> str:
        return self.entry.decision


def sign_entry(entry: DecisionEntry, signer: KeySigner) -> LoggedEntry:
    payload = entry.payload()
    envelope = signer.envelope(payload, PAYLOAD_TYPE)
    line = json.dumps(envelope.to_json_obj(), separators=(",", ":"), sort_keys=True).encode()
    return LoggedEntry(entry, hashlib.sha256(payload).hexdigest(), line)


def _parse_line(line: bytes, number: int, key: PublicKey, where: str) -> LoggedEntry:
    at = f"{where}: line {number}"
    if len(line) > MAX_LINE_BYTES:
        raise DecisionLogTampered(f"{at}: longer than {MAX_LINE_BYTES} bytes")
    try:
        envelope = Envelope.from_json_obj(
            strictjson.loads(line, what=at, error=DecisionLogTampered), what=at
        )
    except BundleMalformed as exc:
        raise DecisionLogTampered(f"{at}: not a signed decision entry ({exc.message})") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise DecisionLogTampered(f"{at}: payloadType is not {PAYLOAD_TYPE}")
    if len(envelope.signatures) != 1 or not signature_ok(
        key, envelope.signatures[0].sig, envelope.pae()
    ):
        raise DecisionLogTampered(f"{at}: not signed by the gate's key")
    obj = strictjson.loads_object(envelope.payload, what=f"{at} payload", error=DecisionLogTampered)
    try:
        entry = DecisionEntry.model_validate(obj, by_alias=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise DecisionLogTampered(f"{at}: {field}: {first['msg']}") from None
    if entry.payload() != envelope.payload:
        raise DecisionLogTampered(f"{at}: payload is not in canonical form")
    return LoggedEntry(entry, hashlib.sha256(envelope.payload).hexdigest(), line)


def read_log(path: Path, key: PublicKey) -> list[LoggedEntry]:
    """Read and verify the whole log; raises DecisionLogTampered on any problem."""
    if not path.exists():
        return []
    where = f"decision log {path}"
    data = read_bytes(path, limit=MAX_LOG_BYTES)
    if data and not data.endswith(b"\n"):
        raise DecisionLogTampered(f"{where}: the last line is incomplete")
    entries: list[LoggedEntry] = []
    prev = GENESIS
    for number, line in enumerate(data.split(b"\n")[:-1] if data else [], start=1):
        logged = _parse_line(line, number, key, where)
        entry = logged.entry
        if entry.seq != len(entries):
            raise DecisionLogTampered(
                f"{where}: line {number} has sequence {entry.seq}, expected {len(entries)}"
            )
        if entry.prev_sha256 != prev:
            raise DecisionLogTampered(
                f"{where}: entry {entry.seq} does not chain to the entry before it"
            )
        if entry.applies is not None:
            target = entries[entry.applies] if 0 <= entry.applies < len(entries) else None
            if target is None or target.decision != "approved":
                raise DecisionLogTampered(
                    f"{where}: entry {entry.seq} applies {entry.applies}, not an earlier approval"
                )
        if (entry.applies is None) != (entry.decision in ("approved", "refused")):
            raise DecisionLogTampered(f"{where}: entry {entry.seq}: decision and applies disagree")
        entries.append(logged)
        prev = logged.sha256
    return entries


def next_entry(entries: list[LoggedEntry], entry: DecisionEntry, signer: KeySigner) -> LoggedEntry:
    """``entry`` chained after ``entries`` and signed (not yet written)."""
    prev = entries[-1].sha256 if entries else GENESIS
    return sign_entry(entry.model_copy(update={"seq": len(entries), "prev_sha256": prev}), signer)


def append(path: Path, logged: LoggedEntry, key: PublicKey) -> None:
    """Write ``logged`` after the log's last entry (re-verified now; the chain must fit)."""
    entries = read_log(path, key)
    expected_prev = entries[-1].sha256 if entries else GENESIS
    if logged.seq != len(entries) or logged.entry.prev_sha256 != expected_prev:
        raise DecisionLogTampered(
            f"decision log {path}: changed while the gate ran (entry {logged.seq} no longer fits)"
        )
    old = read_bytes(path, limit=MAX_LOG_BYTES) if path.exists() else b""
    write_bytes_atomic(path, old + logged.line + b"\n")


# --- the head, kept in the key policy ------------------------------------------------------


def policy_sha256(policy: dict[str, Any]) -> str:
    """Digest of a policy without its ``Id`` (the Id carries the approving entry's digest)."""
    body = {k: v for k, v in policy.items() if k != "Id"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
    ).hexdigest()


def head_id(logged: LoggedEntry) -> str:
    """The key policy ``Id`` naming ``logged`` as the log head the policy was written at."""
    return f"{HEAD_PREFIX}-{logged.seq}-{logged.sha256}"


@dataclass(frozen=True)
class Head:
    seq: int
    sha256: str


def parse_head(policy: dict[str, Any]) -> Head | None:
    """The head a policy carries; None when its Id is not one of ours (a policy the gate
    never wrote). DecisionLogTampered when it looks like ours but is malformed."""
    value = policy.get("Id")
    if not isinstance(value, str) or not value.startswith(HEAD_PREFIX):
        return None
    match = _HEAD_RE.match(value)
    if match is None:
        raise DecisionLogTampered(f"key policy Id {value[:100]!r} is not a valid log head")
    return Head(int(match.group(1)), match.group(2))


def check_head(policy: dict[str, Any], entries: list[LoggedEntry], *, where: str) -> Head | None:
    """The log must hold the entry the current policy was written at (else: cut or replaced)."""
    head = parse_head(policy)
    if head is None:
        return None
    if head.seq >= len(entries):
        raise DecisionLogTampered(
            f"{where}: the key policy was written at decision {head.seq}, but the log holds "
            f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}: it was truncated or "
            "replaced by an older copy"
        )
    entry = entries[head.seq]
    if entry.sha256 != head.sha256:
        raise DecisionLogTampered(
            f"{where}: entry {head.seq} is not the decision the key policy was written at "
            f"(digest {entry.sha256[:16]}..., the policy names {head.sha256[:16]}...): the log "
            "was replaced"
        )
    if entry.decision != "approved":
        raise DecisionLogTampered(
            f"{where}: the key policy names entry {head.seq}, which is not an approval"
        )
    return head
