"""Options and output helpers shared by the verbs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

#: human output, logs and progress go to stderr; stdout carries results.
err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False, soft_wrap=True)


def json_option(func: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."
    )(func)


def emit_json(data: Any) -> None:
    """Write a JSON document (a model or plain data) to stdout."""
    from enclave_audit.strictjson import dumps_model, json_safe

    if isinstance(data, BaseModel):
        text = dumps_model(data, indent=2)
    else:
        text = json.dumps(json_safe(data), indent=2)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {message}")


def info(message: str) -> None:
    err_console.print(message)
