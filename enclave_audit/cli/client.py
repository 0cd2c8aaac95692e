"""``enclave-audit client ask``: attest the enclave, then ask it over HPKE."""

from __future__ import annotations

from pathlib import Path

import click

from enclave_audit.cli._common import emit_json, err_console, json_option, out_console


@click.group(name="client")
def client_group() -> None:
    """Talk to an attested enclave: nothing is sent before its attestation verifies.

    \b
    Example:
      enclave-audit client ask --endpoint http://127.0.0.1:8080 \\
          --expect expected-measurements.json --root sim-ca/root.pem \\
          "What is the capital of France?"
    """


@client_group.command(name="ask")
@click.argument("prompt")
@click.option("--endpoint", required=True, metavar="URL", help="The host proxy (http://HOST:PORT).")
@click.option(
    "--expect",
    "expect_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Expected measurements JSON (PCR0/1/2 and the model's PCR16), or a signed VSA bundle.",
)
@click.option(
    "--root",
    "root_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trust this attestation root (PEM) instead of AWS's; repeatable.",
)
@click.option(
    "--vsa-key",
    "vsa_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="(--expect VSA) public key allowed to sign the VSA; repeatable.",
)
@click.option("--vsa-verifier-id", metavar="URI", help="(--expect VSA) required verifier.id.")
@click.option(
    "--model-sha256",
    metavar="HEX",
    help="(--expect VSA) SHA-256 of the model the enclave must serve (gives PCR16).",
)
@click.option("--max-tokens", type=click.IntRange(1, 512), default=48, show_default=True)
@click.option(
    "--max-age",
    type=click.FloatRange(min=1),
    default=300,
    show_default=True,
    metavar="SECONDS",
    help="Refuse attestation documents older than this.",
)
@json_option
def ask_command(
    prompt: str,
    endpoint: str,
    expect_path: Path,
    root_paths: tuple[Path, ...],
    vsa_keys: tuple[Path, ...],
    vsa_verifier_id: str | None,
    model_sha256: str | None,
    max_tokens: int,
    max_age: float,
    as_json: bool,
) -> None:
    """Verify the enclave (chain, PCRs, model PCR16, nonce), encrypt PROMPT to it, print the answer.

    Exits 52 when the enclave's attestation or measurements are refused.

    \b
    Example:
      enclave-audit client ask --endpoint http://127.0.0.1:8080 \\
          --expect expected-measurements.json --root sim-ca/root.pem \\
          "What is the capital of France?"
    """
    import datetime as dt

    from enclave_audit.model.digests import parse_hex
    from reference_enclave.client import ask, load_expectation
    from reference_enclave.client.ask import load_roots

    expectation = load_expectation(
        expect_path,
        vsa_keys=list(vsa_keys),
        verifier_id=vsa_verifier_id,
        model_sha256=parse_hex(model_sha256, what="--model-sha256") if model_sha256 else None,
    )
    roots = load_roots(list(root_paths)) if root_paths else None
    result = ask(
        endpoint,
        prompt,
        expectation=expectation,
        roots=roots,
        max_tokens=max_tokens,
        max_age=dt.timedelta(seconds=max_age),
    )
    if as_json:
        emit_json(result)
        return
    err_console.print(
        f"attested {result.module_id} under {result.root_name} "
        f"({', '.join(result.verified_pcrs)} as expected, nonce fresh)"
    )
    out_console.print(result.answer)
