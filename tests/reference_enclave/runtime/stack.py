"""A whole host-side stack with the tiny model: KMS, proxy (with capture), simulated
NSM, the runtime as a host process. Shared by the runtime, proxy and client tests
(each directory's conftest exposes :func:`stack_fixture` as ``stack``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.eif import measure_parts
from enclave_audit.model.measurements import PcrSet
from enclave_runtime.config import Limits, RuntimeConfig
from reference_enclave import demo
from reference_enclave.model.tiny_gguf import write_tiny_gguf
from reference_enclave.nsm.sim_ca import SimulationCa
from reference_enclave.nsm.simulator import SimulatedNsm
from reference_enclave.runtime.launch import HostServices, RunningEnclave, launch_host_process


@dataclass
class Stack:
    enclave: RunningEnclave
    kms: demo.DemoKms
    ca: SimulationCa
    image_pcrs: PcrSet
    expected: PcrSet
    gguf: Path
    model: demo.PublishedModel
    capture: Path
    services: HostServices
    config_path: Path
    data_key: bytes


def image_pcrs_for(tmp: Path, marker: bytes) -> PcrSet:
    """Real measurements of a small set of image parts (a stand-in image for the fast path)."""
    kernel, ramdisk = tmp / "kernel", tmp / "ramdisk"
    kernel.write_bytes(b"kernel:" + marker)
    ramdisk.write_bytes(b"ramdisk:" + marker)
    return measure_parts(kernel, "console=ttyS0", [ramdisk])


def start_stack(
    tmp: Path,
    *,
    bound_pcrs: PcrSet | None = None,
    marker: bytes = b"a",
    gguf: Path | None = None,
    max_tokens: int = 16,
    limits: Limits | None = None,
) -> Stack:
    ca = SimulationCa.create()
    pcrs = image_pcrs_for(tmp, marker)
    gguf = gguf or write_tiny_gguf(tmp / "tiny.gguf")
    kms = demo.start_demo_kms(tmp, ca)
    try:
        store = tmp / "store"
        store.mkdir()
        model = demo.publish_model(kms.admin, gguf, store, file="tiny.cimf", model_id="tiny")
        demo.bind_key_policy(kms.admin, model.key_id, bound_pcrs or pcrs)
        config = RuntimeConfig(
            model_name="tiny",
            model_file="tiny.cimf",
            model_sha256=hashlib.sha256(gguf.read_bytes()).digest(),
            kms_region="us-east-1",
            max_tokens=max_tokens,
            limits=limits or Limits(),
        )
        config_path = tmp / "runtime.json"
        config_path.write_text(json.dumps(config.to_json()))
        services = HostServices(
            kms_url=kms.url,
            model_store=store,
            access_key_id=kms.credentials.enclave_key,
            secret_access_key=kms.credentials.enclave_secret,
            capture=tmp / "capture",
        )
        nsm = SimulatedNsm(pcrs.values, ca)
        enclave = launch_host_process(
            config_path=config_path,
            nsm=nsm,
            services=services,
            workdir=tmp / "enclave",
            timeout=120,
        )
    except BaseException:
        kms.stop()
        raise
    return Stack(
        enclave,
        kms,
        ca,
        pcrs,
        demo.expected_measurements(pcrs, model.sha256),
        gguf,
        model,
        tmp / "capture",
        services,
        config_path,
        model.data_key,
    )


def stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    s = start_stack(tmp)
    try:
        yield s
    finally:
        s.enclave.stop()
        s.kms.stop()
