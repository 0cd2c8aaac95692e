"""The runtime's configuration: the file baked into the image, and where its host is.

``/etc/enclave-audit/runtime.json`` (inside the measured image, so PCR0 covers it):

.. code-block:: json

    {"schema": "enclave-audit/runtime-config/v1",
     "model": {"name": "smollm2-135m-instruct", "file": "model.cimf",
               "sha256": "<64 hex: SHA-256 of the decrypted GGUF>"},
     "kms": {"region": "us-east-1"},
     "max_tokens": 64,
     "limits": {"max_prompt_tokens": 512, "request_seconds": 30,
                "queue_depth": 4, "queue_seconds": 30}}

``limits`` (optional, these are the defaults) bound what one client can take: the
prompt's length in tokens (checked before the request waits for the model), the
wall-clock time of one inference (prefill is processed in chunks and decoding stops
when it is spent), and the queue: at most ``queue_depth`` requests wait for the
model, each at most ``queue_seconds``; others are answered 503 at once.

The pinned ``sha256`` (the digest CIMF files carry) is what the enclave extends
into PCR16 after checking the decrypted model against it, so an attestation names
the model it serves: PCR16 = SHA-384(0^48 || SHA-256(model)).
Without the file, the same values come from the image's environment (also
measured): ``ENCLAVE_MODEL_FILE``, ``ENCLAVE_MODEL_SHA256``, ``ENCLAVE_MODEL_NAME``,
``ENCLAVE_KMS_REGION``, ``ENCLAVE_MAX_TOKENS``.
Where the host is: vsock (CID 3) when ``/dev/nsm`` exists, else Unix sockets in
``$ENCLAVE_RUN_DIR`` (default ``/run/enclave``) that the launcher serves.
Imports: standard library only (runs in the image).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from enclave_runtime import strictjson
from enclave_runtime.channels import PARENT_CID, Endpoint
from enclave_runtime.errors import InputNotFound, InvalidInput

SCHEMA = "enclave-audit/runtime-config/v1"
CONFIG_PATH = "/etc/enclave-audit/runtime.json"
CONFIG_ENV = "ENCLAVE_RUNTIME_CONFIG"
RUN_DIR_ENV = "ENCLAVE_RUN_DIR"
TRANSPORT_ENV = "ENCLAVE_TRANSPORT"
DEFAULT_RUN_DIR = "/run/enclave"
#: vsock ports on the parent (CID 3) and the enclave's own listening port
KMS_PORT = 8000
PARENT_PORT = 8001
CLIENT_PORT = 5000
VMADDR_CID_ANY = 0xFFFFFFFF
MODEL_PCR = 16

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Limits:
    """What one request may take of the enclave (see the module docstring)."""

    max_prompt_tokens: int = 512
    request_seconds: float = 30.0
    queue_depth: int = 4
    queue_seconds: float = 30.0

    @classmethod
    def from_json(cls, data: object, *, source: str) -> Limits:
        if not isinstance(data, dict):
            raise InvalidInput(f"{source}: 'limits' must be an object")
        unknown = set(data) - {
            "max_prompt_tokens",
            "request_seconds",
            "queue_depth",
            "queue_seconds",
        }
        if unknown:
            raise InvalidInput(f"{source}: unknown limits {sorted(unknown)}")
        base = cls()

        def number(name: str, low: float, high: float, *, integer: bool) -> float:
            value = data.get(name, getattr(base, name))
            kinds = (int,) if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
                raise InvalidInput(f"{source}: limits.{name} must be {low:g}..{high:g}")
            return value

        return cls(
            max_prompt_tokens=int(number("max_prompt_tokens", 1, 8192, integer=True)),
            request_seconds=float(number("request_seconds", 0.1, 3600, integer=False)),
            queue_depth=int(number("queue_depth", 0, 1024, integer=True)),
            queue_seconds=float(number("queue_seconds", 0, 3600, integer=False)),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "max_prompt_tokens": self.max_prompt_tokens,
            "request_seconds": self.request_seconds,
            "queue_depth": self.queue_depth,
            "queue_seconds": self.queue_seconds,
        }


@dataclass(frozen=True)
class RuntimeConfig:
    model_name: str
    model_file: str
    model_sha256: bytes
    kms_region: str
    max_tokens: int
    limits: Limits = Limits()

    @classmethod
    def from_json(cls, data: object, *, source: str) -> RuntimeConfig:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise InvalidInput(f"{source}: not a {SCHEMA} document")
        model, kms = data.get("model"), data.get("kms", {})
        if not isinstance(model, dict) or not isinstance(kms, dict):
            raise InvalidInput(f"{source}: 'model' and 'kms' must be objects")
        digest = model.get("sha256")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise InvalidInput(f"{source}: model.sha256 must be 64 lowercase hex characters")
        file = model.get("file")
        if not isinstance(file, str) or not _FILE.match(file):
            raise InvalidInput(f"{source}: model.file must be a plain file name")
        max_tokens = data.get("max_tokens", 64)
        if not isinstance(max_tokens, int) or not 1 <= max_tokens <= 512:
            raise InvalidInput(f"{source}: max_tokens must be 1..512")
        return cls(
            model_name=str(model.get("name", file)),
            model_file=file,
            model_sha256=bytes.fromhex(digest),
            kms_region=str(kms.get("region", "us-east-1")),
            max_tokens=max_tokens,
            limits=Limits.from_json(data.get("limits", {}), source=source),
        )

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> RuntimeConfig:
        try:
            max_tokens = int(env.get("ENCLAVE_MAX_TOKENS", "64"))
        except ValueError:
            raise InvalidInput("$ENCLAVE_MAX_TOKENS: not an integer") from None
        data = {
            "schema": SCHEMA,
            "model": {
                "name": env.get("ENCLAVE_MODEL_NAME", "model"),
                "file": env.get("ENCLAVE_MODEL_FILE", "model.cimf"),
                "sha256": env.get("ENCLAVE_MODEL_SHA256", ""),
            },
            "kms": {"region": env.get("ENCLAVE_KMS_REGION", "us-east-1")},
            "max_tokens": max_tokens,
        }
        return cls.from_json(data, source="environment")

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "schema": SCHEMA,
            "model": {
                "name": self.model_name,
                "file": self.model_file,
                "sha256": self.model_sha256.hex(),
            },
            "kms": {"region": self.kms_region},
            "max_tokens": self.max_tokens,
        }
        if self.limits != Limits():  # the default limits are not written (same file as before)
            out["limits"] = self.limits.to_json()
        return out

    @classmethod
    def load(cls, path: str | None = None) -> RuntimeConfig:
        where = Path(path or os.environ.get(CONFIG_ENV) or CONFIG_PATH)
        if path is None and not where.exists() and "ENCLAVE_MODEL_SHA256" in os.environ:
            return cls.from_environment(os.environ)
        try:
            raw = where.read_bytes()
        except OSError as exc:
            raise InputNotFound(
                f"{where}: cannot read the runtime config: {exc.strerror}"
            ) from None
        return cls.from_json(
            strictjson.loads(raw, what=str(where), error=InvalidInput), source=str(where)
        )


@dataclass(frozen=True)
class HostLinks:
    """Where the enclave's three channels go: KMS relay, parent services, client listener."""

    kms: Endpoint
    parent: Endpoint
    listen: Endpoint

    @classmethod
    def detect(cls) -> HostLinks:
        transport = os.environ.get(TRANSPORT_ENV) or (
            "vsock" if os.path.exists("/dev/nsm") else "unix"
        )
        if transport == "vsock":
            return cls(
                kms=Endpoint("vsock", str(PARENT_CID), KMS_PORT),
                parent=Endpoint("vsock", str(PARENT_CID), PARENT_PORT),
                listen=Endpoint("vsock", str(VMADDR_CID_ANY), CLIENT_PORT),
            )
        if transport != "unix":
            raise InvalidInput(f"${TRANSPORT_ENV}: expected 'vsock' or 'unix', got {transport!r}")
        run_dir = os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR
        return cls.in_directory(run_dir)

    @classmethod
    def in_directory(cls, run_dir: str | os.PathLike[str]) -> HostLinks:
        base = os.fspath(run_dir)
        return cls(
            kms=Endpoint("unix", os.path.join(base, "kms.sock")),
            parent=Endpoint("unix", os.path.join(base, "parent.sock")),
            listen=Endpoint("unix", os.path.join(base, "client.sock")),
        )
