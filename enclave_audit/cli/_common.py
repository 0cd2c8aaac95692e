"""Options and output helpers shared by the verbs: the CLI's flag conventions in one place.

Conventions (README "Flags" says the same; new verbs follow them):

* ``-o/--output PATH``: where the verb writes its result; a directory for verbs that
  write several files (build, verify, repro-test, ...), a file otherwise.  ``-o -``
  writes a file result to stdout.
* ``--json``: the result as one JSON document on stdout, also when the verb fails (then
  an ``enclave-audit/error`` document); logs, progress and notes go to stderr.
* ``--format F``: the rendering of the result (text, json, html, markdown, sarif, ...).
* ``--key KEY``: a key, as ``file:PATH`` or a plain ``PATH``, when signing and verifying
  (``sigstore:`` signs keyless).
* ``--at TIME``: the evaluation time (``now``, ``document`` where a document has one,
  or ISO 8601; UTC when no offset is given).
* ``-`` wherever an input file is read: standard input.
* ``-q/--quiet``: no progress bars, stage lines or notes (warnings and errors stay).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from enclave_audit.output import visible

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

_consoles: dict[str, Console] = {}
_json_state = {"requested": False, "written": False}


def _console(name: str) -> Console:
    console = _consoles.get(name)
    if console is None:
        from enclave_audit.output import make_console

        console = _consoles[name] = make_console(stderr=name == "err")
    return console


class _LazyConsole:
    """Creates the rich console on first use (verbs that never print do not import rich)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(_console(self._name), attr)


#: human output, logs and progress go to stderr; stdout carries results.
err_console: Any = _LazyConsole("err")
out_console: Any = _LazyConsole("out")


def reset_consoles() -> None:
    """Forget the consoles (tests that swap sys.stdout/sys.stderr between runs)."""
    _consoles.clear()
    _json_state.update(requested=False, written=False)


def note_json(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Option callback: JSON goes to stdout (a flag that is set, or the value ``-``)."""
    if value is True or value == "-":
        _json_state["requested"] = True
    return value


def json_option(func: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        callback=note_json,
        help="Print the result as JSON on stdout (an error document on failure).",
    )(func)


def json_requested() -> bool:
    return _json_state["requested"]


def json_written() -> bool:
    return _json_state["written"]


_LEGACY_LABEL = re.compile(
    r"^(?:https://enclave-audit\.dev/schemas/|enclave-audit/)([a-z0-9-]+)/v([0-9]+)$"
)


def labelled(data: Any, schema: str | None = None) -> Any:
    """One JSON convention: ``schema`` (``enclave-audit/NAME``) and ``schema_version`` first.

    ``schema`` labels a plain dict; documents that carry an older label
    (``enclave-audit/NAME/v1`` or a URL, or the name in ``schema_version``) are
    relabelled, so every document on stdout follows the convention.
    """
    if not isinstance(data, dict):
        return data
    body = dict(data)
    legacy = body.pop("schema_", None)  # a model without the "schema" alias
    if isinstance(legacy, str) and "schema" not in body:
        body["schema"] = legacy
    name, version = schema, 1
    for key in ("schema", "schema_version"):
        value = body.get(key)
        if isinstance(value, str):
            match = _LEGACY_LABEL.match(value)
            if match is not None:
                name, version = f"enclave-audit/{match.group(1)}", int(match.group(2))
            elif key == "schema" and value.startswith("enclave-audit/"):
                name = value
                if isinstance(body.get("schema_version"), int):
                    version = body["schema_version"]
    if name is None:
        return body
    body.pop("schema", None)
    body.pop("schema_version", None)
    return {"schema": name, "schema_version": version, **body}


def json_document(data: Any, *, schema: str | None = None) -> str:
    """The JSON text :func:`emit_json` writes for ``data``, labelled (see labelled()).

    For verbs that must have their whole output in memory before the first effect
    (the gate).  Names that came from the file system or an archive as undecodable
    bytes (lone surrogates) are written out visibly (``\\xNN``), never as a lone
    ``\\udcNN`` escape that a strict reader refuses.
    """
    import json

    from enclave_runtime.strictjson import json_safe

    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json", by_alias=True)
    elif hasattr(data, "json_dict"):  # the plain (dataclass) attestation types
        data = data.json_dict()
    data = labelled(json_safe(data), schema)
    # ASCII-only: control characters and bidi marks are \u escapes
    return json.dumps(data, indent=2, ensure_ascii=True) + "\n"


def emit_json(data: Any, *, schema: str | None = None) -> None:
    """Write a JSON document (a model or plain data) to stdout (see json_document())."""
    write_json_text(json_document(data, schema=schema))


def write_json_text(text: str) -> None:
    """Write a JSON document made by :func:`json_document` to stdout."""
    sys.stdout.write(text)
    sys.stdout.flush()
    _json_state["written"] = True


def mark_json_written() -> None:
    """A verb wrote its JSON result itself (no error document after it)."""
    _json_state["written"] = True


ERROR_SCHEMA = "enclave-audit/error"


def error_document(exit_code: int, error_class: str, message: str) -> dict[str, Any]:
    """The JSON written for ``--json`` when a verb fails before writing its own result."""
    return {
        "schema": ERROR_SCHEMA,
        "schema_version": 1,
        "ok": False,
        "exit_code": exit_code,
        "error": {"class": error_class, "message": message},
    }


def warn(message: str) -> None:
    err_console.print(_styled(("warning:", "bold yellow"), " " + message), soft_wrap=True)


def info(message: str) -> None:
    from enclave_audit.progress import is_quiet

    if not is_quiet():
        err_console.print(message, soft_wrap=True)


def _styled(*parts: str | tuple[str, str]) -> Any:
    from enclave_audit.output import styled

    return styled(*parts)


styled = _styled


# --- inputs ---------------------------------------------------------------------------

STDIN_LIMIT = 4 << 30


class InputPath(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """A readable input file; ``-`` is standard input, spooled to a private temp file.

    Verbs open inputs by path (an EIF is read at offsets), so standard input is copied
    once into a 0600 file in a private directory that is removed when the command ends.
    Only one argument per command may be ``-``.
    """

    name = "path"

    def __init__(self, *, dir_okay: bool = False) -> None:
        self.dir_okay = dir_okay

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        if isinstance(value, Path):
            return value
        text = str(value)
        if text != "-":
            path = Path(text)
            if path.is_dir() and not self.dir_okay:
                self.fail(f"{text}: is a directory, expected a file", param, ctx)
            return path
        if ctx is None:
            self.fail("'-' (standard input) needs a command context", param, ctx)
        root = ctx.find_root()
        meta = root.meta.setdefault("enclave_audit.stdin", {})
        if meta.get("used"):
            self.fail("standard input ('-') can be given for one input only", param, ctx)
        meta["used"] = True
        return _spool_stdin(root)


def _spool_stdin(ctx: click.Context) -> Path:
    import shutil
    import tempfile

    from enclave_audit.errors import InvalidInput

    tmp = Path(tempfile.mkdtemp(prefix="enclave-audit-stdin-"))
    ctx.call_on_close(lambda: shutil.rmtree(tmp, ignore_errors=True))
    path = tmp / "stdin"
    copied = 0
    with path.open("wb") as out:
        source = sys.stdin.buffer
        while chunk := source.read(1 << 20):
            copied += len(chunk)
            if copied > STDIN_LIMIT:
                raise InvalidInput(f"standard input: more than {STDIN_LIMIT} bytes")
            out.write(chunk)
    return path


def input_path(*, dir_okay: bool = False) -> InputPath:
    """An input file (or, with ``dir_okay``, a directory); ``-`` is standard input."""
    return InputPath(dir_okay=dir_okay)


def output_option(
    help_text: str, *, directory: bool = False, required: bool = False
) -> Callable[[F], F]:
    """``-o/--output``: the verb's result (see the module docstring)."""
    return click.option(
        "-o",
        "--output",
        "output",
        type=click.Path(path_type=Path, file_okay=not directory, dir_okay=directory),
        required=required,
        help=help_text,
    )


# --- the evaluation time ----------------------------------------------------------------


def at_option(*, document: bool, help_text: str | None = None) -> Callable[[F], F]:
    """``--at now|document|ISO8601``: the one name for the evaluation time."""
    choices = "now|document|ISO8601" if document else "now|ISO8601"
    return click.option(
        "--at",
        "at_text",
        default="now",
        show_default=True,
        metavar=choices,
        help=help_text
        or "Evaluate at this time: now"
        + (", the document's own timestamp (archived documents)" if document else "")
        + " or an ISO 8601 time (UTC if no offset).",
    )


def parse_time(text: str, *, flag: str = "--at") -> datetime:
    """An ISO 8601 time (``Z`` or an offset; UTC when none)."""
    from enclave_audit.errors import InvalidInput

    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{flag}: expected now or an ISO 8601 time such as 2025-01-31T12:00:00Z,"
            f" got {visible(text)!s}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def require_extra(extra: str) -> None:
    """Refuse (exit 5, with the install hint) before any work when an extra is missing.

    For verbs that would otherwise import an optional dependency only after minutes of
    work (the demo builds the image before it starts the KMS client).
    """
    from enclave_audit.errors import EnvironmentProblem
    from enclave_audit.extras import install_hint, missing_from

    missing = missing_from(extra)
    if missing:
        raise EnvironmentProblem(
            f"this verb needs the Python package(s) {', '.join(missing)}, which are not"
            f" installed (they come with the [{extra}] extra)",
            hint=install_hint([extra]),
        )
