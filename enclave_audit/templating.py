"""The jinja2 environment of every HTML and Markdown report (audit report and diff).

Untrusted strings are data in both formats: every printed value goes through
:func:`as_data` (control, bidi and zero-width characters made visible); HTML is
autoescaped; Markdown values go through the ``md`` filter (:func:`md_escape`: one line,
no markup, no HTML) and code blocks through ``fence`` (:func:`md_fence`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from enclave_audit.output import visible, visible_lines

if TYPE_CHECKING:
    import jinja2

#: characters that would start Markdown markup, an HTML tag or break a table cell
_MD_SPECIAL = ("\\", "`", "*", "_", "[", "]", "<", ">", "|", "#", "!")


def md_escape(value: object) -> str:
    """An untrusted value inside Markdown: one line, no markup, no HTML, shown as data."""
    text = visible(value)
    for ch in _MD_SPECIAL:
        text = text.replace(ch, "\\" + ch)
    return text


def md_fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text`` (it cannot close early)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def as_data(value: object) -> object:
    """Every value a template prints: control and bidi characters made visible.

    Markup (a macro's output, already built from finalized values) passes unchanged.
    """
    from markupsafe import Markup

    if isinstance(value, str) and not isinstance(value, Markup):
        return visible_lines(value)
    return value


def environment(templates: Path, *, autoescape: bool, compact: bool) -> jinja2.Environment:
    """Templates from ``templates``: StrictUndefined, every value finalized as data.

    ``compact``: block tags take their line with them (``trim_blocks``/``lstrip_blocks``)
    and the template's last newline is dropped (the diff's templates are written so);
    otherwise the template's text is kept as written (the audit report's).
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        # HTML is autoescaped; Markdown escapes through the |md filter instead
        autoescape=autoescape,  # noqa: S701
        undefined=jinja2.StrictUndefined,
        trim_blocks=compact,
        lstrip_blocks=compact,
        keep_trailing_newline=not compact,
        finalize=as_data,
    )
    env.filters["md"] = md_escape
    env.filters["md_block"] = visible_lines
    env.filters["fence"] = md_fence
    return env
