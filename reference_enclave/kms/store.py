"""Persistent key store: one SQLite database (WAL journal, every write one transaction).

Tables: ``meta`` (schema version), ``keys`` (id, ARN, metadata, 32-byte AES-256 key
material, policy JSON text) and ``events`` (a CloudTrail-like JSON line per request).
Key and policy writes are fsynced before the call returns (``synchronous=FULL``); audit
events are committed atomically but fsynced lazily (``synchronous=NORMAL`` in WAL mode:
never corrupt, at most the last few events lost on power failure, like CloudTrail's
asynchronous delivery).
The database file is created with mode 0600: it holds key material in the clear, as
an HSM's backing store would inside its boundary.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave_audit.errors import InvalidInput, OutputError
from reference_enclave.kms.errors import KmsApiError

SCHEMA_VERSION = 1
KEY_MATERIAL_BYTES = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    arn TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    region TEXT NOT NULL,
    created REAL NOT NULL,
    description TEXT NOT NULL,
    enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    material BLOB NOT NULL CHECK (length(material) = 32),
    policy TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES keys (key_id),
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deletions (
    key_id TEXT PRIMARY KEY REFERENCES keys (key_id),
    deletion_date REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    event TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    arn: str
    account: str
    region: str
    created: float
    description: str
    enabled: bool
    material: bytes
    policy: str


@contextlib.contextmanager
def _db_errors(path: Path) -> Iterator[None]:
    """SQLite failures at run time become the KMS's internal error (HTTP 500)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise KmsApiError(
            "KMSInternalException", f"key store {path.name}: {exc}", status=500
        ) from None


class KeyStore:
    """Thread-safe access to the database through one connection and a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
                os.close(fd)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10
            )
        except (OSError, sqlite3.Error) as exc:
            raise OutputError(f"{self.path}: cannot open the KMS database: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._transaction() as db:
                for statement in _SCHEMA.strip().split(";"):
                    if statement.strip():
                        db.execute(statement)
                row = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO meta (name, value) VALUES ('schema', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                elif row[0] != str(SCHEMA_VERSION):
                    raise InvalidInput(
                        f"{self.path}: KMS database schema {row[0]} is not the supported "
                        f"version {SCHEMA_VERSION}"
                    )
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise InvalidInput(f"{self.path}: not a usable KMS database: {exc}") from None

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``durable`` fsyncs the WAL before returning."""
        with self._lock, _db_errors(self.path):
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _db_errors(self.path):
            yield self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- keys -----------------------------------------------------------------------

    def create_key(self, record: KeyRecord) -> None:
        if len(record.material) != KEY_MATERIAL_BYTES:
            raise InvalidInput("key material must be 32 bytes")
        with self._transaction() as db:
            db.execute(
                "INSERT INTO keys (key_id, arn, account, region, created, description, enabled,"
                " material, policy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.key_id,
                    record.arn,
                    record.account,
                    record.region,
                    record.created,
                    record.description,
                    int(record.enabled),
                    record.material,
                    record.policy,
                ),
            )

    def get(self, key_id: str) -> KeyRecord | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT key_id, arn, account, region, created, description, enabled, material,"
                " policy FROM keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        if row is None:
            return None
        return KeyRecord(
            key_id=row[0],
            arn=row[1],
            account=row[2],
            region=row[3],
            created=row[4],
            description=row[5],
            enabled=bool(row[6]),
            material=bytes(row[7]),
            policy=row[8],
        )

    def list_ids(self, *, after: str | None, limit: int) -> list[tuple[str, str]]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT key_id, arn FROM keys WHERE key_id > ? ORDER BY key_id LIMIT ?",
                (after or "", limit),
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def set_policy(self, key_id: str, policy: str) -> None:
        with self._transaction() as db:
            cursor = db.execute("UPDATE keys SET policy = ? WHERE key_id = ?", (policy, key_id))
            if cursor.rowcount != 1:
                raise InvalidInput(f"key {key_id} vanished while its policy was written")

    # --- audit events -------------------------------------------------------------------

    def record_event(self, event: dict[str, Any]) -> None:
        """Append an audit event (atomic; flushed to disk with the next key write or checkpoint)."""
        with self._transaction(durable=False) as db:
            db.execute(
                "INSERT INTO events (time, event) VALUES (?, ?)",
                (time.time(), json.dumps(event, sort_keys=True)),
            )

    def events(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT event FROM events ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    def integrity_check(self) -> str:
        with self._reading() as db:
            row = db.execute("PRAGMA integrity_check").fetchone()
        return str(row[0])

    # --- aliases and scheduled deletion ---------------------------------------------------

    def create_alias(self, name: str, key_id: str, now: float) -> bool:
        """Add ``name`` for ``key_id``; False if the alias exists already."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM aliases WHERE name = ?", (name,)).fetchone():
                return False
            db.execute(
                "INSERT INTO aliases (name, key_id, created, updated) VALUES (?, ?, ?, ?)",
                (name, key_id, now, now),
            )
            return True

    def delete_alias(self, name: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM aliases WHERE name = ?", (name,)).rowcount == 1

    def alias(self, name: str) -> tuple[str, float, float] | None:
        """(key id, created, updated) of an alias."""
        with self._reading() as db:
            row = db.execute(
                "SELECT key_id, created, updated FROM aliases WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def list_aliases(
        self, *, key_id: str | None, after: str | None, limit: int
    ) -> list[tuple[str, str, float, float]]:
        """(name, key id, created, updated), by name, after ``after``."""
        query = "SELECT name, key_id, created, updated FROM aliases WHERE name > ?"
        args: list[Any] = [after or ""]
        if key_id is not None:
            query += " AND key_id = ?"
            args.append(key_id)
        with self._reading() as db:
            rows = db.execute(query + " ORDER BY name LIMIT ?", (*args, limit)).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def schedule_deletion(self, key_id: str, deletion_date: float) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO deletions (key_id, deletion_date) VALUES (?, ?)",
                (key_id, deletion_date),
            )

    def deletion_date(self, key_id: str) -> float | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT deletion_date FROM deletions WHERE key_id = ?", (key_id,)
            ).fetchone()
        return None if row is None else float(row[0])
