"""A tap that records every relayed byte, per channel and direction."""

from __future__ import annotations

import os
import threading
from pathlib import Path


class Capture:
    """Appends relayed chunks to ``DIR/<channel>.<direction>.bin``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def tap(self, channel: str, direction: str) -> _Tap:
        return _Tap(self, self.directory / f"{channel}.{direction}.bin")

    def write(self, path: Path, chunk: bytes) -> None:
        # owner-only: relayed KMS requests carry SigV4 signatures (replayable for minutes)
        with self._lock:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "ab") as fh:
                fh.write(chunk)

    def all_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.directory.glob("*.bin")))


class _Tap:
    def __init__(self, capture: Capture, path: Path) -> None:
        self._capture = capture
        self._path = path

    def __call__(self, chunk: bytes) -> None:
        self._capture.write(self._path, chunk)
