"""The one output layer: untrusted strings are data on the terminal, off it nothing wraps.

Every string the CLI prints passes through here:

* :func:`visible` turns control and invisible-formatting characters (C0/C1 controls,
  ESC sequences such as clear-screen or an OSC window title, bidirectional overrides,
  zero-width characters, lone surrogates) into visible escapes like ``\\x1b`` or
  ``\\u202e``.  Library code and templates use it for any value read from an input.
* :class:`SafeConsole` is the only rich console the CLI uses.  It never interprets
  markup or emoji codes (``[link=...]`` in a module id prints as those characters),
  and it runs :func:`visible` over every text segment it renders, so a string that
  reaches it unescaped still cannot move the cursor, retitle the window or hide text.
  Styles come from ``style=`` arguments and :class:`rich.text.Text`, never from markup.
* Off a terminal (a pipe, a file, a CI log) the console is as wide as the longest line
  and soft-wraps nothing: a 96-digit PCR, a URL or a path is always on one line.

rich is imported only when a console is first used, so verbs that print plain lines
do not pay for it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

#: Characters that are never printed as themselves: C0 and C1 controls, DEL, the
#: Unicode line/paragraph separators, bidirectional embeddings/overrides/isolates,
#: zero-width and invisible formatting characters, interlinear annotation controls,
#: and lone surrogates (which a terminal cannot encode).
_UNSAFE_REST = (
    "\x7f-\x9f"
    "\u00ad\u061c\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb"
    "\ud800-\udfff"
)
_UNSAFE_RE = re.compile(f"[\x00-\x1f{_UNSAFE_REST}]")
#: the same, less tab and newline (layout inside multi-line text)
_UNSAFE_KEEP_LINES_RE = re.compile(f"[\x00-\x08\x0b-\x1f{_UNSAFE_REST}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

#: Width of a console that is not a terminal: wide enough that nothing folds.
UNBOUNDED_WIDTH = 1 << 20


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(value: object) -> str:
    """``value`` as one line of data: every unsafe character shown as an escape.

    Newlines and tabs become ``\\n`` and ``\\t`` too, so an untrusted value cannot
    start a line of its own (a forged ``PASS``) in a log.
    """
    return _UNSAFE_RE.sub(_escape, str(value))


def visible_lines(value: object) -> str:
    """Like :func:`visible`, but keeps newlines and tabs (multi-line untrusted text)."""
    return _UNSAFE_KEEP_LINES_RE.sub(_escape, str(value))


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _make_console_class() -> type[Console]:
    from rich.console import Console, ConsoleOptions, RenderableType
    from rich.segment import Segment
    from rich.text import Text

    class _SafeConsole(Console):
        """A rich console that renders every text segment through :func:`visible_lines`."""

        def render_str(self, text: str, **kwargs: Any) -> Text:
            # before rich's Text strips BEL/BS/CR: shown, not dropped
            return super().render_str(_UNSAFE_KEEP_LINES_RE.sub(_escape, text), **kwargs)

        def render(
            self, renderable: RenderableType, options: ConsoleOptions | None = None
        ) -> Iterable[Segment]:
            for segment in super().render(renderable, options):
                text = segment.text
                if not segment.control and text and _UNSAFE_KEEP_LINES_RE.search(text):
                    yield Segment(
                        _UNSAFE_KEEP_LINES_RE.sub(_escape, text), segment.style, segment.control
                    )
                else:
                    yield segment

    return _SafeConsole


_console_class: dict[str, type[Console]] = {}


def make_console(
    *, stderr: bool = False, file: IO[str] | None = None, width: int | None = None, **kw: Any
) -> Console:
    """A :class:`SafeConsole` on stdout, stderr or ``file``.

    Off a terminal it is :data:`UNBOUNDED_WIDTH` columns wide (unless ``width`` is given),
    soft-wraps and writes no colour or cursor codes.
    """
    if "safe" not in _console_class:
        _console_class["safe"] = _make_console_class()
    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    terminal = file is None and is_terminal(stream)
    if width is None and not terminal:
        width = UNBOUNDED_WIDTH
    options: dict[str, Any] = {
        "markup": False,
        "emoji": False,
        "highlight": False,
        "soft_wrap": not terminal,
        "width": width,
    }
    if file is not None:
        options["file"] = file
    else:
        options["stderr"] = stderr
    if not terminal and not os.environ.get("FORCE_COLOR"):
        options["no_color"] = True
        options["force_terminal"] = False
    options.update(kw)
    return _console_class["safe"](**options)


def styled(*parts: str | tuple[str, str]) -> Any:
    """A rich ``Text`` from plain strings and ``(text, style)`` pairs (no markup)."""
    from rich.text import Text

    return Text.assemble(*parts)


def text_cell(value: object, style: str = "") -> Any:
    """An untrusted value as a rich ``Text`` table cell (escaped, never markup)."""
    from rich.text import Text

    return Text(visible(value), style=style)


__all__ = [
    "UNBOUNDED_WIDTH",
    "is_terminal",
    "make_console",
    "styled",
    "text_cell",
    "visible",
    "visible_lines",
]


def columns(rows: Iterable[tuple[object, ...]], *, gap: int = 2) -> list[str]:
    """Rows of values as aligned plain-text lines; every value shown as data."""
    cells = [[visible(v) for v in row] for row in rows]
    if not cells:
        return []
    widths = [0] * max(len(r) for r in cells)
    for row in cells:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell))
    pad = " " * gap
    return [
        pad.join(cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row))
        for row in cells
    ]


def write_lines(lines: Iterable[str], *, stderr: bool = False, style: str | None = None) -> None:
    """Write already-escaped lines; styled (colour) only when the stream is a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    text = "".join(f"{line}\n" for line in lines)
    if style and is_terminal(stream):
        make_console(stderr=stderr).print(text, style=style, end="", soft_wrap=True)
        return
    stream.write(text)
    stream.flush()
