"""The real reference image in the chroot simulation: its own Python answers "Paris".

Slow: needs the reference image (built once per cache, minutes) and root.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.eif import describe_eif
from enclave_audit.errors import KmsRefused
from reference_enclave import demo
from reference_enclave.client import Expectation, ask
from reference_enclave.nsm.sim_ca import SimulationCa
from reference_enclave.proxy.capture import Capture
from reference_enclave.runtime.launch import (
    HostServices,
    RunningEnclave,
    launch_image,
    unpack_image,
)
from tests.conftest import need, need_tool
from verifier.nitro import TrustRoot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def reference_eif() -> Path:
    need(os.geteuid() == 0, "the chroot simulation needs root")
    need_tool("unshare", "util-linux")
    prebuilt = os.environ.get("ENCLAVE_AUDIT_REFERENCE_EIF")  # an image built from this tree
    if prebuilt:
        return Path(prebuilt)
    from builder.reference import reference_image

    return Path(reference_image().eif)


@dataclass
class Launched:
    enclave: RunningEnclave
    kms: demo.DemoKms
    ca: SimulationCa
    expected: Expectation
    services: HostServices
    model: demo.PublishedModel


@pytest.fixture(scope="module")
def launched(reference_eif: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    tmp = tmp_path_factory.mktemp("image")
    ca = SimulationCa.create()
    pcrs = describe_eif(reference_eif).pcrs
    kms = demo.start_demo_kms(tmp, ca)
    try:
        store = tmp / "store"
        store.mkdir()
        model = demo.publish_model(kms.admin, demo.smollm2_gguf(), store)
        demo.bind_key_policy(kms.admin, model.key_id, pcrs)
        services = HostServices(
            kms_url=kms.url,
            model_store=store,
            access_key_id=kms.credentials.enclave_key,
            secret_access_key=kms.credentials.enclave_secret,
            capture=tmp / "capture",
        )
        enclave = launch_image(reference_eif, ca=ca, services=services, workdir=tmp / "sim")
    except BaseException:
        kms.stop()
        raise
    expected = Expectation(demo.expected_measurements(pcrs, model.sha256), "reference image")
    try:
        yield Launched(enclave, kms, ca, expected, services, model)
    finally:
        enclave.stop()
        kms.stop()


def test_the_image_answers_paris_and_the_proxy_saw_only_ciphertext(launched: Launched) -> None:
    result = ask(
        launched.enclave.url,
        demo.DEMO_QUESTION,
        expectation=launched.expected,
        roots=[TrustRoot.from_pem(launched.ca.root_pem(), name="sim")],
        max_tokens=24,
    )
    assert "Paris" in result.answer
    traffic = Capture(launched.services.capture or Path()).all_bytes()
    for needle in (demo.DEMO_QUESTION, result.answer.strip(), "Paris"):
        assert needle.encode() not in traffic
    assert launched.model.data_key not in traffic
    gguf = demo.smollm2_gguf().read_bytes()
    for offset in range(0, len(gguf) - 64, len(gguf) // 50):
        window = gguf[offset : offset + 64]
        if len(set(window)) > 8:
            assert window not in traffic


def test_the_process_is_the_images_python(launched: Launched) -> None:
    # the runtime runs in its own PID namespace under the image's interpreter
    rootfs = str(launched.enclave.workdir / "root" / "rootfs")
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    pids = [
        int(line.split()[0])
        for line in ps.stdout.splitlines()
        if "enclave_runtime" in line and "sandbox" not in line
    ]
    ours = [pid for pid in pids if os.readlink(f"/proc/{pid}/root") == rootfs]
    assert len(ours) == 1, (pids, rootfs)
    assert os.readlink(f"/proc/{ours[0]}/exe").endswith("python3.11")


def test_self_test_inside_the_image(reference_eif: Path, tmp_path: Path) -> None:
    unpacked = unpack_image(reference_eif, tmp_path / "root")
    done = subprocess.run(
        ["chroot", str(unpacked.rootfs), *unpacked.cmd, "--self-test"],
        env=unpacked.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "self-test: passed" in done.stdout


def test_a_changed_byte_gets_no_key(
    launched: Launched, reference_eif: Path, tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered.eif"
    demo.tamper_image(reference_eif, tampered)
    assert describe_eif(tampered).pcrs[0] != describe_eif(reference_eif).pcrs[0]
    with pytest.raises(KmsRefused, match="AccessDenied"):
        launch_image(tampered, ca=launched.ca, services=launched.services, workdir=tmp_path / "t")
    refusal = demo.client_refuses(
        tampered, launched.ca, launched.expected.pcrs, launched.model.sha256
    )
    assert refusal is not None and "PCR" in refusal


def test_the_image_through_the_gpu_bridge_gives_the_same_answer(
    launched: Launched, reference_eif: Path, tmp_path: Path
) -> None:
    """The measured image verifies the accelerator against its pinned reference values and
    runs its matrix products there; greedy decoding gives the same answer as locally."""
    import dataclasses
    import datetime as dt

    from reference_enclave.gpu_bridge.service import (
        AcceleratorService,
        ServiceConfig,
        device_identity,
    )

    roots = [TrustRoot.from_pem(launched.ca.root_pem(), name="sim")]
    local = ask(
        launched.enclave.url,
        demo.DEMO_QUESTION,
        expectation=launched.expected,
        roots=roots,
        max_tokens=16,
    )
    directory = tmp_path / "acc"
    directory.mkdir(mode=0o700)
    service = AcceleratorService(
        ServiceConfig(
            socket_path=directory / "accelerator.sock",
            device=device_identity(dt.datetime.now(dt.UTC)),
        )
    ).start()
    try:
        services = dataclasses.replace(
            launched.services, accelerator=directory / "accelerator.sock", capture=None
        )
        bridged = launch_image(
            reference_eif, ca=launched.ca, services=services, workdir=tmp_path / "sim"
        )
        try:
            remote = ask(
                bridged.url,
                demo.DEMO_QUESTION,
                expectation=launched.expected,
                roots=roots,
                max_tokens=16,
            )
            log = bridged.log_path.read_text()
        finally:
            bridged.stop()
    finally:
        service.stop()
    assert "accelerator-verified" in log
    assert remote.answer == local.answer and "Paris" in remote.answer
