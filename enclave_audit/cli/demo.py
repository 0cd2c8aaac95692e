"""``enclave-audit demo``: the end-to-end confidential-inference demonstration."""

from __future__ import annotations

from pathlib import Path

import click

from enclave_audit.cli._common import (
    emit_json,
    err_console,
    info,
    json_option,
    out_console,
    require_extra,
)


def _say(message: str) -> None:
    err_console.print(message, markup=False, highlight=False)


@click.command(name="demo")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-out"),
    show_default=True,
    help="Where the demo writes everything.",
)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Use this already built reference image instead of building (enclave-audit build).",
)
@click.option("--skip-negative", is_flag=True, help="Do not run the tampered-image path.")
@click.option(
    "--accelerator",
    is_flag=True,
    help="Run the model's matrix products on the attested accelerator (GPU bridge).",
)
@json_option
def demo(
    output: Path, image: Path | None, skip_negative: bool, accelerator: bool, as_json: bool
) -> None:
    """Build the reference image, release its model key through KMS, ask it a question.

    Builds the image, starts the reference KMS and the host proxy, encrypts the
    SmolLM2 model, binds the key policy to the image's PCRs, launches the image
    (chroot simulation; needs root), asks "What is the capital of France?" through
    the attested HPKE client, then shows an image with one changed byte refused by
    KMS and by the client. Everything started is stopped on every exit path.

    \b
    Example:
      sudo enclave-audit demo -o demo-out/
      sudo enclave-audit demo -o demo-out/ --image out/enclave.eif
      sudo enclave-audit demo -o demo-out/ --accelerator
    """
    require_extra("runtime")
    from enclave_audit.progress import RichProgress
    from reference_enclave.demo import build_demo_image, run_demo

    with RichProgress() as progress:

        def build(env: dict[str, str]) -> Path:
            if image is not None:
                return image  # its /env must pin the model; the enclave refuses any other
            return build_demo_image(env, progress=progress)

        report = run_demo(
            output,
            build=build,
            say=_say,
            negative=not skip_negative,
            accelerator=accelerator,
        )
    if as_json:
        emit_json(report)
        return
    out_console.print(f"Q: {report.question}")
    out_console.print(f"A: {report.answer}")
    info(f"outputs and report: {report.outputs} (demo-report.json)")
