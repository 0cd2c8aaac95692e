"""Secrets hygiene of the enclave path: a demo-like run on the host stack leaks nothing.

The host stack (reference KMS, host proxy with capture, simulated NSM, the runtime
as a host process with the tiny model) answers secret prompts asked in-process and
through ``enclave-audit client ask``, plus refused and failed asks.  Afterwards the
runtime's log, the proxy capture, the CLI's stdout/stderr, error messages, every
file under the work directory and every new file under the temp directory are
searched for the model's data key, the prompts, the KMS secrets and the simulation
CA's private keys (raw, hex and base64).  Key files must be mode 0600.
"""

from __future__ import annotations

import base64
import http.client
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli

from enclave_audit.errors import EnclaveAuditError
from reference_enclave.client import Expectation, ask
from reference_enclave.client.ask import expectation_json
from tests.reference_enclave.runtime.stack import start_stack
from verifier.nitro import TrustRoot

PROMPT = "TOP-SECRET enclave prompt: the vault combination is 31-7-4242"
CLI_PROMPT = "CONFIDENTIAL question via the CLI: payroll of employee 90210"
_SCAN_LIMIT = 16 << 20


def _forms(secret: bytes) -> list[bytes]:
    forms = [secret, secret.hex().encode(), base64.b64encode(secret)]
    return [f for f in forms if len(f) >= 16]


def _leaks(haystack: bytes, secrets: dict[str, bytes]) -> list[str]:
    return [name for name, s in secrets.items() for f in _forms(s) if f in haystack]


def _files_under(top: Path) -> Iterator[Path]:
    if top.is_file():
        yield top
        return
    for dirpath, _, names in os.walk(top, onerror=lambda _: None):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > _SCAN_LIMIT:
            return b""
        return path.read_bytes()
    except OSError:
        return b""  # another engineer's file went away or is not ours to read


def _post(url: str, path: str, body: bytes) -> str:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return f"{resp.status} {resp.read().decode(errors='replace')}"
    finally:
        conn.close()


def test_no_secret_in_enclave_logs_capture_errors_or_temp_files(tmp_path: Path) -> None:
    temp_dir = Path(tempfile.gettempdir())
    temp_before = set(os.listdir(temp_dir))
    work = tmp_path / "work"
    work.mkdir()
    stack = start_stack(work)
    outputs: list[str] = []
    try:
        ca_dir = work / "sim-ca"
        stack.ca.save(ca_dir)
        root = TrustRoot.from_pem(stack.ca.root_pem(), name="sim")
        expectation = Expectation(stack.expected, "secrets test")
        answer = ask(stack.enclave.url, PROMPT, expectation=expectation, roots=[root], max_tokens=8)
        outputs.append(answer.model_dump_json())
        expect, other = work / "expected.json", work / "other.json"
        expect.write_text(expectation_json(stack.expected))
        wrong = dict(stack.expected.values)
        wrong[16] = bytes(48)
        other.write_text(expectation_json(type(stack.expected)(values=wrong)))
        base = ["client", "ask", "--root", str(ca_dir / "root.pem"), "--max-tokens", "4"]
        runs = [
            (0, [*base, "--endpoint", stack.enclave.url, "--expect", str(expect), CLI_PROMPT]),
            (
                0,
                [
                    *base,
                    "--json",
                    "--endpoint",
                    stack.enclave.url,
                    "--expect",
                    str(expect),
                    CLI_PROMPT,
                ],
            ),
            (52, [*base, "--endpoint", stack.enclave.url, "--expect", str(other), CLI_PROMPT]),
            (53, [*base, "--endpoint", "http://127.0.0.1:9", "--expect", str(expect), CLI_PROMPT]),
        ]
        for code, args in runs:
            result = run_cli(args, timeout=120)
            assert result.exit_code == code, (args, result.stderr)
            assert "Traceback" not in result.stderr
            outputs += [result.stdout, result.stderr]
        # hostile bodies to the endpoint: the error answers say nothing about the request
        outputs.append(_post(stack.enclave.url, "/v1/infer", b"not json, not sealed"))
        outputs.append(_post(stack.enclave.url, "/v1/infer", b'{"enc": "AAAA", "ct": "AAAA"}'))
        assert all(o.startswith("400 ") for o in outputs[-2:]), outputs[-2:]
        with pytest.raises(EnclaveAuditError) as refused:
            ask(
                stack.enclave.url,
                PROMPT,
                expectation=Expectation(type(stack.expected)(values=wrong), "wrong"),
                roots=[root],
            )
        outputs.append(refused.value.diagnostic())
    finally:
        stack.enclave.stop()
        stack.kms.stop()

    ca_keys = sorted(p for p in ca_dir.iterdir() if p.name.endswith(".key.pem"))
    assert ca_keys, sorted(p.name for p in ca_dir.iterdir())
    for key in [*ca_keys, work / "kms.db"]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    capture_files = sorted(stack.capture.glob("*.bin"))
    assert capture_files
    for path in capture_files:  # relayed KMS requests carry replayable SigV4 signatures
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    secrets = {
        "data key": stack.data_key,
        "prompt": PROMPT.encode(),
        "CLI prompt": CLI_PROMPT.encode(),
        "KMS admin secret": stack.kms.credentials.admin_secret.encode(),
        **{f"CA key {k.name}": k.read_bytes().split(b"-----")[2].strip()[:64] for k in ca_keys},
    }
    enclave_secret = {"enclave role secret": stack.kms.credentials.enclave_secret.encode()}
    assert not _leaks("\n".join(outputs).encode(), {**secrets, **enclave_secret}), outputs
    log = stack.enclave.log_path.read_bytes()
    assert b"ready" in log  # the log was kept and is the runtime's
    assert not _leaks(log, {**secrets, **enclave_secret}), log[-2000:]
    for path in _files_under(work):
        if path not in ca_keys:
            assert not _leaks(_read(path), {**secrets, **enclave_secret}), path
    for name in set(os.listdir(temp_dir)) - temp_before:
        for path in _files_under(temp_dir / name):
            if path.is_relative_to(tmp_path):
                continue
            assert not _leaks(_read(path), {**secrets, **enclave_secret}), path
