"""Fault scenarios: SIGKILL the real services and writers at random points, restart, audit.

Every scenario runs the real program in a subprocess (``enclave-audit kms serve``,
``enclave-audit accelerator serve``, ``enclave-audit eif assemble``, the gate's
decision-log append), kills it with SIGKILL at a random moment while clients are
mid-request or the writer is mid-write, restarts it and checks:

* nothing acknowledged was lost (keys, ciphertexts, log entries) and stores are
  intact (``PRAGMA integrity_check``, the decision-log hash chain);
* every output is complete or absent (never half-written);
* clients saw one clear project error while it was down, and succeed after restart.

``FaultResult.lost`` counts acknowledged data that was gone or corrupt afterwards;
it must be 0.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "111122223333"
ADMIN = {
    "access_key_id": "AKIAFAULTADMIN000001",
    "secret_access_key": "fault-secret-" + "k" * 30,
    "principal": f"arn:aws:iam::{ACCOUNT}:user/admin",
}


@dataclass
class FaultResult:
    scenario: str
    runs: int = 0
    acknowledged: int = 0
    lost: int = 0
    client_errors: int = 0
    unclear_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    killed_mid_write: int = 0
    seconds: float = 0.0
    #: restarts after which no client request succeeded within the recovery bound
    not_recovered: int = 0


def cli() -> list[str]:
    exe = Path(sys.executable).with_name("enclave-audit")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "enclave_audit"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


# --- the reference KMS ---


def _start_kms(db: Path, config: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [*cli(), "kms", "serve", "--db", str(db), "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("http://"):
        _kill(proc)
        raise RuntimeError(f"kms serve did not print its URL (got {line!r})")
    return proc, line


def _client(url: str) -> Any:
    from reference_enclave.kms import kms_client

    return kms_client(url, ADMIN["access_key_id"], ADMIN["secret_access_key"], max_attempts=1)


def _one_line_error(exc: BaseException, operation: str) -> str | None:
    """None when the failure reaches the user as one clear project error line."""
    from botocore.exceptions import BotoCoreError, ClientError

    from enclave_audit.errors import EnclaveAuditError
    from reference_enclave.kms.client import client_error

    if isinstance(exc, KeyError):
        return None  # a 200 cut short by the kill: boto3 returned {} (RELIABILITY.md, faults)
    if isinstance(exc, (ClientError, BotoCoreError)):
        converted: BaseException = client_error(exc, operation)
    else:
        converted = exc
    if not isinstance(converted, EnclaveAuditError):
        return f"{type(exc).__name__}: {exc}"
    text = converted.diagnostic()
    return None if text and "\n" not in text else f"multi-line: {text!r}"


def kms_kill(folder: Path, *, runs: int, seed: int = 1) -> FaultResult:
    """Clients create keys, put policies and encrypt while the KMS is SIGKILLed."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    db, config = folder / "kms.db", folder / "kms.json"
    config.write_text(json.dumps({"account_id": ACCOUNT, "credentials": [ADMIN]}))
    result = FaultResult("kms: SIGKILL during CreateKey/PutKeyPolicy/Encrypt")
    started = time.monotonic()
    acked_keys: set[str] = set()
    acked_blobs: list[tuple[str, bytes, bytes]] = []
    acked_policies: dict[str, str] = {}
    lock = threading.Lock()
    port = 0
    for run in range(runs):
        proc, url = _start_kms(db, config, port)
        port = int(url.rsplit(":", 1)[1])
        stop = threading.Event()

        def worker(wid: int, url: str = url, stop: threading.Event = stop, run: int = run) -> None:
            client = _client(url)
            n = 0
            while not stop.is_set():
                n += 1
                op = "CreateKey"
                try:
                    key_id = client.create_key(Description=f"run{run}-w{wid}-{n}")["KeyMetadata"][
                        "KeyId"
                    ]
                    with lock:
                        acked_keys.add(key_id)
                    op = "PutKeyPolicy"
                    policy = json.dumps(
                        {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Sid": f"Admin{n}",
                                    "Effect": "Allow",
                                    "Principal": {"AWS": ADMIN["principal"]},
                                    "Action": "kms:*",
                                    "Resource": "*",
                                }
                            ],
                        }
                    )
                    client.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
                    with lock:
                        acked_policies[key_id] = policy
                    op = "Encrypt"
                    plaintext = os.urandom(32)
                    blob = client.encrypt(
                        KeyId=key_id, Plaintext=plaintext, EncryptionContext={"run": str(run)}
                    )["CiphertextBlob"]
                    with lock:
                        acked_blobs.append((str(run), plaintext, blob))
                except Exception as exc:
                    with lock:
                        result.client_errors += 1
                        problem = _one_line_error(exc, op)
                        if problem:
                            result.unclear_errors.append(problem)
                    return

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.3, 1.5))
        _kill(proc)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        result.runs += 1
    # restart once more and audit everything that was acknowledged
    proc, url = _start_kms(db, config, port)
    try:
        with sqlite3.connect(db) as conn:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            result.lost += 1
            result.notes.append(f"integrity_check: {check}")
        client = _client(url)
        for key_id in acked_keys:
            try:
                client.describe_key(KeyId=key_id)
            except Exception:
                result.lost += 1
        for key_id, policy in acked_policies.items():
            got = client.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
            if json.loads(got) != json.loads(policy):
                result.lost += 1
        for run_label, plaintext, blob in acked_blobs:
            try:
                back = client.decrypt(CiphertextBlob=blob, EncryptionContext={"run": run_label})
                if back["Plaintext"] != plaintext:
                    result.lost += 1
            except Exception:
                result.lost += 1
        client.create_key(Description="after restart")  # succeeds after restart
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    result.acknowledged = len(acked_keys) + len(acked_policies) + len(acked_blobs)
    result.seconds = round(time.monotonic() - started, 1)
    return result


# --- the gate's decision log ---

_APPENDER = """
import sys
from pathlib import Path
from fuzz.seeds import decision_entry
from reports.decision_log import append, next_entry, read_log
from verifier.attest.signing import KeySigner
path = Path(sys.argv[1])
signer = KeySigner.from_path(Path(sys.argv[2]))
i = 0
while True:
    logged = next_entry(read_log(path, signer.public_key()), decision_entry(i % 60), signer)
    append(path, logged, signer.public_key())
    print(logged.seq, logged.sha256, flush=True)
    i += 1
"""


def decision_log_kill(folder: Path, *, runs: int, seed: int = 2) -> FaultResult:
    from reports.decision_log import read_log
    from verifier.attest.keys import KeyType, generate_key_pair
    from verifier.attest.signing import KeySigner

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "decisions.jsonl"
    key = generate_key_pair(KeyType.ED25519, folder / "gate", overwrite=True).private
    public = KeySigner.from_path(key).public_key()
    result = FaultResult("gate decision log: SIGKILL during append")
    started = time.monotonic()
    acked: dict[int, str] = {}
    for _ in range(runs):
        proc = subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(log), str(key)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_env(),
        )
        time.sleep(rng.uniform(0.5, 2.0))
        _kill(proc)
        assert proc.stdout is not None
        for line in proc.stdout.read().decode().splitlines():
            seq, digest = line.split()
            acked[int(seq)] = digest
        result.runs += 1
        entries = read_log(log, public)  # raises DecisionLogTampered on any break
        have = {e.seq: e.sha256 for e in entries}
        result.lost += sum(1 for seq, digest in acked.items() if have.get(seq) != digest)
    result.acknowledged = len(acked)
    result.seconds = round(time.monotonic() - started, 1)
    return result


# --- the builder (EIF assembly) ---


def builder_kill(folder: Path, *, runs: int, seed: int = 3, ramdisk_mb: int = 24) -> FaultResult:
    from builder.eif import describe_eif

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    kernel, ramdisk = folder / "bzImage", folder / "big.cpio"
    kernel.write_bytes(random.Random(seed).randbytes(1 << 20))
    ramdisk.write_bytes(random.Random(seed + 1).randbytes(ramdisk_mb << 20))
    out = folder / "enclave.eif"
    args = [
        *cli(),
        "eif",
        "assemble",
        "--kernel",
        str(kernel),
        "--ramdisk",
        str(ramdisk),
        "--build-time",
        "2026-01-01T00:00:00+00:00",
        "-o",
        str(out),
    ]
    reference = folder / "reference.eif"
    subprocess.run([*args[:-1], str(reference)], check=True, env=_env(), capture_output=True)
    want = hashlib.sha256(reference.read_bytes()).hexdigest()
    result = FaultResult("builder: SIGKILL during eif assemble")
    started = time.monotonic()
    for _ in range(runs):
        out.unlink(missing_ok=True)
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
        )
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and proc.poll() is None
            and not any(p.name.startswith(".enclave.eif.") for p in folder.iterdir())
        ):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))  # mid-write: the temp file is being filled
        _kill(proc)
        result.runs += 1
        if out.exists():
            result.acknowledged += 1
            complete = hashlib.sha256(out.read_bytes()).hexdigest() == want
            if not complete or not describe_eif(out).crc_ok:
                result.lost += 1
                result.notes.append("half-written enclave.eif left at the output path")
        leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".enclave.eif.")]
        for name in leftovers:
            (folder / name).unlink()
        if leftovers:
            result.killed_mid_write += 1
    # and it succeeds after the kills
    subprocess.run(args, check=True, env=_env(), capture_output=True)
    if hashlib.sha256(out.read_bytes()).hexdigest() != want:
        result.lost += 1
    if result.killed_mid_write:
        result.notes.append(
            f"{result.killed_mid_write} kill(s) mid-write left a hidden temp file"
            " (.enclave.eif.*.tmp) beside an absent output; the output path was never partial"
        )
    result.seconds = round(time.monotonic() - started, 1)
    return result


# --- the accelerator (GPU bridge) ---


def _start_accelerator(sock: Path) -> subprocess.Popen[bytes]:
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [*cli(), "accelerator", "serve", "--socket", str(sock)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def accelerator_kill(folder: Path, *, runs: int, seed: int = 4) -> FaultResult:
    import numpy as np

    from enclave_audit.errors import EnclaveAuditError
    from enclave_runtime.gpu_bridge.client import BridgeBackend, load_reference_values

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "acc.sock"
    result = FaultResult("accelerator: SIGKILL during matmul sessions")
    started = time.monotonic()
    weight = np.random.default_rng(seed).standard_normal((256, 256)).astype(np.float32)
    x = np.ones((1, 256), dtype=np.float32)
    expected = x @ weight.T
    for _ in range(runs):
        proc = _start_accelerator(sock)
        killer = threading.Timer(rng.uniform(0.2, 1.0), _kill, args=(proc,))
        killer.start()
        try:
            with BridgeBackend(sock, load_reference_values()) as bridge:
                bridge.register_weight("w", weight)
                while True:
                    out = bridge.matmul("w", x)
                    result.acknowledged += 1
                    if not np.allclose(out.reshape(expected.shape), expected, atol=1e-3):
                        result.lost += 1
        except EnclaveAuditError as exc:
            result.client_errors += 1
            if "\n" in exc.diagnostic():
                result.unclear_errors.append(exc.diagnostic())
        except Exception as exc:
            result.client_errors += 1
            result.unclear_errors.append(f"{type(exc).__name__}: {exc}")
        killer.join()
        _kill(proc)
        result.runs += 1
    proc = _start_accelerator(sock)  # restart: a new session succeeds
    try:
        with BridgeBackend(sock, load_reference_values()) as bridge:
            bridge.register_weight("w", weight)
            out = bridge.matmul("w", x)
            if not np.allclose(out.reshape(expected.shape), expected, atol=1e-3):
                result.lost += 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    result.seconds = round(time.monotonic() - started, 1)
    return result


# --- the host proxy and the enclave endpoint (runtime as a host process, tiny model) ---

ENCLAVE_PROMPT = "Name a prime number."
#: the errors a client may see while the proxy or the enclave is down or restarting
EXPECTED_CLIENT_ERRORS = ("ServiceUnavailable", "ProtocolError")
RECOVERY_SECONDS = 30.0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ask_error(exc: BaseException) -> str | None:
    """None when a client sees one clear expected project error line."""
    from enclave_audit.errors import EnclaveAuditError

    if not isinstance(exc, EnclaveAuditError):
        return f"{type(exc).__name__}: {exc}"
    text = exc.diagnostic()
    if "\n" in text or not text:
        return f"multi-line: {text!r}"
    if type(exc).__name__ not in EXPECTED_CLIENT_ERRORS:
        return f"unexpected {type(exc).__name__}: {text}"
    return None


class _Clients:
    """Client threads calling ``client.ask`` in a loop against ``url`` until stopped."""

    def __init__(self, stack: Any, url: str, result: FaultResult, count: int = 3) -> None:
        from reference_enclave.client import Expectation
        from verifier.nitro import TrustRoot

        self.url = url
        self.result = result
        self.expectation = Expectation(stack.expected, "fault scenario expectation")
        self.roots: list[object] = [TrustRoot.from_pem(stack.ca.root_pem(), name="sim")]
        self.reference = self.ask().answer  # the model's greedy answer, before any fault
        self.nonces: list[str] = []
        self.successes = 0
        self.error_kinds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(count)]
        for t in self._threads:
            t.start()

    def ask(self) -> Any:
        from reference_enclave.client import ask

        return ask(
            self.url,
            ENCLAVE_PROMPT,
            expectation=self.expectation,
            roots=self.roots,
            max_tokens=4,
            timeout=20,
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self.ask()
            except Exception as exc:
                problem = _ask_error(exc)
                with self._lock:
                    self.result.client_errors += 1
                    kind = type(exc).__name__
                    self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
                    if problem:
                        self.result.unclear_errors.append(problem)
                time.sleep(0.05)
                continue
            with self._lock:
                self.successes += 1
                self.result.acknowledged += 1
                self.nonces.append(answer.nonce)
                if answer.answer != self.reference:
                    self.result.lost += 1
                    self.result.notes.append(f"answer changed: {answer.answer!r}")

    def wait_success(self) -> bool:
        """True once a request succeeds after now (the service recovered)."""
        with self._lock:
            before = self.successes
        deadline = time.monotonic() + RECOVERY_SECONDS
        while time.monotonic() < deadline:
            with self._lock:
                if self.successes > before:
                    return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def _audit_enclave_outputs(
    result: FaultResult, clients: _Clients, capture: Path, kms_db: Path
) -> None:
    """Every acknowledged request is in the capture; the KMS store is intact; a last ask works."""
    relayed = (capture / "client.to-enclave.bin").read_bytes()
    missing = [n for n in clients.nonces if f"nonce={n}".encode() not in relayed]
    if missing:
        result.lost += len(missing)
        result.notes.append(f"{len(missing)} answered request(s) missing from the capture")
    leftovers = [p.name for p in capture.iterdir() if not p.name.endswith(".bin")]
    if leftovers:
        result.notes.append(f"unexpected files in the capture: {leftovers}")
        result.lost += len(leftovers)
    with sqlite3.connect(kms_db) as conn:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if check != "ok":
        result.lost += 1
        result.notes.append(f"KMS integrity_check: {check}")
    if clients.ask().answer != clients.reference:  # raises if it does not succeed
        result.lost += 1
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(clients.error_kinds.items()))
    result.notes.append(f"client errors while down: {kinds or 'none'}")


def _start_proxy_process(
    stack: Any, folder: Path, capture: Path, port: int
) -> tuple[subprocess.Popen[bytes], str]:
    sockdir = folder / "proxy-run"
    sockdir.mkdir(mode=0o700, exist_ok=True)
    env = _env()
    env["ENCLAVE_AUDIT_KMS_ACCESS_KEY"] = stack.services.access_key_id
    env["ENCLAVE_AUDIT_KMS_SECRET_KEY"] = stack.services.secret_access_key
    proc = subprocess.Popen(
        [
            *cli(),
            "proxy",
            "run",
            "--port",
            str(port),
            "--enclave",
            f"unix:{stack.enclave.workdir / 'run' / 'client.sock'}",
            "--kms",
            stack.kms.url,
            "--kms-listen",
            f"unix:{sockdir / 'kms.sock'}",
            "--parent-listen",
            f"unix:{sockdir / 'parent.sock'}",
            "--model-store",
            str(stack.services.model_store),
            "--capture",
            str(capture),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("http://"):
        _kill(proc)
        raise RuntimeError(f"proxy run did not print its URL (got {line!r})")
    return proc, line


def proxy_kill(folder: Path, *, runs: int, seed: int = 5) -> FaultResult:
    """Clients ask the enclave through ``enclave-audit proxy run``, which is SIGKILLed."""
    from tests.reference_enclave.runtime.stack import start_stack

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    result = FaultResult("proxy: SIGKILL of enclave-audit proxy run during client asks")
    started = time.monotonic()
    (folder / "stack").mkdir(exist_ok=True)
    stack = start_stack(folder / "stack")
    capture = folder / "proxy-capture"
    proc: subprocess.Popen[bytes] | None = None
    clients: _Clients | None = None
    try:
        proc, url = _start_proxy_process(stack, folder, capture, _free_port())
        port = int(url.rsplit(":", 1)[1])
        clients = _Clients(stack, url, result)
        for _ in range(runs):
            if not clients.wait_success():
                result.not_recovered += 1
            time.sleep(rng.uniform(0.05, 0.6))  # clients are mid-request
            _kill(proc)
            result.runs += 1
            time.sleep(rng.uniform(0.0, 0.4))  # down: clients see errors
            proc, _ = _start_proxy_process(stack, folder, capture, port)
        if not clients.wait_success():
            result.not_recovered += 1
        clients.stop()
        _audit_enclave_outputs(result, clients, capture, folder / "stack" / "kms.db")
    finally:
        if clients is not None:
            clients.stop()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        stack.enclave.stop()
        stack.kms.stop()
    result.seconds = round(time.monotonic() - started, 1)
    return result


def enclave_kill(folder: Path, *, runs: int, seed: int = 6) -> FaultResult:
    """Clients ask while the enclave process (the runtime) is SIGKILLed and relaunched."""
    from dataclasses import replace

    from reference_enclave.nsm.simulator import SimulatedNsm
    from reference_enclave.runtime.launch import launch_host_process
    from tests.reference_enclave.runtime.stack import start_stack

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    result = FaultResult("enclave: SIGKILL of the runtime process during client asks")
    started = time.monotonic()
    (folder / "stack").mkdir(exist_ok=True)
    stack = start_stack(folder / "stack")
    services = replace(stack.services, client_port=int(stack.enclave.url.rsplit(":", 1)[1]))
    enclave = stack.enclave
    clients: _Clients | None = None
    try:
        clients = _Clients(stack, enclave.url, result)
        for run in range(runs):
            if not clients.wait_success():
                result.not_recovered += 1
            time.sleep(rng.uniform(0.05, 0.6))  # clients are mid-request
            os.killpg(enclave.process.pid, signal.SIGKILL)  # the runtime's own session
            enclave.process.wait(timeout=30)
            result.runs += 1
            time.sleep(rng.uniform(0.0, 0.4))  # proxy up, enclave gone: clients see errors
            enclave.stop()
            enclave = launch_host_process(
                config_path=stack.config_path,
                nsm=SimulatedNsm(stack.image_pcrs.values, stack.ca),
                services=services,
                workdir=folder / f"enclave-{run + 1}",
                timeout=120,
            )
        if not clients.wait_success():
            result.not_recovered += 1
        clients.stop()
        _audit_enclave_outputs(result, clients, stack.capture, folder / "stack" / "kms.db")
    finally:
        if clients is not None:
            clients.stop()
        enclave.stop()
        stack.kms.stop()
    result.seconds = round(time.monotonic() - started, 1)
    return result


SCENARIOS: dict[str, Callable[..., FaultResult]] = {
    "kms": kms_kill,
    "decision_log": decision_log_kill,
    "builder": builder_kill,
    "accelerator": accelerator_kill,
    "proxy": proxy_kill,
    "enclave": enclave_kill,
}


def digest(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()
