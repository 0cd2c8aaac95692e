"""The build: spec in, ``enclave.eif`` + measurements + manifest + provenance out.

The pipeline follows the data: every pinned input is located first (store, input
sets, mirrors, snapshot archive, PyPI: :mod:`builder.inputs`), so a pin that no
source serves stops the build before any step runs; then each step returns a
record and the manifest is made from the records (:func:`make_manifest`).

Steps (each timed for the benchmark): kernel (cached by input digest), init
(musl, cached by source and toolchain), bootstrap ramdisk (``dev/``, ``dev/console``, ``init``),
rootfs (backend; cached unless told otherwise), wheels (pinned, verified), the
application ramdisk (``rootfs/``, ``cmd``, ``env``), the EIF, digests, manifest
and provenance.  The output directory appears whole or not at all.

The bootstrap half (kernel, init, bootstrap ramdisk: PCR1) uses the kernel
package's own date as its epoch, so committing application changes never
moves PCR1; the application ramdisk uses the source's ``SOURCE_DATE_EPOCH``: the
time of the last commit that touched what goes into it (app packages, spec, lock;
:func:`builder.source.epoch_paths`), so a commit elsewhere never moves PCR2.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO

from pydantic import BaseModel, ConfigDict

from builder.app import (
    SourceFile,
    collect_sources,
    control_entries,
    merge_dirs,
    source_entries,
    tree_digest,
    tree_files,
    wheel_entries,
)
from builder.eif import WrittenEif, tpm_extend, write_eif
from builder.init import InitArtifact, build_init
from builder.initramfs import Entry, char_device, directory, file_path, plan_tar, write_newc
from builder.inputs.inputset import InputSet
from builder.inputs.refs import make_resolver, spec_inputs, wheel_input
from builder.inputs.resolver import Resolver, parse_mirror_map
from builder.kernel import KernelArtifact, build_kernel
from builder.provenance import provenance_for
from builder.rootfs import RootfsResult, get_backend
from builder.source import (
    GitInfo,
    epoch_paths,
    image_git_info,
    image_paths,
    source_date_epoch,
)
from builder.spec import InitSpec, LoadedSpec, WheelSpec, load_spec
from builder.toolchain import builder_code_digest, toolchain_versions
from enclave_audit import __version__
from enclave_audit.errors import DigestMismatch, SpecInvalid
from enclave_audit.fsutil import (
    atomic_directory,
    cache_dir,
    hash_file,
    prune_cache,
    touch_entry,
)
from enclave_audit.model.manifest import (
    BuilderInfo,
    BuildManifest,
    BuildOutput,
    InputKind,
    KernelInfo,
    PinnedInput,
    SourceInfo,
    SpecInfo,
)
from enclave_audit.model.measurements import PcrSet, measurements_json
from enclave_audit.progress import NullProgress, ProgressSink


@dataclass(frozen=True)
class BuildOptions:
    backend: str = "native"
    source_root: Path | None = None
    source_date_epoch: int | None = None
    #: reuse the cached rootfs tarball and application ramdisk (repro-test turns it off)
    use_rootfs_cache: bool = True
    rebuild_kernel: bool = False
    jobs: int | None = None
    work_dir: Path | None = None
    #: for source trees without .git (repro-test copies, tarballs): the commit they are
    source_commit: str | None = None
    source_dirty: bool = False
    #: with ``source_commit``: the commit the epoch was taken from (a manifest's record)
    epoch_commit: str = ""
    #: input sets (directories or .tar files) to resolve pinned inputs from
    inputs: tuple[Path, ...] = ()
    #: ``CANONICAL=URL`` pairs: fetch a spec mirror's files from another location
    debian_mirrors: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    eif: Path
    manifest: BuildManifest
    pcrs: PcrSet
    kernel_reused: bool
    rootfs_reused: bool
    timings: dict[str, float] = field(default_factory=dict)


class _HashingWriter:
    """A file wrapper that feeds sha256, sha384 and a CRC-32 as bytes are written."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.sha256 = hashlib.sha256()
        self.sha384 = hashlib.sha384()
        self.crc32 = 0
        self.size = 0

    def write(self, data: bytes) -> int:
        self._fh.write(data)
        self.sha256.update(data)
        self.sha384.update(data)
        self.crc32 = zlib.crc32(data, self.crc32)
        self.size += len(data)
        return len(data)


class RamdiskRecord(BaseModel):
    """A ramdisk's digests and CRC-32, as written (kept with a cached application ramdisk).

    The CRC lets the EIF writer put its header first; the sha384 is what the
    writer's PCR2 pass re-verifies the cached bytes against.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    output: BuildOutput
    crc32: int


def _write_ramdisk(
    path: Path, name: str, entries: list[Entry], epoch: int, progress: ProgressSink
) -> RamdiskRecord:
    total = sum(e.size for e in entries)
    progress.start(f"ramdisk: {name}", total)
    # a scratch file in the build's work directory: no fsync, removed with it
    with open(path, "wb") as fh:
        hw = _HashingWriter(fh)
        write_newc(hw, entries, epoch=epoch, on_bytes=progress.advance)  # type: ignore[arg-type]
    progress.done()
    output = BuildOutput(
        name=name,
        size=hw.size,
        sha256=hw.sha256.hexdigest(),
        sha384=hw.sha384.hexdigest(),
    )
    return RamdiskRecord(output=output, crc32=hw.crc32)


def _app_ramdisk_key(loaded: LoadedSpec, rootfs_sha256: str, tree: str, epoch: int) -> str:
    """Everything the application ramdisk is made of, as one digest."""
    app = loaded.spec.app
    doc = {
        "rootfs": rootfs_sha256,
        "wheels": [w.model_dump() for w in loaded.spec.wheels],
        "site": app.site_packages,
        "sources": tree,
        "packages": list(app.packages),
        "cmd": list(app.cmd),
        "env": app.env,
        "epoch": epoch,
        "code": builder_code_digest(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _ramdisk_record(cached: Path) -> RamdiskRecord:
    """The record written with a cached application ramdisk (its digests and CRC)."""
    try:
        return RamdiskRecord.model_validate_json((cached / "ramdisk.json").read_text())
    except (OSError, ValueError) as exc:
        raise DigestMismatch(
            f"cached ramdisk {cached}: unreadable record ({exc}); delete it"
        ) from None


def _check_cached_ramdisk(cached: Path, record: BuildOutput, pcrs: PcrSet) -> None:
    """The cached ramdisk's bytes, as the EIF writer just hashed them, are the recorded ones.

    With one application ramdisk, PCR2 = extend(SHA-384(that ramdisk)): the writer's
    PCR2 pass is the re-verification, so the cache costs no second read.
    """
    if pcrs[2] != tpm_extend(bytes.fromhex(record.sha384)):
        raise DigestMismatch(
            f"cached ramdisk {cached / 'application.cpio'} does not match the digests recorded"
            " when it was written (cache tampered or corrupt; delete it)"
        )


def _output(path: Path, out_dir: Path, name: str) -> BuildOutput:
    digests = hash_file(path, ("sha256", "sha384"))  # the two hashers run in parallel
    return BuildOutput(
        name=name,
        path=path.relative_to(out_dir).as_posix(),
        size=path.stat().st_size,
        sha256=digests["sha256"].hex(),
        sha384=digests["sha384"].hex(),
    )


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def watched_paths(loaded: LoadedSpec) -> list[str]:
    """The paths whose uncommitted changes make a build "dirty": what the image is made of."""
    return image_paths(loaded)


def build(
    spec_path: Path,
    out_dir: Path,
    *,
    options: BuildOptions | None = None,
    progress: ProgressSink | None = None,
) -> BuildResult:
    """Build the image described by ``spec_path`` into ``out_dir`` (atomically)."""
    options = options or BuildOptions()
    loaded = load_spec(spec_path, source_root=options.source_root)
    return build_loaded(loaded, out_dir, options=options, progress=progress)


# --- the steps: each one takes what it needs and returns a record -------------------


@dataclass(frozen=True)
class SourceRecord:
    """Where the source is: its commit, dirtiness and the two epochs derived from it."""

    git: GitInfo | None
    epoch: int
    rootfs_epoch: int


@dataclass(frozen=True)
class InputsRecord:
    """Every external input of the build, located before any step runs."""

    refs: tuple[PinnedInput, ...]
    resolver: Resolver

    def with_sources(self) -> tuple[PinnedInput, ...]:
        """The references, each stamped with the source that served (or would serve) it."""
        return tuple(
            ref.model_copy(update={"served_by": self.resolver.served_by(ref)}) for ref in self.refs
        )


@dataclass(frozen=True)
class HelperRecord:
    name: str
    source: str
    built: InitArtifact


@dataclass(frozen=True)
class InitRecord:
    init: InitArtifact
    helpers: tuple[HelperRecord, ...]


@dataclass(frozen=True)
class AppRamdisk:
    record: RamdiskRecord
    path: Path
    #: the cache entry it was read from (re-verified by the EIF writer), or None
    cached: Path | None
    tree_sha256: str


def source_step(loaded: LoadedSpec, options: BuildOptions) -> SourceRecord:
    git = image_git_info(loaded)
    epoch = source_date_epoch(options.source_date_epoch, git, loaded.source_root)
    if options.source_commit is not None:
        git = GitInfo(
            options.source_commit, epoch, options.source_dirty, options.epoch_commit, epoch
        )
    rootfs_epoch = min(loaded.lock_epoch, epoch) if loaded.lock_epoch is not None else epoch
    return SourceRecord(git=git, epoch=epoch, rootfs_epoch=rootfs_epoch)


def tree_step(loaded: LoadedSpec, backend: str) -> tuple[list[SourceFile], str]:
    """The source tree, before any step runs: (application files, tree digest).

    The digest covers the application packages and, for the docker backend, the docker
    context; a symlink leaving the tree or a refused Dockerfile stops the build here.
    """
    sources = collect_sources(loaded.source_root, loaded.spec.app.packages)
    return sources, tree_digest(tree_files(loaded, backend, sources))


def resolve_step(loaded: LoadedSpec, options: BuildOptions, progress: ProgressSink) -> InputsRecord:
    """Locate every pinned input now; a pin no source serves stops the build here."""
    sets = tuple(InputSet(p) for p in options.inputs)
    resolver = make_resolver(
        loaded,
        input_sets=sets,
        mirror_map=parse_mirror_map(options.debian_mirrors),
        progress=progress,
    )
    refs = tuple(spec_inputs(loaded))
    progress.start("inputs: locating every pinned input", None)
    resolver.locate(refs)
    return InputsRecord(refs=refs, resolver=resolver)


def init_step(loaded: LoadedSpec, work: Path, *, use_cache: bool) -> InitRecord:
    spec = loaded.spec
    init = build_init(
        spec.init, loaded.resolve(spec.init.source), work / "init-build", use_cache=use_cache
    )
    helpers = tuple(
        HelperRecord(
            PurePosixPath(source).parent.name,
            source,
            build_init(
                InitSpec(source=source, cflags=spec.init.cflags),
                loaded.resolve(source),
                work / f"helper-{number}",
                use_cache=use_cache,
            ),
        )
        for number, source in enumerate(spec.init.helpers)
    )
    return InitRecord(init=init, helpers=tuple(sorted(helpers, key=lambda h: h.name)))


def bootstrap_step(
    init: InitRecord, path: Path, boot_epoch: int, progress: ProgressSink
) -> RamdiskRecord:
    """``dev/``, ``dev/console``, ``init`` and the helpers: the PCR1 ramdisk."""
    return _write_ramdisk(
        path,
        "bootstrap-ramdisk",
        [
            directory("dev", 0o755, boot_epoch),
            char_device("dev/console", 5, 1, 0o600, boot_epoch),
            file_path("init", init.init.path, 0o755, boot_epoch),
            *(file_path(h.name, h.built.path, 0o755, boot_epoch) for h in init.helpers),
        ],
        boot_epoch,
        progress,
    )


def app_ramdisk_step(
    loaded: LoadedSpec,
    rootfs: RootfsResult,
    wheels: list[tuple[WheelSpec, Path]],
    *,
    tree: tuple[list[SourceFile], str],
    epoch: int,
    work: Path,
    use_cache: bool,
    timer: _Timer,
    progress: ProgressSink,
) -> AppRamdisk:
    """``rootfs/`` (+ wheels + app sources), ``cmd``, ``env``: the PCR2 ramdisk.

    ``tree`` is (the application's source files, the tree digest) from :func:`tree_step`.
    """
    spec = loaded.spec
    sources, digest = tree
    with timer.step("plan"):
        cached = cache_dir("ramdisk") / _app_ramdisk_key(loaded, rootfs.sha256, digest, epoch)
    if use_cache and (cached / "ramdisk.json").exists():
        # re-verified by the EIF writer's own PCR2 pass (see _check_cached_ramdisk);
        # the output directory only appears once it has passed
        touch_entry(cached)
        return AppRamdisk(_ramdisk_record(cached), cached / "application.cpio", cached, digest)
    with timer.step("plan"):
        entries = plan_tar(rootfs.tarball, "rootfs")
        extra: list[Entry] = []
        for w, path in wheels:
            extra = merge_dirs(extra, wheel_entries(w, path, spec.app.site_packages, epoch))
        extra = merge_dirs(extra, source_entries(sources, epoch))
        entries = merge_dirs(entries, extra)
        entries += control_entries(spec.app, epoch)
    with timer.step("cpio"):
        if not use_cache:
            path = work / "application.cpio"
            record = _write_ramdisk(path, "application-ramdisk", entries, epoch, progress)
            return AppRamdisk(record, path, None, digest)
        with atomic_directory(cached) as ramdisk_dir:
            record = _write_ramdisk(
                ramdisk_dir / "application.cpio", "application-ramdisk", entries, epoch, progress
            )
            (ramdisk_dir / "ramdisk.json").write_text(record.model_dump_json(indent=2) + "\n")
        prune_cache(cached.parent, keep=4, marker="ramdisk.json")
        # written just now: not a cache hit, nothing to re-verify
        return AppRamdisk(record, cached / "application.cpio", None, digest)


def eif_step(
    loaded: LoadedSpec,
    kernel: KernelArtifact,
    bootstrap: tuple[Path, RamdiskRecord],
    app: AppRamdisk,
    *,
    source: SourceRecord,
    out: Path,
    progress: ProgressSink,
) -> WrittenEif:
    spec = loaded.spec
    git = source.git
    written = write_eif(
        out,
        kernel=kernel.bzimage,
        cmdline=spec.kernel.cmdline,
        ramdisks=[bootstrap[0], app.path],
        name=spec.name,
        version=spec.version,
        build_time=_rfc3339(source.epoch),
        custom_metadata={
            "SourceCommit": git.commit if git else "",
            "SpecSha256": loaded.sha256,
            "ModelDigest": spec.app.model_digest,
        },
        kernel_config=kernel.config,
        # the header goes first, so the file is hashed as it is written
        known_crc32={bootstrap[0]: bootstrap[1].crc32, app.path: app.record.crc32},
        progress=progress,
    )
    if app.cached is not None:
        _check_cached_ramdisk(app.cached, app.record.output, written.pcrs)
    return written


def make_manifest(
    loaded: LoadedSpec,
    *,
    backend: str,
    source: SourceRecord,
    inputs: InputsRecord,
    kernel: KernelArtifact,
    init: InitRecord,
    rootfs: RootfsResult,
    bootstrap: RamdiskRecord,
    app: AppRamdisk,
    eif: WrittenEif,
    measurements: BuildOutput,
) -> BuildManifest:
    """The manifest, made from the steps' records (and nothing else)."""
    spec = loaded.spec
    root = loaded.source_root
    git = source.git
    source_files = [
        PinnedInput(
            name="kernel-config",
            kind=InputKind.SOURCE_FILE,
            origin=_rel(loaded.resolve(spec.kernel.config), root),
            sha256=hash_file(loaded.resolve(spec.kernel.config))["sha256"].hex(),
        ),
        PinnedInput(
            name="init-source",
            kind=InputKind.SOURCE_FILE,
            origin=_rel(loaded.resolve(spec.init.source), root),
            sha256=init.init.source_sha256,
        ),
        *(
            PinnedInput(
                name=f"{h.name}-source",
                kind=InputKind.SOURCE_FILE,
                origin=_rel(loaded.resolve(h.source), root),
                sha256=h.built.source_sha256,
            )
            for h in init.helpers
        ),
    ]
    served = inputs.with_sources()
    kernel_ref = [r for r in served if r.kind is InputKind.KERNEL_SOURCE]
    others = [r for r in served if r.kind is not InputKind.KERNEL_SOURCE]
    lock_path = loaded.base / spec.debian.lock
    eif_out = BuildOutput(
        name="enclave.eif", path="enclave.eif", size=eif.size, sha256=eif.sha256,
        sha384=eif.sha384,
    )  # fmt: skip
    return BuildManifest(
        name=spec.name,
        version=spec.version,
        builder=BuilderInfo(version=__version__, backend=backend),
        source_date_epoch=source.epoch,
        rootfs_source_date_epoch=source.rootfs_epoch,
        source=SourceInfo(
            git_commit=git.commit if git else "",
            git_dirty=git.dirty if git else False,
            tree_sha256=app.tree_sha256,
            packages=spec.app.packages,
            epoch_commit=git.inputs_commit if git and git.inputs_time == source.epoch else "",
            epoch_paths=tuple(epoch_paths(loaded)),
        ),
        spec=SpecInfo(
            path=_rel(loaded.path, root),
            sha256=loaded.sha256,
            text=loaded.path.read_text("utf-8"),
            lock_path=_rel(lock_path, root),
            lock_text=lock_path.read_text("utf-8"),
            lock_resolved_at=loaded.lock_resolved_at,
        ),
        kernel=KernelInfo(
            release=kernel.release,
            cmdline=spec.kernel.cmdline,
            bzimage_sha256=kernel.sha256,
            config_sha256=hash_file(kernel.config)["sha256"].hex(),
            input_digest=kernel.input_digest,
            source_date_epoch=kernel.source_date_epoch,
        ),
        init_flags=init.init.flags,
        inputs=(*kernel_ref, *source_files, *others),
        toolchain=toolchain_versions(),
        ramdisks=(bootstrap.output, app.record.output),
        outputs=(eif_out, measurements),
        pcrs=eif.pcrs,
        app={
            "cmd": list(spec.app.cmd),
            "env": spec.app.env,
            "model_digest": spec.app.model_digest,
        },
    )


def build_loaded(
    loaded: LoadedSpec,
    out_dir: Path,
    *,
    options: BuildOptions,
    progress: ProgressSink | None = None,
    check_spec: Callable[[LoadedSpec], None] | None = None,
) -> BuildResult:
    """Resolve the inputs, run the steps, write the outputs (whole or not at all)."""
    progress = progress or NullProgress()
    spec = loaded.spec
    backend = get_backend(options.backend)
    timer = _Timer()
    source = source_step(loaded, options)
    if check_spec is not None:
        check_spec(loaded)
    tree = tree_step(loaded, backend.name)
    with timer.step("inputs"):
        inputs = resolve_step(loaded, options, progress)
    resolver = inputs.resolver
    with timer.step("kernel"):
        kernel = build_kernel(
            spec.kernel,
            loaded.resolve(spec.kernel.config),
            resolver=resolver,
            jobs=options.jobs,
            progress=progress,
            force=options.rebuild_kernel,
        )
    use_cache = options.use_rootfs_cache
    work_parent = options.work_dir or cache_dir("build-work")
    work_parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="build-", dir=work_parent) as tmp,
        atomic_directory(Path(out_dir)) as staging,
    ):
        work = Path(tmp)
        os.chmod(staging, 0o755)  # noqa: S103 - mkdtemp gives 0700; outputs are public
        with timer.step("init"):
            init = init_step(loaded, work, use_cache=use_cache)
        with timer.step("cpio"):
            boot_path = work / "bootstrap.cpio"
            bootstrap = bootstrap_step(init, boot_path, kernel.source_date_epoch, progress)
        with timer.step("rootfs"):
            rootfs = backend.build_rootfs(
                loaded,
                epoch=source.rootfs_epoch,
                use_cache=use_cache,
                progress=progress,
                resolver=resolver,
            )
        with timer.step("wheels"):
            wheels = [(w, resolver.path(wheel_input(w))) for w in spec.wheels]
        app = app_ramdisk_step(
            loaded, rootfs, wheels, tree=tree, epoch=source.epoch, work=work, use_cache=use_cache,
            timer=timer, progress=progress,
        )  # fmt: skip
        with timer.step("eif"):
            eif = eif_step(
                loaded, kernel, (boot_path, bootstrap), app, source=source,
                out=staging / "enclave.eif", progress=progress,
            )  # fmt: skip
        (staging / "measurements.json").write_text(measurements_json(eif.pcrs))
        measurements = _output(staging / "measurements.json", staging, "measurements.json")
        manifest = make_manifest(
            loaded, backend=backend.name, source=source, inputs=inputs, kernel=kernel,
            init=init, rootfs=rootfs, bootstrap=bootstrap, app=app, eif=eif,
            measurements=measurements,
        )  # fmt: skip
        text = manifest.to_json()
        (staging / "build-manifest.json").write_text(text)
        statement = provenance_for(
            manifest, manifest_sha256=hashlib.sha256(text.encode()).hexdigest()
        )
        (staging / "provenance.json").write_bytes(statement.to_bytes())
        for name in ("measurements.json", "build-manifest.json", "provenance.json"):
            os.chmod(staging / name, 0o644)
    return BuildResult(
        out_dir=Path(out_dir),
        eif=Path(out_dir) / "enclave.eif",
        manifest=manifest,
        pcrs=eif.pcrs,
        kernel_reused=kernel.reused,
        rootfs_reused=rootfs.reused,
        timings=timer.timings,
    )


def rebuild_from_manifest(
    manifest: BuildManifest,
    source_dir: Path,
    out_dir: Path,
    *,
    backend: str | None = None,
    use_rootfs_cache: bool = True,
    inputs: tuple[Path, ...] = (),
    debian_mirrors: tuple[str, ...] = (),
    progress: ProgressSink | None = None,
) -> BuildResult:
    """Rebuild what ``manifest`` describes from a checkout of its source at ``source_dir``.

    The spec, lock and application sources in the checkout must be the ones the
    manifest recorded (same sha256 / text / tree digest), else
    :class:`DigestMismatch`; the recorded ``SOURCE_DATE_EPOCH`` and commit are used.
    """
    source_dir = Path(source_dir).resolve()
    spec_path = source_dir / manifest.spec.path
    if not spec_path.is_file():
        raise SpecInvalid(f"{spec_path}: the manifest's spec is not in the source checkout")
    got = hashlib.sha256(spec_path.read_bytes()).hexdigest()
    if got != manifest.spec.sha256:
        raise DigestMismatch(
            f"{spec_path}: sha256 {got}, the manifest records {manifest.spec.sha256}"
        )
    lock = source_dir / manifest.spec.lock_path
    if not lock.is_file() or lock.read_text("utf-8") != manifest.spec.lock_text:
        raise DigestMismatch(f"{lock}: differs from the Debian lock the manifest records")
    loaded = load_spec(spec_path, source_root=source_dir)
    _, tree = tree_step(loaded, backend or manifest.builder.backend)
    if tree != manifest.source.tree_sha256:
        raise DigestMismatch(
            f"{source_dir}: application sources have tree digest {tree},"
            f" the manifest records {manifest.source.tree_sha256} (wrong checkout?)"
        )
    options = BuildOptions(
        backend=backend or manifest.builder.backend,
        source_root=source_dir,
        source_date_epoch=manifest.source_date_epoch,
        # the checkout may be a tarball without .git: the commit comes from the manifest
        source_commit=manifest.source.git_commit,
        source_dirty=manifest.source.git_dirty,
        epoch_commit=manifest.source.epoch_commit,
        use_rootfs_cache=use_rootfs_cache,
        inputs=inputs,
        debian_mirrors=debian_mirrors,
    )
    return build_loaded(loaded, out_dir, options=options, progress=progress)
