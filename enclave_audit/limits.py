"""Resource budgets for reading untrusted archives: decompressed bytes and bytes in memory.

A comparison or an audit gets one :class:`Limits` (from its command-line flags) and one
:class:`ByteBudget` for decompression, shared by every reader it opens; every
decompressing reader checks the budget before it inflates more and charges what it
produced, and raises :class:`LimitExceeded` once the budget is spent.  A limit that is
hit is never a pass: the caller records it and its verdict becomes INCONCLUSIVE, with a
message naming the limit and the flag that raises it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from enclave_audit.errors import InvalidInput

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

#: the flags that raise each limit (named in every message about it)
DECOMPRESSED_FLAG = "--max-decompressed"
MEMORY_FLAG = "--max-memory"

DEFAULT_DECOMPRESSED = 1 * GIB
DEFAULT_MEMORY = 64 * MIB


def human(n: int) -> str:
    """``1073741824`` -> ``1 GiB`` (exact units when they divide, else bytes)."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class Limits:
    """How much one run may decompress in all, and hold in memory for one item."""

    decompressed: int = DEFAULT_DECOMPRESSED
    memory: int = DEFAULT_MEMORY

    def decompression_budget(self) -> ByteBudget:
        return ByteBudget(self.decompressed, "decompressed bytes", DECOMPRESSED_FLAG)


class LimitExceeded(InvalidInput):
    """A budget was spent: what was being read, the limit, and the flag that raises it."""

    def __init__(self, where: str, what: str, limit: int, flag: str) -> None:
        self.where = where
        self.limit = limit
        self.flag = flag
        super().__init__(f"{where}: {what} limit of {human(limit)} reached (raise it with {flag})")


def memory_limit(where: str, size: int, limit: int) -> LimitExceeded:
    """The error for an item of ``size`` bytes that would have to be held in memory."""
    return LimitExceeded(where, f"{size}-byte item exceeds the in-memory", limit, MEMORY_FLAG)


@dataclass
class ByteBudget:
    """A running count of bytes against a limit (shared by every stream of one run)."""

    limit: int
    what: str
    flag: str
    used: int = 0

    def check(self, where: str) -> None:
        """Refuse to start more work once the budget is spent."""
        if self.used > self.limit:
            raise LimitExceeded(where, self.what, self.limit, self.flag)

    def charge(self, n: int, where: str) -> None:
        self.used += n
        self.check(where)

    @property
    def spent(self) -> bool:
        return self.used > self.limit


_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": GIB * KIB}


def parse_size(text: str) -> int:
    """``512M``, ``2GiB``, ``1g``, ``65536`` -> bytes (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 512M, 2G, 65536)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


F = TypeVar("F", bound=Callable[..., Any])


class ByteSize(click.ParamType[int, str]):
    """A click parameter for sizes: ``512M``, ``2G``, ``65536``."""

    name = "size"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            size = parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if size <= 0:
            self.fail("must be positive", param, ctx)
        return size


def limit_options(func: F) -> F:
    """Add ``--max-decompressed`` and ``--max-memory`` to a click command."""
    func = click.option(
        MEMORY_FLAG,
        "max_memory",
        type=ByteSize(),
        default=human(DEFAULT_MEMORY).replace(" ", ""),
        show_default=True,
        help="Largest single item (member, ELF, decompressed section) held in memory;"
        " larger ones are streamed or, where they cannot be, reported as not checked.",
    )(func)
    func = click.option(
        DECOMPRESSED_FLAG,
        "max_decompressed",
        type=ByteSize(),
        default=human(DEFAULT_DECOMPRESSED).replace(" ", ""),
        show_default=True,
        help="Bytes this run may decompress in all (gzip, xz, zip... members, nested"
        " included); past it the result is INCONCLUSIVE.",
    )(func)
    return func
