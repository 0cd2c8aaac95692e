"""A tap that records every relayed byte, per channel and direction."""

from __future__ import annotations

import threading
from pathlib import Path


class Capture:
    """Appends relayed chunks to ``DIR/<channel>.<direction>.bin``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def tap(self, channel: str, direction: str) -> _Tap:
        return _Tap(self, self.directory / f"{channel}.{direction}.bin")

    def write(self, path: Path, chunk: bytes) -> None:
        with self._lock, open(path, "ab") as fh:
            fh.write(chunk)

    def all_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.directory.glob("*.bin")))


class _Tap:
    def __init__(self, capture: Capture, path: Path) -> None:
        self._capture = capture
        self._path = path

    def __call__(self, chunk: bytes) -> None:
        self._capture.write(self._path, chunk)
