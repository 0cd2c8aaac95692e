"""Strict JSON for untrusted input: one parser with the limits every reader needs.

``json.loads`` accepts things a security tool must not: a duplicated key (the last
value silently wins, so two readers can see two documents), ``NaN``/``Infinity``,
integers of any length (Python refuses to *print* more than 4,300 digits, so the
failure surfaces later, far from the input), nesting as deep as the C stack allows
and strings holding lone UTF-16 surrogates (they cannot be encoded back to UTF-8,
so a later write, database insert or log line fails).  :func:`loads` refuses each of
these with one error of the caller's class, naming the problem and where it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

#: longest integer literal accepted (a 64-bit value has 20 digits; sizes, sequence
#: numbers, limits and timestamps all fit)
MAX_INT_DIGITS = 40
#: longest number literal of any kind (floats with exponents included)
MAX_NUMBER_CHARS = 64
#: deepest nesting of arrays/objects accepted
MAX_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")

ErrorFactory = Callable[[str], Exception]


class _Refused(Exception):
    """Raised inside the json hooks; turned into the caller's error class."""


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in items:
        if key in out:
            raise _Refused(f"duplicate key {_shown(key)}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise _Refused(f"the constant {name} is not JSON")


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"the number {text[:20]} is out of range")
    return value


def _shown(key: str) -> str:
    return ascii(key[:40]) + ("..." if len(key) > 40 else "")


def _check_tree(value: Any, *, max_depth: int) -> None:
    """Depth and lone surrogates, iteratively (a recursive walk would hit the C stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise _Refused("a string holds a lone UTF-16 surrogate (not Unicode text)")
        elif isinstance(item, dict):
            if depth > max_depth:
                raise _Refused(f"nested deeper than {max_depth} levels")
            for key, child in item.items():
                if _SURROGATE.search(key):
                    raise _Refused("a key holds a lone UTF-16 surrogate (not Unicode text)")
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                raise _Refused(f"nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in item)


def loads(
    data: bytes | str,
    *,
    what: str,
    error: ErrorFactory,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Parse ``data`` strictly; any refusal raises ``error(f"{what}: ...")``.

    Refused: input that is not UTF-8, a byte-order mark, duplicate keys, NaN and
    Infinity, integers longer than :data:`MAX_INT_DIGITS` digits, number literals
    longer than :data:`MAX_NUMBER_CHARS`, nesting deeper than ``max_depth`` and
    strings or keys with lone surrogates.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{what}: not UTF-8 (byte {exc.start})") from None
    else:
        text = data
    if text.startswith("\ufeff"):
        raise error(f"{what}: starts with a byte-order mark")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_constant=_constant,
            parse_int=_int,
            parse_float=_float,
        )
        _check_tree(value, max_depth=max_depth)
    except _Refused as exc:
        raise error(f"{what}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise error(
            f"{what}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (RecursionError, MemoryError):
        raise error(f"{what}: nested too deeply") from None
    except ValueError as exc:  # any other limit of the json module
        raise error(f"{what}: not acceptable JSON ({exc})") from None
    return value


def loads_object(
    data: bytes | str, *, what: str, error: ErrorFactory, max_depth: int = MAX_DEPTH
) -> dict[str, Any]:
    """:func:`loads` for documents that must be a JSON object."""
    value = loads(data, what=what, error=error, max_depth=max_depth)
    if not isinstance(value, dict):
        raise error(f"{what}: expected a JSON object, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"


def contains_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def without_surrogates(text: str) -> str:
    """``text`` with each lone surrogate written out visibly, so it can be encoded as UTF-8.

    A file name that is not UTF-8 reaches Python as ``surrogateescape`` text
    (U+DC80..U+DCFF for each undecodable byte): such a byte becomes ``\\xNN``; any
    other lone surrogate becomes ``\\uNNNN``.  Text without surrogates is returned as is.
    """
    if not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(_visible, text)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def json_safe(value: Any) -> Any:
    """``value`` (JSON-shaped: dicts, lists, scalars) with every string and key made
    encodable (:func:`without_surrogates`), so that writing it as UTF-8 cannot fail on a
    name that came from the file system or an archive as undecodable bytes."""
    if isinstance(value, str):
        return without_surrogates(value)
    if isinstance(value, dict):
        return {without_surrogates(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def dumps_model(model: Any, *, indent: int | None = 2) -> str:
    """A pydantic model as JSON text (by alias), with undecodable names made visible."""
    try:
        return str(model.model_dump_json(indent=indent, by_alias=True))
    except ValueError:  # pydantic refuses lone surrogates: write them out visibly instead
        data = json_safe(model.model_dump(mode="json", by_alias=True))
        return json.dumps(data, indent=indent, ensure_ascii=False)
