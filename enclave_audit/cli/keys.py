"""``enclave-audit keys``: signing key pairs for key-based attestations."""

from __future__ import annotations

import os
from pathlib import Path

import click

from enclave_audit.cli._common import emit_json, info, json_option, out_console
from enclave_audit.errors import KeyFileError
from verifier.attest.keys import KeyType, generate_key_pair


@click.group("keys")
def keys_group() -> None:
    """Generate signing keys for `enclave-audit attest --key file:...`.

    \b
    Example:
      enclave-audit keys generate --type ed25519 --prefix keys/release
    """


@keys_group.command("generate")
@click.option(
    "--type",
    "key_type",
    type=click.Choice([t.value for t in KeyType]),
    default=KeyType.ECDSA_P256.value,
    show_default=True,
    help="Key algorithm.",
)
@click.option(
    "--prefix",
    "prefix",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Writes PREFIX.key (private, 0600) and PREFIX.pub (public, PEM).",
)
@click.option(
    "-o",
    "--output",
    "old_prefix",
    hidden=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Old spelling of --prefix.",
)
@click.option(
    "--passphrase-env",
    metavar="VAR",
    help="Encrypt the private key with the passphrase in environment variable VAR.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing key pair.")
@json_option
def generate(
    key_type: str,
    prefix: Path | None,
    old_prefix: Path | None,
    passphrase_env: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Generate an ECDSA P-256 or Ed25519 key pair.

    The private key is PKCS#8 PEM, created with mode 0600 and renamed into
    place atomically; it is encrypted when --passphrase-env names a variable
    (sign with it by setting ENCLAVE_AUDIT_KEY_PASSPHRASE).

    \b
    Example:
      enclave-audit keys generate --type ecdsa-p256 --prefix keys/release
    """
    if (prefix is None) == (old_prefix is None):
        raise click.UsageError("give --prefix PATH (keys go to PATH.key and PATH.pub)")
    prefix = prefix or old_prefix
    assert prefix is not None
    passphrase: bytes | None = None
    if passphrase_env:
        value = os.environ.get(passphrase_env)
        if not value:
            raise KeyFileError(f"--passphrase-env {passphrase_env}: variable is unset or empty")
        passphrase = value.encode()
    files = generate_key_pair(KeyType(key_type), prefix, passphrase=passphrase, overwrite=force)
    if as_json:
        emit_json(
            {
                "private_key": str(files.private),
                "public_key": str(files.public),
                "type": files.key_type.value,
                "fingerprint": files.fingerprint,
                "hint": files.hint,
                "encrypted": passphrase is not None,
            },
            schema="enclave-audit/keys",
        )
        return
    out_console.print(f"private key: {files.private} (0600{', encrypted' if passphrase else ''})")
    out_console.print(f"public key:  {files.public}")
    out_console.print(f"fingerprint: {files.fingerprint}")
    if passphrase is None:
        info("note: the private key is not encrypted; keep it out of the repository")
