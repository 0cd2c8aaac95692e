"""Progress reporting: a protocol with a no-op default and a rich implementation."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)


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


class RichProgress:
    """Progress bars on stderr (only when stderr is a terminal, unless forced)."""

    def __init__(self, *, bytes_mode: bool = True, force: bool = False) -> None:
        console = Console(stderr=True)
        columns = [TextColumn("{task.description}"), BarColumn()]
        if bytes_mode:
            columns += [DownloadColumn(), TransferSpeedColumn()]
        columns.append(TimeElapsedColumn())
        self._enabled = force or sys.stderr.isatty()
        self._progress = Progress(
            *columns, console=console, transient=True, disable=not self._enabled
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def start(self, description: str, total: int | None = None) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)

    def done(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
