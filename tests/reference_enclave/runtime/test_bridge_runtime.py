"""The runtime with the GPU bridge: same greedy answer as without it; a bad device stops boot."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from enclave_audit.errors import BridgeRefused
from reference_enclave.client import Expectation, ask
from reference_enclave.gpu_bridge.service import (
    DEFAULT_MEASUREMENTS,
    AcceleratorService,
    ServiceConfig,
    device_identity,
)
from reference_enclave.nsm.simulator import SimulatedNsm
from reference_enclave.runtime.launch import launch_host_process
from tests.reference_enclave.runtime.stack import start_stack
from verifier.nitro import TrustRoot


def _accelerator(directory: Path, **overrides: object) -> AcceleratorService:
    directory.mkdir(mode=0o700)
    config = ServiceConfig(
        socket_path=directory / "accelerator.sock",
        device=device_identity(dt.datetime.now(dt.UTC)),
        **overrides,  # type: ignore[arg-type]
    )
    return AcceleratorService(config).start()


def test_answer_through_the_bridge_equals_the_local_answer(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    stack = start_stack(tmp_path / "plain")
    try:
        roots = [TrustRoot.from_pem(stack.ca.root_pem(), name="sim")]
        expectation = Expectation(stack.expected, "stack")
        local = ask(
            stack.enclave.url,
            "What is the capital of France?",
            expectation=expectation,
            roots=roots,
            max_tokens=12,
        )
        service = _accelerator(tmp_path / "acc")
        try:
            services = dataclasses.replace(
                stack.services, accelerator=service.config.socket_path, capture=None
            )
            bridged = launch_host_process(
                config_path=stack.config_path,
                nsm=SimulatedNsm(stack.image_pcrs.values, stack.ca),
                services=services,
                workdir=tmp_path / "bridged",
                timeout=120,
            )
            try:
                remote = ask(
                    bridged.url,
                    "What is the capital of France?",
                    expectation=expectation,
                    roots=roots,
                    max_tokens=12,
                )
                log = bridged.log_path.read_text()
            finally:
                bridged.stop()
        finally:
            service.stop()
    finally:
        stack.enclave.stop()
        stack.kms.stop()
    assert remote.answer == local.answer
    assert "accelerator-verified" in log


def test_an_unverified_accelerator_stops_the_boot(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    stack = start_stack(tmp_path / "plain")
    service = _accelerator(
        tmp_path / "acc", measurements=dict(DEFAULT_MEASUREMENTS, firmware="ab" * 48)
    )
    try:
        services = dataclasses.replace(stack.services, accelerator=service.config.socket_path)
        with pytest.raises(BridgeRefused, match="firmware"):
            launch_host_process(
                config_path=stack.config_path,
                nsm=SimulatedNsm(stack.image_pcrs.values, stack.ca),
                services=services,
                workdir=tmp_path / "bad",
                timeout=120,
            )
    finally:
        service.stop()
        stack.enclave.stop()
        stack.kms.stop()
