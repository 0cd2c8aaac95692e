"""Blobs, members, the Comparator and Container protocols, and the comparison context.

A :class:`Blob` is some content that can be streamed again and again (a file, a slice
of a file, bytes in memory, a decompressed stream); a :class:`Member` is a named entry
of a container with its metadata.  Comparators recognize blobs by magic bytes and turn
two of them into a :class:`~enclave_audit.model.difference.DiffNode`.

The :class:`CompareContext` carries every setting and the shared budgets; it is passed
in, never global.  Comparators reach the recursion only through the :class:`EngineApi`
protocol: no comparator imports the engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from enclave_audit.errors import InvalidInput
from enclave_audit.fsutil import open_input
from enclave_audit.limits import ByteBudget, Limits, memory_limit
from enclave_audit.model.difference import DiffNode, NodeKind, Side
from enclave_audit.progress import NullProgress, ProgressSink
from verifier.compare.evidence import Evidence

CHUNK = 1 << 20
HEAD_SIZE = 4096


class Unreadable(InvalidInput):
    """Content that cannot be read (a corrupt compressed stream, an unsupported segment):
    what it holds is unknown, so the comparison is incomplete."""


def read_full(fh: IO[bytes], n: int) -> bytes:
    """Read ``n`` bytes unless the stream ends first (streams may return short reads)."""
    data = fh.read(n)
    while data and len(data) < n:
        more = fh.read(n - len(data))
        if not more:
            break
        data += more
    return data


class Blob:
    """Re-readable content.  Subclasses implement :meth:`open` (and know their size when cheap)."""

    name: str

    def open(self) -> IO[bytes]:
        raise InvalidInput(f"{self.name}: content cannot be read")

    @property
    def size(self) -> int | None:
        return None

    def local_path(self) -> Path | None:
        """A file on disk holding exactly this content, if there is one."""
        return None

    def quick_equal(self, other: Blob) -> bool | None:
        """True when the content is known equal without reading it (same stored bytes
        behind a decompressor), None when only reading it can tell."""
        return None

    def head(self, n: int = HEAD_SIZE) -> bytes:
        cached = getattr(self, "_head", None)
        if isinstance(cached, bytes) and len(cached) >= n:
            return cached[:n]
        with self.open() as fh:
            data = fh.read(max(n, HEAD_SIZE))
        self._head = data
        return data[:n]

    def digest(self) -> str:
        """``sha256:<hex>`` of the content (streamed once, then cached)."""
        cached = getattr(self, "_digest", None)
        if isinstance(cached, str):
            return cached
        h = hashlib.sha256()
        total = 0
        with self.open() as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                total += len(chunk)
        self._digest = f"sha256:{h.hexdigest()}"
        self._known_size = total
        return self._digest

    def known_size(self) -> int | None:
        size = self.size
        if size is not None:
            return size
        known = getattr(self, "_known_size", None)
        return known if isinstance(known, int) else None

    def read_all(self, limit: int) -> bytes:
        """The whole content, refusing more than ``limit`` bytes (``--max-memory``)."""
        known = self.known_size()
        if known is not None and known > limit:
            raise memory_limit(self.name, known, limit)
        want = limit + 1 if known is None else known + 1  # read() preallocates
        with self.open() as fh:
            data = fh.read(want)
        if len(data) > limit:
            raise memory_limit(self.name, len(data), limit)
        return data


class BytesBlob(Blob):
    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data

    def open(self) -> IO[bytes]:
        return io.BytesIO(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def head(self, n: int = HEAD_SIZE) -> bytes:
        return self.data[:n]

    def read_all(self, limit: int) -> bytes:
        if len(self.data) > limit:
            raise memory_limit(self.name, len(self.data), limit)
        return self.data


class FileBlob(Blob):
    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name if name is not None else self.path.name
        try:
            self._size = self.path.stat().st_size
        except OSError as exc:
            raise InvalidInput(f"{self.path}: cannot stat: {exc.strerror or exc}") from None

    def open(self) -> IO[bytes]:
        return open_input(self.path)

    @property
    def size(self) -> int:
        return self._size

    def local_path(self) -> Path:
        return self.path


class _SliceReader(io.RawIOBase):
    """A read-only window [offset, offset+size) of a file."""

    def __init__(self, fh: io.FileIO, offset: int, size: int, owner: IO[bytes]) -> None:
        self._owner = owner  # the buffered file that owns ``fh`` (closing it closes fh)
        self._fh = fh
        self._start = offset
        self._size = size
        self._pos = 0
        fh.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        self._fh.seek(self._start + self._pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        n = self._fh.readinto(memoryview(buffer)[:want]) or 0
        self._pos += n
        return n

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._owner.close()
        super().close()


class SliceBlob(Blob):
    """A byte range of a file on disk (an EIF section)."""

    def __init__(self, path: Path, offset: int, size: int, name: str) -> None:
        self.path = path
        self.offset = offset
        self._size = size
        self.name = name

    def open(self) -> IO[bytes]:
        fh = open_input(self.path)
        raw = fh.raw if isinstance(fh, io.BufferedReader) else fh
        assert isinstance(raw, io.FileIO)
        return io.BufferedReader(_SliceReader(raw, self.offset, self._size, fh), CHUNK)

    @property
    def size(self) -> int:
        return self._size


class StreamBlob(Blob):
    """Content produced by a function each time (a decompressed stream)."""

    def __init__(self, name: str, opener: Callable[[], IO[bytes]], size: int | None = None) -> None:
        self.name = name
        self._opener = opener
        self._size = size

    def open(self) -> IO[bytes]:
        return self._opener()

    @property
    def size(self) -> int | None:
        return self._size


class SpooledBlob(Blob):
    """Decompressed content, produced once into a file in the work directory and read
    from there afterwards: each byte is inflated (and charged to the budget) once, and
    nothing large is held in memory."""

    def __init__(self, name: str, opener: Callable[[], IO[bytes]], workdir: Path) -> None:
        self.name = name
        self._opener = opener
        self._workdir = workdir
        self._path: Path | None = None
        self._error: InvalidInput | None = None

    def _materialise(self) -> Path:
        if self._error is not None:
            raise self._error
        if self._path is None:
            fd, tmp = tempfile.mkstemp(prefix="inflated-", dir=self._workdir)
            total = 0
            try:
                with os.fdopen(fd, "wb") as out, self._opener() as src:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                        total += len(chunk)
            except InvalidInput as exc:
                os.unlink(tmp)
                self._error = exc
                raise
            except BaseException:
                os.unlink(tmp)
                raise
            self._path = Path(tmp)
            self._known_size = total
        return self._path

    def open(self) -> IO[bytes]:
        return open_input(self._materialise())

    def local_path(self) -> Path:
        return self._materialise()

    @property
    def size(self) -> int | None:
        return self.known_size_if_ready()

    def known_size_if_ready(self) -> int | None:
        known = getattr(self, "_known_size", None)
        return known if isinstance(known, int) else None


#: sides of containers larger than this carry no digest (it would cost a whole extra read)
CHEAP_DIGEST = 8 << 20


def cheap_side(blob: Blob, bound: int, *, value: object = None) -> Side:
    """A side with the digest only when it is cheap (small, or already computed)."""
    size = blob.known_size()
    cached = getattr(blob, "_digest", None)
    digest = cached if isinstance(cached, str) else None
    if digest is None and size is not None and size <= min(bound, CHEAP_DIGEST):
        digest = blob.digest()
    return Side.of(digest=digest, size=size, value=value)


def spool(name: str, chunks: Iterable[bytes], ctx: CompareContext) -> Blob:
    """Keep streamed content in memory below the bound, else in a temp file in the workdir."""
    buf = bytearray()
    fh: IO[bytes] | None = None
    path: Path | None = None
    for chunk in chunks:
        if fh is None and len(buf) + len(chunk) <= ctx.memory_bound:
            buf += chunk
            continue
        if fh is None:
            fd, tmp = tempfile.mkstemp(prefix="member-", dir=ctx.workdir)
            path = Path(tmp)
            fh = os.fdopen(fd, "wb")
            fh.write(buf)
            buf = bytearray()
        fh.write(chunk)
    if fh is None:
        return BytesBlob(name, bytes(buf))
    fh.close()
    assert path is not None
    return FileBlob(path, name)


@dataclass(frozen=True)
class Member:
    """An entry of a container: a name, its metadata fields and (for regular files) content.

    ``fs_path`` is set for filesystem members (ramdisk, rootfs tree, tar): the path the
    kernel unpacks it to, which the security rules read; ``notes`` say how it got there
    (stored under another name, in an archive after the first one's trailer...).
    """

    name: str
    ftype: str  # "file", "dir", "symlink", "char", "block", "fifo", "socket", "hardlink"
    meta: tuple[tuple[str, str], ...]  # ordered (field, value) pairs compared one by one
    blob: Blob | None = None
    fs_path: str | None = None
    notes: tuple[str, ...] = ()


@dataclass
class Budget:
    """How many nodes a comparison may still create (diffoscope's output limits)."""

    max_nodes: int
    used: int = 0
    truncated: bool = False
    bytes_compared: int = 0

    def take(self, n: int = 1) -> bool:
        if self.used + n > self.max_nodes:
            self.truncated = True
            return False
        self.used += n
        return True


@dataclass(frozen=True)
class CompareContext:
    """Settings for one comparison; passed to every comparator, never global.

    ``limits.memory`` is the largest single item held in memory (``--max-memory``);
    ``decompression`` counts every decompressed byte against ``limits.decompressed``
    (``--max-decompressed``).  What could not be compared is listed in
    ``limits_reached`` and ``unreadable``: the comparison is then INCONCLUSIVE.
    """

    workdir: Path
    max_depth: int = 32
    limits: Limits = field(default_factory=Limits)
    diff_lines: int = 200
    max_children: int = 200  # per node; the rest are counted in a note
    budget: Budget = field(default_factory=lambda: Budget(max_nodes=20000))
    progress: ProgressSink = field(default_factory=NullProgress)
    evidence: Evidence = field(default_factory=Evidence)
    budget_override: ByteBudget | None = None
    limits_reached: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    _decompression: list[ByteBudget] = field(default_factory=list, repr=False)

    @property
    def decompression(self) -> ByteBudget:
        """Every decompressed byte of this comparison, against ``limits.decompressed``."""
        if not self._decompression:
            self._decompression.append(self.budget_override or self.limits.decompression_budget())
        return self._decompression[0]

    @property
    def memory_bound(self) -> int:
        """Members up to this size are compared in memory; larger ones are streamed."""
        return self.limits.memory


class EngineApi(Protocol):
    """What comparators may ask of the engine (the recursion), nothing more.

    ``depth`` is the nesting depth of the blobs being compared; comparators pass
    ``depth + 1`` for what they contain.
    """

    @property
    def ctx(self) -> CompareContext: ...

    def compare(self, a: Blob, b: Blob, path: tuple[str, ...], depth: int) -> DiffNode | None: ...

    def compare_with(
        self, comparator: Comparator, a: Blob, b: Blob, path: tuple[str, ...], depth: int
    ) -> DiffNode | None: ...

    def same_content(self, a: Blob, b: Blob) -> bool: ...

    def member_diff(
        self, a: Member | None, b: Member | None, path: tuple[str, ...], depth: int
    ) -> DiffNode | None: ...

    def compare_members(
        self, left: Sequence[Member], right: Sequence[Member], path: tuple[str, ...], depth: int
    ) -> tuple[DiffNode, ...]: ...

    def compare_container(
        self,
        container: Container,
        a: Blob,
        b: Blob,
        path: tuple[str, ...],
        kind: NodeKind,
        depth: int,
    ) -> DiffNode | None: ...

    def cap(self, nodes: Iterable[DiffNode], path: tuple[str, ...]) -> tuple[DiffNode, ...]: ...

    def bytes_node(self, a: Blob, b: Blob, path: tuple[str, ...]) -> DiffNode | None: ...

    def incomplete(self, path: tuple[str, ...], error: InvalidInput) -> DiffNode: ...


@runtime_checkable
class Comparator(Protocol):
    """A format: recognizes blobs by magic and compares two of them."""

    name: str

    def recognizes(self, blob: Blob, head: bytes) -> bool: ...

    def compare(
        self, a: Blob, b: Blob, path: tuple[str, ...], engine: EngineApi, depth: int
    ) -> DiffNode | None: ...


@runtime_checkable
class Container(Comparator, Protocol):
    """A format with named members that the engine pairs and recurses into."""

    def members(self, blob: Blob, engine: EngineApi) -> Iterator[Member]: ...
