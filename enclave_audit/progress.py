"""Progress reporting: a protocol, a no-op default, and the CLI's implementation.

On a terminal the CLI shows a rich progress bar on stderr that is removed when the
work ends, so only the final output stays.  Off a terminal (a pipe, a CI log) it
prints plain stage lines with the elapsed time instead, one when a stage starts and
one when it ends, plus a line every :data:`HEARTBEAT_S` seconds for a long stage:

    [+   0.4s] kernel: unpacking source
    [+  12.9s] kernel: unpacking source: done in 12.5 s

``--quiet`` (or ``ENCLAVE_AUDIT_QUIET=1``) silences both.  Descriptions are shown as
data (see :mod:`enclave_audit.output`): a cpio member name cannot inject markup or
control sequences.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import IO, Any, Protocol

from enclave_audit.output import is_terminal, visible

#: seconds between "still running" lines of a long stage off a terminal
HEARTBEAT_S = 30.0

_START = time.monotonic()
_state = {"quiet": bool(os.environ.get("ENCLAVE_AUDIT_QUIET"))}


def set_quiet(value: bool) -> None:
    """Silence (or restore) progress bars, stage lines and notes for this process."""
    _state["quiet"] = value


def is_quiet() -> bool:
    return _state["quiet"]


class ProgressSink(Protocol):
    def start(self, description: str, total: int | None = None) -> None: ...
    def advance(self, amount: int = 1) -> None: ...
    def done(self) -> None: ...


class NullProgress:
    """Reports nothing; the default for library calls."""

    def start(self, description: str, total: int | None = None) -> None:
        return None

    def advance(self, amount: int = 1) -> None:
        return None

    def done(self) -> None:
        return None


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


class StageLines:
    """Plain stage lines with elapsed times, for stderr that is not a terminal."""

    def __init__(self, stream: IO[str] | None = None, *, bytes_mode: bool = True) -> None:
        self._stream = stream
        self._bytes = bytes_mode
        self._stage: str | None = None
        self._stage_start = 0.0
        self._last_line = 0.0
        self._total: int | None = None
        self._done_amount = 0

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        elapsed = time.monotonic() - _START
        try:
            stream.write(f"[+{elapsed:7.1f}s] {text}\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not fail the work itself
        self._last_line = time.monotonic()

    def start(self, description: str, total: int | None = None) -> None:
        self.done()
        self._stage = visible(description)
        self._stage_start = time.monotonic()
        self._total = total
        self._done_amount = 0
        self._write(self._stage + (f" ({_size(total)})" if total and self._bytes else ""))

    def advance(self, amount: int = 1) -> None:
        self._done_amount += amount
        if self._stage is not None and time.monotonic() - self._last_line >= HEARTBEAT_S:
            seconds = time.monotonic() - self._stage_start
            if self._total:
                share = 100.0 * self._done_amount / self._total
                amount_text = (
                    f"{_size(self._done_amount)} of {_size(self._total)}"
                    if self._bytes
                    else f"{self._done_amount} of {self._total}"
                )
                self._write(f"{self._stage}: {share:.0f}% ({amount_text}), {seconds:.0f} s")
            else:
                self._write(f"{self._stage}: still running, {seconds:.0f} s")

    def done(self) -> None:
        if self._stage is not None:
            self._write(f"{self._stage}: done in {time.monotonic() - self._stage_start:.1f} s")
            self._stage = None

    def note(self, text: str) -> None:
        """A stage-less line (e.g. one rebuild of repro-test finished)."""
        self._write(visible(text))


class RichProgress:
    """The CLI's progress: a bar on a terminal, stage lines elsewhere, nothing if quiet.

    ``force`` draws the bar even when stderr is not a terminal (tests, recordings).
    """

    def __init__(self, *, bytes_mode: bool = True, force: bool = False) -> None:
        self._bar: Any = None
        self._lines: StageLines | None = None
        self._task: Any = None
        if _state["quiet"]:
            return
        if force or is_terminal(sys.stderr):
            self._bar = _make_bar(bytes_mode)
        else:
            self._lines = StageLines(bytes_mode=bytes_mode)

    def __enter__(self) -> RichProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._lines is not None:
            self._lines.done()

    def start(self, description: str, total: int | None = None) -> None:
        if self._bar is not None:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._task = self._bar.add_task(visible(description), total=total)
        elif self._lines is not None:
            self._lines.start(description, total)

    def advance(self, amount: int = 1) -> None:
        if self._bar is not None:
            if self._task is not None:
                self._bar.advance(self._task, amount)
        elif self._lines is not None:
            self._lines.advance(amount)

    def done(self) -> None:
        if self._bar is not None:
            if self._task is not None:
                self._bar.remove_task(self._task)
                self._task = None
        elif self._lines is not None:
            self._lines.done()

    def note(self, text: str) -> None:
        """One line about the work (printed above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.console.print(visible(text))
        elif self._lines is not None:
            self._lines.note(text)


def _make_bar(bytes_mode: bool) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    from enclave_audit.output import make_console

    columns: list[Any] = [TextColumn("{task.description}", markup=False), BarColumn()]
    if bytes_mode:
        columns += [DownloadColumn(), TransferSpeedColumn()]
    columns.append(TimeElapsedColumn())
    terminal = is_terminal(sys.stderr)
    console = make_console(
        stderr=True, width=None if terminal else 100, force_terminal=True, no_color=not terminal
    )
    return Progress(*columns, console=console, transient=True)
