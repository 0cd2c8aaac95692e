"""``enclave-audit proxy run``: the untrusted host proxy on its own."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from enclave_audit.cli._common import info, out_console


@click.group(name="proxy")
def proxy_group() -> None:
    """The host proxy: relays client, KMS and model-store traffic; holds no key.

    \b
    Example:
      enclave-audit proxy run --port 8080 --enclave vsock:16:5000 \\
          --kms http://127.0.0.1:8443 --kms-listen vsock:4294967295:8000 \\
          --parent-listen vsock:4294967295:8001 --model-store models/
    """


@proxy_group.command(name="run")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address for clients.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True)
@click.option(
    "--enclave",
    "enclave",
    required=True,
    metavar="ENDPOINT",
    help="The enclave's listener: vsock:CID:PORT or unix:PATH.",
)
@click.option("--kms", "kms_url", required=True, metavar="URL", help="The KMS (http://HOST:PORT).")
@click.option(
    "--kms-listen",
    required=True,
    metavar="ENDPOINT",
    help="Where the enclave's KMS channel arrives (vsock:ANY:8000 or unix:PATH).",
)
@click.option(
    "--parent-listen",
    required=True,
    metavar="ENDPOINT",
    help="Where the enclave asks for models and credentials (vsock:ANY:8001 or unix:PATH).",
)
@click.option(
    "--model-store", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--access-key", envvar="ENCLAVE_AUDIT_KMS_ACCESS_KEY", required=True)
@click.option("--secret-key", envvar="ENCLAVE_AUDIT_KMS_SECRET_KEY", required=True)
@click.option("--region", default="us-east-1", show_default=True)
@click.option(
    "--capture",
    type=click.Path(file_okay=False, path_type=Path),
    help="Record every relayed byte under this directory.",
)
def run(
    host: str,
    port: int,
    enclave: str,
    kms_url: str,
    kms_listen: str,
    parent_listen: str,
    model_store: Path,
    access_key: str,
    secret_key: str,
    region: str,
    capture: Path | None,
) -> None:
    """Relay until interrupted; prints the client URL on stdout.

    \b
    Example:
      enclave-audit proxy run --port 8080 --enclave unix:/tmp/e/client.sock \\
          --kms http://127.0.0.1:8443 --kms-listen unix:/tmp/e/kms.sock \\
          --parent-listen unix:/tmp/e/parent.sock --model-store models/
    """
    from enclave_runtime.channels import Endpoint
    from reference_enclave.proxy import ProxySettings, start_proxy

    proxy = start_proxy(
        ProxySettings(
            client_listen=Endpoint("tcp", host, port),
            enclave_client=Endpoint.parse(enclave),
            kms_listen=Endpoint.parse(kms_listen),
            kms_url=kms_url,
            parent_listen=Endpoint.parse(parent_listen),
            model_store=model_store,
            credentials={
                "access_key_id": access_key,
                "secret_access_key": secret_key,
                "region": region,
            },
            capture=capture,
        )
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        out_console.print(proxy.client_url)
        info("proxy running; Ctrl-C stops it")
        stop.wait()
    finally:
        proxy.stop()
