"""``enclave-audit enclave run|sim-ca|self-test`` (+ ``qemu-setup``/``qemu-run``)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from enclave_audit.cli._common import emit_json, info, json_option, out_console
from enclave_audit.cli.qemu import qemu_run, qemu_setup, run_qemu


@click.group(name="enclave")
def enclave_group() -> None:
    """Run an enclave image: chroot simulation with a simulated NSM, or QEMU.

    \b
    Example:
      enclave-audit enclave sim-ca -o sim-ca/
      enclave-audit enclave run out/enclave.eif --sim-ca sim-ca/ --kms http://127.0.0.1:8443 \\
          --model-store models/ --port 8080
    """


enclave_group.add_command(qemu_setup)
enclave_group.add_command(qemu_run)


@enclave_group.command(name="sim-ca")
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write root.pem, intermediate.pem and their 0600 keys to.",
)
@json_option
def sim_ca(output: Path, as_json: bool) -> None:
    """Create the simulation CA the simulated NSM signs attestation documents with.

    Give its root.pem to the KMS (--root) and the client (--root); AWS's root never
    verifies these documents.

    \b
    Example:
      enclave-audit enclave sim-ca -o sim-ca/
    """
    from cryptography.hazmat.primitives import hashes

    from reference_enclave.nsm.sim_ca import SimulationCa

    ca = SimulationCa.create()
    ca.save(output)
    fingerprint = ca.root.fingerprint(hashes.SHA256()).hex()
    if as_json:
        emit_json(
            {"root": str(output / "root.pem"), "root_sha256": fingerprint},
            schema="enclave-audit/sim-ca",
        )
    else:
        out_console.print(f"{output / 'root.pem'}  sha256:{fingerprint}")


@enclave_group.command(name="run")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--qemu", is_flag=True, help="Boot under QEMU's nitro-enclave machine instead.")
@click.option("--kms", "kms_url", metavar="URL", help="The KMS endpoint (http://HOST:PORT).")
@click.option(
    "--model-store",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory of encrypted model files the proxy serves to the enclave.",
)
@click.option(
    "--sim-ca",
    "sim_ca_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Simulation CA directory (enclave sim-ca); documents are signed by it.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="TCP port for clients; 0 picks a free one.",
)
@click.option(
    "--access-key",
    envvar="ENCLAVE_AUDIT_KMS_ACCESS_KEY",
    help="KMS access key lent to the enclave.",
)
@click.option(
    "--secret-key",
    envvar="ENCLAVE_AUDIT_KMS_SECRET_KEY",
    help="Its secret (or $ENCLAVE_AUDIT_KMS_SECRET_KEY).",
)
@click.option("--region", default="us-east-1", show_default=True)
@click.option(
    "--capture",
    type=click.Path(file_okay=False, path_type=Path),
    help="Record every byte the proxy relays under this directory.",
)
@click.option(
    "--accelerator",
    type=click.Path(dir_okay=False, path_type=Path),
    help="GPU bridge: the accelerator service's socket (named accelerator.sock).",
)
@click.option("--parent-role", metavar="ARN", help="(--qemu) IAM role ARN of the parent (PCR3).")
@click.option("--parent-id", metavar="ID", help="(--qemu) parent instance id (PCR4).")
@click.option(
    "--nonce", "nonce_hex", metavar="HEX", help="(--qemu) nonce for the guest's document."
)
@click.option(
    "--expect",
    "expect_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="(--qemu) measurements.json to compare the guest's PCRs with, besides describe-eif's.",
)
@click.option("--timeout", type=click.FloatRange(min=1), default=900, show_default=True)
@json_option
def run(
    image: Path,
    qemu: bool,
    kms_url: str | None,
    model_store: Path | None,
    sim_ca_dir: Path | None,
    port: int,
    access_key: str | None,
    secret_key: str | None,
    region: str,
    capture: Path | None,
    accelerator: Path | None,
    parent_role: str | None,
    parent_id: str | None,
    nonce_hex: str | None,
    expect_path: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Run IMAGE: its own rootfs under unshare+chroot with a simulated NSM (root), behind the proxy.

    The simulated NSM measures IMAGE itself (PCR0/1/2/8 as describe-eif) and signs
    with --sim-ca. The command runs until interrupted; clients use the printed URL.
    With --qemu the image boots under QEMU instead (kernel and /init included).
    With --accelerator the enclave runs its matrix products on that accelerator over
    the attested, encrypted GPU bridge (it verifies the device against the reference
    values pinned in the image first, and refuses to boot otherwise).

    \b
    Example:
      enclave-audit enclave run out/enclave.eif --sim-ca sim-ca/ --kms http://127.0.0.1:8443 \\
          --model-store models/ --port 8080
    """
    if qemu:
        run_qemu(
            image,
            parent_role=parent_role,
            parent_id=parent_id,
            nonce_hex=nonce_hex,
            timeout=timeout,
            as_json=as_json,
            expect_path=expect_path,
        )
        return
    from enclave_audit.errors import InvalidInput
    from reference_enclave.nsm.sim_ca import SimulationCa
    from reference_enclave.runtime.launch import HostServices, launch_image

    missing = [
        name
        for name, value in (
            ("--kms", kms_url),
            ("--model-store", model_store),
            ("--sim-ca", sim_ca_dir),
            ("--access-key", access_key),
            ("--secret-key", secret_key),
        )
        if value is None
    ]
    if missing:
        raise InvalidInput(f"enclave run (simulation) needs {', '.join(missing)}")
    assert kms_url and model_store and sim_ca_dir and access_key and secret_key
    services = HostServices(
        kms_url=kms_url,
        model_store=model_store,
        access_key_id=access_key,
        secret_access_key=secret_key,
        region=region,
        client_port=port,
        capture=capture,
        accelerator=accelerator,
    )
    enclave = launch_image(
        image, ca=SimulationCa.load(sim_ca_dir), services=services, timeout=timeout
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        if as_json:
            emit_json(
                {"url": enclave.url, "module_id": enclave.nsm.module_id, "pid": os.getpid()},
                schema="enclave-audit/enclave-run",
            )
        else:
            out_console.print(enclave.url)
            info(f"enclave {enclave.nsm.module_id} ready; log {enclave.log_path}; Ctrl-C stops it")
        while not stop.wait(1.0):
            if enclave.process.poll() is not None:
                info(f"enclave exited with status {enclave.process.returncode}")
                break
    finally:
        enclave.stop()


@enclave_group.command(name="self-test")
def self_test() -> None:
    """Run the runtime's known-answer tests and tiny forward pass on this host.

    \b
    Example:
      enclave-audit enclave self-test
    """
    from enclave_audit.errors import Internal
    from enclave_runtime import selftest

    if selftest.run() != 0:
        raise Internal("runtime self-test failed")
