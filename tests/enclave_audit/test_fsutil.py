"""fsutil: early writeback keeps the bytes exact and starts the flush of each written range."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enclave_audit import fsutil
from enclave_audit.fsutil import EarlyWriteback, atomic_write, prune_cache, touch_entry


def test_early_writeback_writes_exactly_and_hints_each_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int, int]] = []
    real = fsutil._sync_file_range()
    assert real is not None, "Linux libc has sync_file_range"

    def recording(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append((offset, length, flags))
        return real(fd, offset, length, flags)  # the real call: it must succeed here

    monkeypatch.setattr(fsutil, "_sync_file_range", lambda: recording)
    chunks = [os.urandom(n) for n in (3000, 5000, 100, 9000, 1)]
    with atomic_write(tmp_path / "out.bin") as raw:
        sink = EarlyWriteback(raw, every=4096)
        for chunk in chunks:
            assert sink.write(chunk) == len(chunk)
    assert (tmp_path / "out.bin").read_bytes() == b"".join(chunks)
    # one hint per >= 4096 new bytes, ranges back to back from 0, the tail left to fsync
    assert calls == [(0, 8000, 2), (8000, 9100, 2)]


def test_early_writeback_stops_hinting_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def failing(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append(offset)
        return -1

    monkeypatch.setattr(fsutil, "_sync_file_range", lambda: failing)
    with atomic_write(tmp_path / "out.bin") as raw:
        sink = EarlyWriteback(raw, every=10)
        for _ in range(5):
            sink.write(b"x" * 20)
    assert calls == [0]
    assert (tmp_path / "out.bin").read_bytes() == b"x" * 100


def test_prune_cache_keeps_the_most_recently_used_entries(tmp_path: Path) -> None:
    for number in range(5):
        entry = tmp_path / f"e{number}"
        entry.mkdir()
        (entry / "record.json").write_text("{}")
        os.utime(entry, (1000 + number, 1000 + number))
    (tmp_path / ".e9.partial").mkdir()  # entries being written are never pruned
    (tmp_path / "lock-scratch").mkdir()  # nor scratch directories without the marker
    touch_entry(tmp_path / "e0")  # a hit on the oldest entry makes it the newest
    prune_cache(tmp_path, keep=2, marker="record.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".e9.partial", "e0", "e4", "lock-scratch"]
