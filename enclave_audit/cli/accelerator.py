"""``enclave-audit accelerator``: the attested accelerator service of the GPU bridge."""

from __future__ import annotations

import os

# one BLAS thread per process: threaded BLAS on a small shared machine is many times slower
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import datetime as dt
import signal
import sys
from pathlib import Path
from types import FrameType

import click

from enclave_audit.cli._common import emit_json, err_console, json_option, warn
from enclave_audit.errors import InvalidInput
from enclave_runtime.gpu_bridge.client import load_reference_values
from reference_enclave.gpu_bridge.service import (
    DEFAULT_MEASUREMENTS,
    AcceleratorService,
    CudaDevice,
    DeviceBackend,
    NumpyDevice,
    ServiceConfig,
    device_identity,
)


@click.group("accelerator")
def accelerator_group() -> None:
    """The accelerator side of the GPU bridge (attested, encrypted channel).

    \b
    Example:
      enclave-audit accelerator serve --socket /run/enclave-audit/accelerator.sock
    """


@accelerator_group.command("serve")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Unix socket to listen on.",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--measurement",
    "overrides",
    multiple=True,
    metavar="NAME=HEX",
    help="Report a different measurement (testing the enclave's refusal).",
)
@click.option("--debug-mode", is_flag=True, help="Report debug mode (the enclave must refuse).")
@click.option(
    "--allow-insecure-plaintext",
    is_flag=True,
    help="Accept the unencrypted benchmark baseline (never in production).",
)
def serve(
    socket_path: Path,
    device: str,
    overrides: tuple[str, ...],
    debug_mode: bool,
    allow_insecure_plaintext: bool,
) -> None:
    """Serve attested matrix products to enclaves until SIGTERM.

    The device identity is issued at start by the simulated vendor root that the
    reference image pins; every session starts with a report signed over the
    enclave's nonce and key share.

    \b
    Example:
      enclave-audit accelerator serve --socket /tmp/acc.sock --device cpu
    """
    measurements = dict(DEFAULT_MEASUREMENTS)
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidInput(f"--measurement {item!r}: expected NAME=HEX")
        measurements[name] = value
    if allow_insecure_plaintext:
        warn("insecure plaintext baseline accepted")

    def backend() -> DeviceBackend:
        return CudaDevice() if device == "cuda" else NumpyDevice()

    backend()  # fail now, with one line, if the device is unusable
    config = ServiceConfig(
        socket_path=socket_path,
        device=device_identity(dt.datetime.now(dt.UTC)),
        measurements=measurements,
        debug=debug_mode,
        allow_insecure_plaintext=allow_insecure_plaintext,
        backend_factory=backend,
    )
    service = AcceleratorService(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write(f"{socket_path}\n")
    sys.stdout.flush()
    service.serve_forever()


@accelerator_group.command("reference-values")
@json_option
def reference_values(as_json: bool) -> None:
    """Show the accelerator reference values the reference image pins.

    \b
    Example:
      enclave-audit accelerator reference-values --json
    """
    summary = load_reference_values().summary()
    if as_json:
        emit_json(summary, schema="enclave-audit/accelerator-reference-values")
    else:
        err_console.print(f"vendor root sha256: {summary['vendor_root_sha256']}")
        for name, value in summary["rim"]["measurements"].items():
            sys.stdout.write(f"{name}: {value}\n")
