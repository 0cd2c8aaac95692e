"""``enclave-audit kms serve|create-key|get-policy|put-policy|check-policy``: the reference KMS."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from enclave_audit.cli._common import emit_json, info, input_path, json_option, out_console, warn
from enclave_audit.errors import InvalidInput
from enclave_audit.fsutil import read_bytes


@click.group(name="kms")
def kms_group() -> None:
    """Run the reference AWS-compatible KMS and manage its keys with boto3.

    \b
    Example:
      enclave-audit kms serve --db kms.db --config kms.toml --root sim-ca/root.pem --port 8000
    """


@kms_group.command(name="serve")
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("kms.db"),
    show_default=True,
    help="SQLite database of keys and policies (created if missing).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="TCP port; 0 picks a free one.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML/JSON config: account, region, credentials, roots, max age.",
)
@click.option(
    "--root",
    "root_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also trust this attestation root (PEM); repeatable.",
)
@click.option(
    "--max-age",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Refuse attestation documents older than this (stricter than AWS).",
)
@click.option("--allow-debug", is_flag=True, help="Accept debug-mode (all-zero PCR) documents.")
def serve(
    db_path: Path,
    host: str,
    port: int,
    config_path: Path | None,
    root_paths: tuple[Path, ...],
    max_age: float | None,
    allow_debug: bool,
) -> None:
    """Serve the KMS; prints its endpoint URL on stdout, stops cleanly on SIGTERM/SIGINT.

    \b
    Example:
      enclave-audit kms serve --db kms.db --config kms.toml --root sim-ca/root.pem
    """
    from reference_enclave.kms.config import KmsConfig, load_config
    from reference_enclave.kms.server import build_server, server_url

    config = load_config(config_path) if config_path else KmsConfig()
    config = config.with_overrides(
        roots=list(root_paths),
        max_document_age_seconds=max_age,
        allow_debug=True if allow_debug else None,
    )
    if host not in ("127.0.0.1", "::1", "localhost"):
        warn(
            f"listening on {host}: this KMS speaks plain HTTP, so plaintexts and data keys "
            "cross the network unencrypted; put it behind TLS or keep it on loopback"
        )
    if not config.credentials:
        warn("no credentials configured: every request will be refused (see --config)")
    server, store = build_server(db_path, config, host=host, port=port)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    thread = threading.Thread(target=server.serve_forever, name="reference-kms", daemon=True)
    thread.start()
    sys.stdout.write(server_url(server) + "\n")
    sys.stdout.flush()
    info(f"kms: serving {db_path} for account {config.account_id} in {config.region}")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        store.close()
        info("kms: stopped")


def _client(endpoint: str, region: str) -> Any:
    import boto3

    return boto3.session.Session(region_name=region).client("kms", endpoint_url=endpoint)


def _call(operation: str, func: Any, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    from reference_enclave.kms.client import client_error

    try:
        return func(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise client_error(exc, operation) from None


def _endpoint_options(func: Any) -> Any:
    func = click.option("--region", default="us-east-1", show_default=True, help="Signing region.")(
        func
    )
    func = click.option(
        "--endpoint",
        required=True,
        metavar="URL",
        help="KMS endpoint (as printed by 'kms serve'); credentials from the usual AWS variables.",
    )(func)
    return func


def _policy_text(path: Path) -> str:
    try:
        return read_bytes(path, limit=32 * 1024).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: policy is not UTF-8 text") from None


@kms_group.command(name="create-key")
@_endpoint_options
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Key policy JSON (default: the account root may do everything).",
)
@click.option("--description", default="", help="Key description.")
@json_option
def create_key(
    endpoint: str, region: str, policy_path: Path | None, description: str, as_json: bool
) -> None:
    """Create a symmetric key; prints its ARN.

    \b
    Example:
      AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \\
        enclave-audit kms create-key --endpoint http://127.0.0.1:8000 --policy policy.json
    """
    kwargs: dict[str, Any] = {"Description": description}
    if policy_path is not None:
        kwargs["Policy"] = _policy_text(policy_path)
    client = _client(endpoint, region)
    meta = _call("CreateKey", client.create_key, **kwargs)["KeyMetadata"]
    if as_json:
        emit_json({"KeyId": meta["KeyId"], "Arn": meta["Arn"]}, schema="enclave-audit/kms-key")
    else:
        out_console.print(meta["Arn"])


@kms_group.command(name="get-policy")
@_endpoint_options
@click.argument("key_id")
def get_policy(endpoint: str, region: str, key_id: str) -> None:
    """Print a key's policy (JSON) on stdout.

    \b
    Example:
      enclave-audit kms get-policy --endpoint http://127.0.0.1:8000 1234abcd-...
    """
    client = _client(endpoint, region)
    policy = _call("GetKeyPolicy", client.get_key_policy, KeyId=key_id, PolicyName="default")
    sys.stdout.write(policy["Policy"].rstrip("\n") + "\n")


@kms_group.command(name="put-policy")
@_endpoint_options
@click.argument("key_id")
@click.argument("policy_path", type=input_path())
def put_policy(endpoint: str, region: str, key_id: str, policy_path: Path) -> None:
    """Replace a key's policy with POLICY_PATH (validated by the KMS).

    \b
    Example:
      enclave-audit kms put-policy --endpoint http://127.0.0.1:8000 1234abcd-... policy.json
    """
    client = _client(endpoint, region)
    _call(
        "PutKeyPolicy",
        client.put_key_policy,
        KeyId=key_id,
        PolicyName="default",
        Policy=_policy_text(policy_path),
    )
    info(f"policy of {key_id} replaced")


@kms_group.command(name="check-policy")
@click.argument("policy_path", type=input_path())
@json_option
def check_policy(policy_path: Path, as_json: bool) -> None:
    """Validate a key policy offline as the reference KMS would.

    \b
    Example:
      enclave-audit kms check-policy policy.json
    """
    from reference_enclave.kms.errors import KmsApiError
    from reference_enclave.kms.policy import parse_policy

    try:
        policy = parse_policy(_policy_text(policy_path))
    except KmsApiError as exc:
        raise InvalidInput(f"{policy_path}: {exc.api_message}") from None
    if as_json:
        emit_json(
            {"path": str(policy_path), "valid": True, "statements": len(policy.statements)},
            schema="enclave-audit/kms-policy-check",
        )
    else:
        out_console.print(f"{policy_path}: valid key policy, {len(policy.statements)} statement(s)")
