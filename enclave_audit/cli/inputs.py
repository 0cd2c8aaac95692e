"""``enclave-audit inputs export|verify``: the input set of a build, for offline rebuilds."""

from __future__ import annotations

from pathlib import Path

import click

from enclave_audit.cli._common import emit_json, err_console, json_option

_file = click.Path(path_type=Path, dir_okay=False)


def inputs_option(func: click.decorators.FC) -> click.decorators.FC:
    """``--inputs DIR|FILE.tar`` (repeatable): input sets to resolve pinned inputs from."""
    return click.option(
        "--inputs",
        "inputs",
        multiple=True,
        type=click.Path(path_type=Path),
        metavar="DIR|FILE.tar",
        help="An input set (enclave-audit inputs export) to take pinned inputs from;"
        " checked against every pin. Repeatable.",
    )(func)


def debian_mirror_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--debian-mirror",
        "debian_mirrors",
        multiple=True,
        metavar="CANONICAL=URL",
        help="Fetch a spec mirror's files from another location (a local mirror or proxy);"
        " the image still names the canonical one. Repeatable.",
    )(func)


@click.group("inputs")
def inputs_group() -> None:
    """Export and check the pinned inputs of a build (for rebuilds without a network).

    \b
    Example:
      enclave-audit inputs export --manifest out/build-manifest.json -o inputs.tar
      enclave-audit verify --manifest out/build-manifest.json --inputs inputs.tar -o verify/
    """


@inputs_group.command("export")
@click.option("--manifest", "manifests", type=_file, multiple=True, required=True,
              help="build-manifest.json whose inputs are exported. Repeatable.")  # fmt: skip
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory, or FILE.tar, to write (atomically).",
)
@inputs_option
@debian_mirror_option
@json_option
def inputs_export(
    manifests: tuple[Path, ...],
    output: Path,
    inputs: tuple[Path, ...],
    debian_mirrors: tuple[str, ...],
    as_json: bool,
) -> None:
    """Write every external input of a manifest, content-addressed, with an index.

    The kernel source package, every locked .deb, every wheel and the model file,
    each under blobs/sha256/<digest>, listed in index.json. A later `build` or
    `verify` with --inputs needs no network.

    \b
    Example:
      enclave-audit inputs export --manifest out/build-manifest.json -o inputs.tar
      enclave-audit verify --manifest out/build-manifest.json --source . \\
          --inputs inputs.tar -o verify/
    """
    from builder.inputs.export import export_inputs
    from builder.inputs.resolver import parse_mirror_map
    from enclave_audit.progress import RichProgress

    with RichProgress(bytes_mode=False) as progress:
        exported = export_inputs(
            manifests,
            output,
            input_sets=inputs,
            mirror_map=parse_mirror_map(debian_mirrors),
            progress=progress,
        )
    count = len(exported.index.inputs)
    if as_json:
        emit_json(
            {
                "schema": "enclave-audit/inputs-export",
                "schema_version": 1,
                "output": str(exported.path),
                "inputs": count,
                "bytes": exported.size,
            }
        )
        return
    err_console.print(
        f"wrote {exported.path}: {count} inputs, {exported.size / 1e6:.1f} MB", markup=False
    )


@inputs_group.command("verify")
@click.argument("input_set", type=click.Path(path_type=Path), metavar="DIR|FILE.tar")
@click.option("--manifest", "manifests", type=_file, multiple=True,
              help="Also check that the set holds every input this manifest records.")  # fmt: skip
@json_option
def inputs_verify(input_set: Path, manifests: tuple[Path, ...], as_json: bool) -> None:
    """Check an input set: every file hashes to its name and the index lists exactly them.

    \b
    Example:
      enclave-audit inputs verify inputs.tar --manifest out/build-manifest.json
    """
    from builder.inputs.export import verify_inputs

    verified = verify_inputs(input_set, manifests=manifests)
    if as_json:
        emit_json(
            {
                "schema": "enclave-audit/inputs-verify",
                "schema_version": 1,
                "input_set": str(verified.path),
                "ok": True,
                "inputs": verified.blobs,
                "bytes": verified.bytes,
            }
        )
        return
    click.echo(f"ok: {verified.path}: {verified.blobs} inputs, {verified.bytes} bytes verified")
