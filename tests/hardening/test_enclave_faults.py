"""SIGKILL the host proxy and the enclave process: clear errors, recovery, nothing lost.

Short CI variants of the ``proxy`` and ``enclave`` scenarios in fuzz/faults.py (the
20-kill runs are in RELIABILITY.md), plus the user's view: ``enclave-audit client
ask`` prints one error line (exit 53) while the proxy or the enclave is down and
answers again after the restart.  The runtime is the host process with the tiny model.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import CliResult, assert_one_line_error, run_cli

from enclave_audit.errors import ServiceUnavailable
from fuzz.faults import _kill, _start_proxy_process, enclave_kill, proxy_kill
from reference_enclave.client.ask import expectation_json
from reference_enclave.nsm.simulator import SimulatedNsm
from reference_enclave.runtime.launch import launch_host_process
from tests.reference_enclave.runtime.stack import Stack, start_stack

RUNS = int(os.environ.get("ENCLAVE_AUDIT_FAULT_RUNS", "2"))
PROMPT = "What is the capital of France?"


@pytest.mark.parametrize("scenario", [proxy_kill, enclave_kill], ids=["proxy", "enclave"])
def test_kill_recovers_and_loses_nothing(scenario: object, tmp_path: Path) -> None:
    result = scenario(tmp_path, runs=RUNS)  # type: ignore[operator]
    assert result.runs == RUNS
    assert result.lost == 0, result.notes
    assert result.not_recovered == 0, result.notes
    assert not result.unclear_errors, result.unclear_errors[:3]
    assert result.acknowledged > RUNS  # clients were answered between the kills
    assert result.client_errors > 0  # and saw the outages


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(tmp_path)
    try:
        yield s
    finally:
        s.enclave.stop()
        s.kms.stop()


def _ask_cli(stack: Stack, url: str, tmp: Path) -> CliResult:
    expect, root = tmp / "expected.json", tmp / "root.pem"
    if not expect.exists():
        expect.write_text(expectation_json(stack.expected))
        root.write_bytes(stack.ca.root_pem())
    return run_cli(
        [
            "client",
            "ask",
            "--endpoint",
            url,
            "--expect",
            str(expect),
            "--root",
            str(root),
            "--max-tokens",
            "4",
            PROMPT,
        ],
        timeout=120,
    )


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_cli_one_line_error_while_proxy_is_killed(stack: Stack, tmp_path: Path) -> None:
    capture = tmp_path / "proxy-capture"
    proc, url = _start_proxy_process(stack, tmp_path, capture, 0)
    try:
        first = _ask_cli(stack, url, tmp_path)
        assert first.exit_code == 0, first.stderr
        _kill(proc)
        down = _ask_cli(stack, url, tmp_path)
        assert_one_line_error(down, ServiceUnavailable.exit_code, "enclave endpoint")
        proc, _ = _start_proxy_process(stack, tmp_path, capture, int(url.rsplit(":", 1)[1]))
        again = _ask_cli(stack, url, tmp_path)
        assert again.exit_code == 0, again.stderr
        assert again.stdout == first.stdout
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    # the capture holds only whole relay records (no temp files), readable by its owner only
    names = sorted(p.name for p in capture.iterdir())
    assert names and all(n.endswith(".bin") for n in names), names
    assert _integrity(tmp_path / "kms.db") == "ok"


def test_cli_one_line_error_while_enclave_is_killed_and_relaunched(
    stack: Stack, tmp_path: Path
) -> None:
    url = stack.enclave.url
    first = _ask_cli(stack, url, tmp_path)
    assert first.exit_code == 0, first.stderr
    os.killpg(stack.enclave.process.pid, signal.SIGKILL)
    stack.enclave.process.wait(timeout=30)
    # the proxy is up, the enclave is gone: the relay closes the connection
    down = _ask_cli(stack, url, tmp_path)
    assert_one_line_error(down, ServiceUnavailable.exit_code, "enclave endpoint")
    stack.enclave.stop()
    stack.enclave = launch_host_process(
        config_path=stack.config_path,
        nsm=SimulatedNsm(stack.image_pcrs.values, stack.ca),
        services=replace(stack.services, client_port=int(url.rsplit(":", 1)[1])),
        workdir=tmp_path / "enclave-2",
        timeout=120,
    )
    again = _ask_cli(stack, url, tmp_path)
    assert again.exit_code == 0, again.stderr
    assert again.stdout == first.stdout
    assert _integrity(tmp_path / "kms.db") == "ok"


def _runtime_children() -> list[int]:
    """Our child processes running the enclave runtime."""
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in children:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"enclave_runtime" in cmdline:
                pids.append(int(pid))
    return pids


def test_enclave_killed_mid_boot_fails_clearly_and_relaunches(stack: Stack, tmp_path: Path) -> None:
    """A kill during boot (model fetched, KMS key release under way): one clear error from
    the launcher, the KMS store intact, and the next launch serves."""
    url = stack.enclave.url
    stack.enclave.stop()
    services = replace(stack.services, client_port=int(url.rsplit(":", 1)[1]))
    workdir = tmp_path / "enclave-boot"
    workdir.mkdir()
    killed: list[int] = []

    def killer() -> None:
        log = workdir / "enclave.log"
        for _ in range(6000):
            if log.exists() and b"model-fetched" in log.read_bytes():
                for pid in _runtime_children():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=killer)
    watcher.start()
    with pytest.raises(ServiceUnavailable) as down:
        stack.enclave = launch_host_process(
            config_path=stack.config_path,
            nsm=SimulatedNsm(stack.image_pcrs.values, stack.ca),
            services=services,
            workdir=workdir,
            timeout=120,
        )
    watcher.join()
    assert killed
    text = down.value.diagnostic()
    assert "\n" not in text and "before it was ready" in text, text
    assert _integrity(tmp_path / "kms.db") == "ok"
    assert stat.S_IMODE((tmp_path / "kms.db").stat().st_mode) == 0o600
    stack.enclave = launch_host_process(
        config_path=stack.config_path,
        nsm=SimulatedNsm(stack.image_pcrs.values, stack.ca),
        services=services,
        workdir=tmp_path / "enclave-3",
        timeout=120,
    )
    assert _ask_cli(stack, url, tmp_path).exit_code == 0


def test_response_cut_short_is_service_unavailable_not_a_refusal() -> None:
    """Regression (found by the proxy scenario): a proxy killed mid-response left the
    client a truncated body, which ``read(amt)`` returns silently; the client then
    reported a trust failure (EnclaveRefused: answer not JSON) instead of an outage."""
    import socket

    from reference_enclave.client.ask import _Endpoint

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"{" * 10)
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    try:
        with pytest.raises(ServiceUnavailable, match="closed after 10 of 100 bytes"):
            _Endpoint(f"http://127.0.0.1:{server.getsockname()[1]}", 10).call("GET", "/x")
    finally:
        t.join(timeout=10)
        server.close()
