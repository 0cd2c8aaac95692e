"""The simulation launcher's mechanics on a small real EIF (a static probe as the app).

The probe stands where the runtime would: the launcher unpacks the EIF's ramdisks,
reads /cmd and /env, and runs the command under unshare + chroot with the simulated
NSM and the proxy's sockets at /run/enclave. The probe reports what it sees.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from builder.eif import describe_eif, write_eif
from builder.initramfs import directory, file_bytes, file_path, write_ramdisk
from reference_enclave.nsm.sim_ca import SimulationCa
from reference_enclave.runtime.launch import HostServices, launch_image
from tests.conftest import need, need_tool

HERE = Path(__file__).parent


def _probe_image(tmp: Path) -> Path:
    gcc = need_tool("gcc", "gcc")
    probe = tmp / "probe"
    subprocess.run(
        [gcc, "-static", "-O1", "-o", str(probe), str(HERE / "data" / "probe.c")], check=True
    )
    boot, app = tmp / "boot.cpio", tmp / "app.cpio"
    write_ramdisk(boot, [directory("dev"), file_bytes("init", b"#!/bin/false\n", 0o755)], epoch=0)
    write_ramdisk(
        app,
        [
            file_bytes("cmd", b"/probe\nhello-from-cmd\n"),
            file_bytes("env", b"PATH=/bin\nENCLAVE_MODEL_SHA256=abc\n"),
            directory("rootfs"),
            directory("rootfs/run"),
            file_path("rootfs/probe", probe, perm=0o755),
        ],
        epoch=0,
    )
    kernel = tmp / "bzImage"
    kernel.write_bytes(b"not a kernel, never booted here")
    image = tmp / "probe.eif"
    write_eif(
        image,
        kernel=kernel,
        cmdline="console=ttyS0",
        ramdisks=[boot, app],
        name="probe",
        version="1",
        build_time="2026-01-01T00:00:00Z",
    )
    return image


def test_the_image_command_runs_isolated_with_the_simulated_nsm(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "unshare and chroot need root")
    need_tool("unshare", "util-linux")
    image = _probe_image(tmp_path)
    (tmp_path / "store").mkdir()
    services = HostServices(
        kms_url="http://127.0.0.1:9",
        model_store=tmp_path / "store",
        access_key_id="AKIAPROBE0000000",
        secret_access_key="x" * 20,
    )
    ca = SimulationCa.create()
    with launch_image(image, ca=ca, services=services, workdir=tmp_path / "w", timeout=60) as e:
        report = e.events[-1]
        assert report["pid"] == 1  # its own PID namespace
        assert report["lo_up"] == 1 and report["ifaces"] == 1  # loopback only: no network
        assert report["nsm_device"] == 0  # no /dev/nsm: the socket is the device
        assert report["argv1"] == "hello-from-cmd"  # the image's /cmd ...
        assert report["env"] == ["PATH=/bin", "ENCLAVE_MODEL_SHA256=abc"]  # ... and exactly /env
        assert {"nsm.sock", "kms.sock", "parent.sock"} <= set(report["run"])  # type: ignore[arg-type]
        assert e.nsm.pcr(0) == describe_eif(image).pcrs[0]  # PCRs measured from the EIF
        process = e.process
    assert process.poll() is not None  # stopped
    assert not (tmp_path / "w" / "root").exists()  # the unpacked image is removed
    assert (tmp_path / "w" / "enclave.log").exists()


def test_enclave_run_cli_serves_until_terminated(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "unshare and chroot need root")
    need_tool("unshare", "util-linux")
    import signal
    import sys

    image = _probe_image(tmp_path)
    (tmp_path / "store").mkdir()
    SimulationCa.create().save(tmp_path / "ca")
    exe = Path(sys.executable).with_name("enclave-audit")
    proc = subprocess.Popen(
        [
            str(exe),
            "enclave",
            "run",
            str(image),
            "--sim-ca",
            str(tmp_path / "ca"),
            "--kms",
            "http://127.0.0.1:9",
            "--model-store",
            str(tmp_path / "store"),
            "--access-key",
            "AKIAPROBE0000000",
            "--secret-key",
            "x" * 20,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
