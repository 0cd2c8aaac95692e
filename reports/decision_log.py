"""The gate's hash-chained decision log (JSON Lines).

Each entry records the digests of the gate's inputs, the auditors who agreed
and dissented, the result and the previous entry's hash; its own ``hash`` is
SHA-256 over the canonical JSON of the entry without that field.  Changing,
removing, inserting or reordering any earlier entry breaks the chain.  The log
is rewritten through a temp file and a rename, so it is never half-written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from enclave_audit.errors import DecisionLogTampered
from enclave_audit.fsutil import read_bytes, write_bytes_atomic

GENESIS = "0" * 64
SCHEMA = "enclave-audit/decision-log-entry"
SCHEMA_VERSION = 1


class DecisionEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # written as "schema" (the JSON convention); lines written before read as "schema_"
    schema_: str = Field(
        default=SCHEMA,
        serialization_alias="schema",
        validation_alias=AliasChoices("schema", "schema_"),
    )
    schema_version: int = SCHEMA_VERSION
    seq: int
    time: str
    decision: str  # "approved" | "refused"
    reason: str
    candidate_pcrs: dict[str, str]
    inputs: dict[str, str]  # name -> "sha256:<hex>"
    agreeing: list[str]
    dissenting: list[str]
    rejected: list[str]
    threshold: int
    policy_sha256: str | None
    applied: bool
    prev_hash: str
    hash: str = ""

    def body(self) -> dict[str, Any]:
        data = self.model_dump()
        data.pop("hash")
        return data


def entry_hash(entry: DecisionEntry) -> str:
    canonical = json.dumps(entry.body(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def read_log(path: Path) -> list[DecisionEntry]:
    """Read and verify the whole chain; raises DecisionLogTampered on any break."""
    if not path.exists():
        return []
    entries: list[DecisionEntry] = []
    prev = GENESIS
    for number, line in enumerate(read_bytes(path, limit=256 << 20).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = DecisionEntry.model_validate_json(line)
        except ValidationError as exc:
            raise DecisionLogTampered(
                f"decision log {path}: line {number} is not a decision entry"
                f" ({exc.errors()[0]['msg']})"
            ) from None
        if entry.seq != len(entries):
            raise DecisionLogTampered(
                f"decision log {path}: line {number} has sequence {entry.seq},"
                f" expected {len(entries)}"
            )
        if entry.prev_hash != prev:
            raise DecisionLogTampered(
                f"decision log {path}: entry {entry.seq} does not chain to the entry before it"
            )
        if entry_hash(entry) != entry.hash:
            raise DecisionLogTampered(
                f"decision log {path}: entry {entry.seq} was modified (hash mismatch)"
            )
        entries.append(entry)
        prev = entry.hash
    return entries


def append(path: Path, entry: DecisionEntry) -> DecisionEntry:
    """Verify the existing chain, then append ``entry`` chained to its last hash."""
    entries = read_log(path)
    prev = entries[-1].hash if entries else GENESIS
    chained = entry.model_copy(update={"seq": len(entries), "prev_hash": prev, "hash": ""})
    chained = chained.model_copy(update={"hash": entry_hash(chained)})
    old = read_bytes(path) if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    write_bytes_atomic(path, old + chained.model_dump_json(by_alias=True).encode() + b"\n")
    return chained
