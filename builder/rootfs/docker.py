"""Docker backend: a Dockerfile built on the pinned Debian base, exported as the rootfs.

For users who already describe their enclave with a Dockerfile (nitro-cli's
path).  No registry is reachable and none is trusted: the base image is the
native backend's pinned mmdebstrap tarball (every .deb checked against the
lock), imported into the engine and handed to the Dockerfile by image id as the
build argument ``BASE``::

    ARG BASE
    FROM ${BASE}

The imported image's only layer must have the tarball's sha256 as its diff id,
so the base is pinned by digest, and the built image's first layer must be that
one (a Dockerfile that starts elsewhere, e.g. from an image already in the
engine, is a :class:`DigestMismatch`).  The build runs with no network, no build
cache and ``SOURCE_DATE_EPOCH`` as a build argument; the context is sent as a
tar we write ourselves (sorted, mtimes at ``SOURCE_DATE_EPOCH``, modes 0644 or
0755), so checkout age and umask cannot leak in through ``COPY``.

The built image's filesystem comes from ``export`` of a created, never-started
container (the engine flattens layers and resolves whiteouts).  Export also
shows the engine's init layer, which replaces ``/.dockerenv``, ``/etc/hostname``,
``/etc/hosts``, ``/etc/resolv.conf``, ``/etc/mtab`` and ``/dev/console`` in every
container (and creates ``/dev/pts``, ``/proc``... and touches their parents):
those paths are taken from the image's own layers (``docker save``, headers
and these few small files only), or left out when the image has none.  The
export is rewritten as a normalized tar (component-wise sorted,
mtimes clamped to ``SOURCE_DATE_EPOCH``, numeric owners, hard links pointing to
the first name of their group), which the shared code turns into the same
ramdisk layout as the native backend: ``rootfs/``, ``cmd``, ``env``.

``cmd`` and ``env`` of that layout are the spec's ``app.cmd`` and ``app.env``;
the image's ENTRYPOINT + CMD and ENV must equal them (else :class:`SpecInvalid`),
so what the image says it runs and what the auditor reads in the spec agree.
An image USER or WORKDIR cannot be expressed by the enclave init and is refused.

The Dockerfile is ``docker/Dockerfile`` next to the spec, its directory being
the build context, sent whole (``.dockerignore`` is not read; keep the context
small and free of secrets).  The context digest and the base tarball's sha256
key the cache of built root filesystems (``cache_dir("rootfs-docker")``).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from builder.app import SourceFile
from builder.inputs.resolver import Resolver
from builder.rootfs.base import ROOTFS_CACHE_KEEP, RootfsResult
from builder.rootfs.native import NativeBackend
from builder.spec import LoadedSpec
from enclave_audit.errors import (
    BuildStepFailed,
    DigestMismatch,
    EnvironmentProblem,
    InvalidInput,
    SpecInvalid,
)
from enclave_audit.fsutil import (
    atomic_directory,
    cache_dir,
    prune_cache,
    read_regular_file,
    sha256_file,
)
from enclave_audit.progress import ProgressSink

RECIPE_VERSION = 4
DOCKER_DIR = "docker"
DOCKERFILE = "Dockerfile"
#: what the engine's init layer creates in every container when the image lacks it
INIT_LAYER_PATHS = frozenset(
    {
        ".dockerenv",
        "dev",
        "dev/console",
        "dev/pts",
        "dev/shm",
        "etc",
        "etc/hostname",
        "etc/hosts",
        "etc/mtab",
        "etc/resolv.conf",
        "proc",
        "sys",
    }
)
_ENGINE_HELP = (
    "install Debian's docker.io (apt-get install docker.io) and start the engine"
    " with scripts/docker-engine"
)
_CHUNK = 1 << 20


def connect() -> Any:
    """A Docker SDK client for the local engine, or :class:`EnvironmentProblem`."""
    try:
        import docker
        from docker.errors import DockerException
        from requests.exceptions import RequestException
    except ImportError:
        raise EnvironmentProblem(
            "the docker backend needs the 'docker' Python package (pip install docker)"
        ) from None
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except (DockerException, RequestException):
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise EnvironmentProblem(f"no Docker engine reachable at {where}: {_ENGINE_HELP}") from None
    return client


def _engine_version(client: Any) -> str:
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        return str(client.version().get("Version", "unknown"))
    except (DockerException, RequestException):
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise EnvironmentProblem(f"no Docker engine reachable at {where}: {_ENGINE_HELP}") from None


def _error_line(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:300]


# --- the build context ----------------------------------------------------------------


@dataclass(frozen=True)
class _ContextFile:
    rel: str
    path: Path
    kind: str  # "file", "dir", "symlink"
    mode: int
    sha256: str
    target: str = ""


def _context_files(context: Path) -> list[_ContextFile]:
    """The build context: regular files and directories only, never a symlink.

    The context belongs to the audited party; a symlink in it (wherever it points) is
    refused rather than followed or sent, so no host file can reach the image.
    """
    out: list[_ContextFile] = []
    for dirpath, dirnames, filenames in os.walk(context):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            path = Path(dirpath) / name
            rel = path.relative_to(context).as_posix()
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                raise SpecInvalid(
                    f"{path}: the docker context holds a symlink (to {os.readlink(path)!r});"
                    " symlinks are refused in the build context"
                )
            if stat.S_ISDIR(st.st_mode):
                out.append(_ContextFile(rel, path, "dir", 0o755, ""))
            elif stat.S_ISREG(st.st_mode):
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                out.append(_ContextFile(rel, path, "file", mode, sha256_file(path)))
            else:
                raise SpecInvalid(f"{path}: not a file, directory or symlink (docker context)")
    out.sort(key=lambda f: f.rel.encode())
    return out


def context_directory(loaded: LoadedSpec) -> Path:
    """The spec's docker context (``docker/`` next to the spec), inside the source root."""
    from builder.spec import contained

    context = contained(loaded.source_root, loaded.base, DOCKER_DIR, "docker context")
    if not context.is_dir():
        raise SpecInvalid(f"{context}: the docker context is not a directory")
    return context


def context_sources(loaded: LoadedSpec) -> list[SourceFile]:
    """The docker context's files as source-tree files (for the manifest's tree digest).

    Refuses a context outside the source tree, a symlink in it, and a Dockerfile
    that :func:`check_dockerfile` refuses.
    """
    context = context_directory(loaded)
    dockerfile = context / DOCKERFILE
    if dockerfile.is_file() and not dockerfile.is_symlink():
        check_dockerfile(dockerfile, _read_dockerfile(dockerfile))
    return [
        SourceFile(
            rel=f.path.relative_to(loaded.source_root).as_posix(),
            path=f.path,
            executable=f.mode == 0o755,
            sha256=f.sha256,
        )
        for f in _context_files(context)
        if f.kind == "file"
    ]


# --- what a Dockerfile may do -----------------------------------------------------------

_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)")
_BASE_REFS = ("${BASE}", "$BASE")


def _instructions(text: str) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    escape = "\\"
    lines = text.splitlines()
    for line in lines:  # parser directives come first
        m = re.match(r"^#\s*escape\s*=\s*(\S)\s*$", line, re.IGNORECASE)
        if m:
            escape = m.group(1)
            continue
        if not re.match(r"^#\s*[a-zA-Z]+\s*=", line):
            break
    out: list[tuple[int, str, str]] = []
    pending = ""
    start = 0
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and (not stripped or stripped.startswith("#")):
            continue  # empty and comment lines inside a continuation are dropped
        if not pending:
            start = n
        if stripped.endswith(escape):
            pending += stripped[: -len(escape)] + " "
            continue
        full = pending + stripped
        pending = ""
        out.append(_split_instruction(start, full))
    if pending:
        out.append(_split_instruction(start, pending))
    return out


def _split_instruction(line: int, text: str) -> tuple[int, str, str]:
    parts = text.strip().split(None, 1)
    return line, parts[0].upper(), parts[1].strip() if len(parts) > 1 else ""


def _words(args: str) -> tuple[list[str], list[str]]:
    """(--flags, operands) of an instruction; JSON array form understood."""
    if args.startswith("["):
        try:
            items = json.loads(args)
        except ValueError:
            items = None
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            return [], [str(i) for i in items]
    parts = args.split()
    flags = [p for p in parts if p.startswith("--")]
    rest = [p for p in parts if not p.startswith("--")]
    if args.startswith("--") and rest and rest[0].startswith("["):
        return flags, _words(args[args.index("[") :])[1]
    return flags, rest


def check_dockerfile(path: Path, text: str) -> None:
    """Refuse what would bring unpinned bytes or host state into the image.

    Every ``FROM`` is the pinned base (``${BASE}``) or an earlier stage; ``COPY
    --from`` names an earlier stage; ``ADD`` takes no URL or git source and no
    variable in its sources (which could hold one); no ``ONBUILD``; ``RUN`` takes no
    ``--mount``/``--network``/``--security`` options.
    """
    stages: list[str] = []
    for line, word, args in _instructions(text):
        where = f"{path}:{line}"
        flags, operands = _words(args)
        if word == "FROM":
            if flags or not operands:
                raise SpecInvalid(f"{where}: FROM takes no options here; use FROM ${{BASE}}")
            image = operands[0]
            if image not in _BASE_REFS and image.lower() not in stages:
                raise SpecInvalid(
                    f"{where}: FROM {image[:80]!r}: every stage must start from the pinned base"
                    " (ARG BASE / FROM ${BASE}) or an earlier stage"
                )
            if len(operands) >= 3 and operands[1].lower() == "as":
                stages.append(operands[2].lower())
            else:
                stages.append(str(len(stages)))
        elif word == "ADD":
            for source in operands[:-1]:
                # quotes and escapes are resolved by the engine's word expansion, so a
                # source holding one could spell a URL: refused like a variable
                if _URL.match(source) or any(c in source for c in "$\"'\\`"):
                    raise SpecInvalid(
                        f"{where}: ADD {source[:80]!r}: remote sources (URLs, git), variables,"
                        " quotes and escapes are refused; the image may only hold pinned bytes"
                        " (COPY from the context)"
                    )
            for flag in flags:
                if not flag.startswith(("--chown=", "--chmod=")):
                    raise SpecInvalid(f"{where}: ADD {flag[:40]}: option refused")
        elif word == "COPY":
            for flag in flags:
                if flag.startswith("--from="):
                    ref = flag.split("=", 1)[1].lower()
                    earlier = ref in stages or (ref.isdigit() and int(ref) < len(stages) - 1)
                    if not earlier or ref == (stages[-1] if stages else ""):
                        raise SpecInvalid(
                            f"{where}: COPY {flag[:80]}: only an earlier stage may be copied"
                            " from (not an image)"
                        )
                elif not flag.startswith(("--chown=", "--chmod=", "--link")):
                    raise SpecInvalid(f"{where}: COPY {flag[:40]}: option refused")
        elif word == "ONBUILD":
            raise SpecInvalid(f"{where}: ONBUILD is refused")
        elif word == "RUN" and args.startswith("--"):
            raise SpecInvalid(f"{where}: RUN {args.split()[0][:40]}: options are refused")


def context_digest(files: Iterable[_ContextFile]) -> str:
    """sha256 over ``rel NUL kind NUL mode NUL sha256-or-target LF`` of the context."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.rel}\0{f.kind}\0{f.mode:o}\0{f.sha256 or f.target}\n".encode())
    return h.hexdigest()


def _context_tar(files: list[_ContextFile], epoch: int, dest: IO[bytes]) -> None:
    with tarfile.open(fileobj=dest, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for f in files:
            info = tarfile.TarInfo(f.rel)
            info.mtime = epoch
            info.mode = f.mode
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if f.kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif f.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = f.target
                tf.addfile(info)
            else:
                info.size = f.path.stat().st_size
                with open(f.path, "rb") as fh:
                    tf.addfile(info, fh)


def _read_dockerfile(path: Path) -> str:
    try:
        return read_regular_file(path, limit=1 << 20).decode("utf-8", "replace")
    except InvalidInput as exc:
        raise SpecInvalid(f"cannot read the Dockerfile: {exc.message}") from None


# --- streams --------------------------------------------------------------------------


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (the engine's HTTP streams)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _norm(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


#: the most data read from the image for one init-layer path (they are tiny config files)
_MAX_INIT_FILE = 1 << 20

ImageEntry = tuple[tarfile.TarInfo, bytes | None]


@dataclass
class _LayerScan:
    present: dict[str, ImageEntry]
    whiteouts: set[str]
    opaque: set[str]


def _scan_layer(fh: IO[bytes], watched: frozenset[str]) -> _LayerScan:
    scan = _LayerScan({}, set(), set())
    with tarfile.open(fileobj=fh, mode="r|") as tf:
        for m in tf:
            name = _norm(m.name)
            base = PurePosixPath(name).name
            parent = str(PurePosixPath(name).parent).strip(".")
            if base == ".wh..wh..opq":
                scan.opaque.add(parent)
            elif base.startswith(".wh."):
                scan.whiteouts.add(_norm(f"{parent}/{base[4:]}"))
            elif name in watched:
                data: bytes | None = None
                if m.islnk():
                    raise BuildStepFailed(
                        f"docker image: /{name} is a hard link; not supported for this path"
                    )
                if m.isreg():
                    if m.size > _MAX_INIT_FILE:
                        raise BuildStepFailed(f"docker image: /{name} is too large ({m.size})")
                    reader = tf.extractfile(m)
                    data = reader.read() if reader is not None else b""
                scan.present[name] = (m, data)
    return scan


def image_entries(client: Any, image_id: str, watched: frozenset[str]) -> dict[str, ImageEntry]:
    """The image's own entries (and small file data) for ``watched`` paths, from its layers.

    Layers are applied in order: whiteouts and opaque directories remove what lower
    layers had; an entry in an upper layer replaces the lower one.
    """
    layers: dict[str, _LayerScan] = {}
    manifest: Any = None
    try:
        raw = io.BufferedReader(_ChunkReader(iter(client.api.get_image(image_id, _CHUNK))), _CHUNK)
        with tarfile.open(fileobj=raw, mode="r|") as outer:
            for m in outer:
                fh = outer.extractfile(m) if m.isfile() else None
                if fh is None:
                    continue
                if m.name == "manifest.json":
                    manifest = json.loads(fh.read())
                elif m.name.endswith("/layer.tar") or m.name.startswith("blobs/"):
                    try:
                        layers[m.name] = _scan_layer(fh, watched)
                    except tarfile.ReadError:
                        continue  # an OCI blob that is a config or manifest, not a layer
    except (tarfile.TarError, ValueError) as exc:
        raise BuildStepFailed(f"docker save of {image_id}: unreadable archive: {exc}") from None
    try:
        order = [str(x) for x in manifest[0]["Layers"]]
    except (TypeError, KeyError, IndexError):
        raise BuildStepFailed(
            f"docker save of {image_id}: no layer list in manifest.json"
        ) from None
    have: dict[str, ImageEntry] = {}
    for name in order:
        scan = layers.get(name)
        if scan is None:
            raise BuildStepFailed(f"docker save of {image_id}: layer {name} missing")
        for path in watched:
            above = [path, *_ancestors(path)]
            if any(a in scan.whiteouts for a in above) or any(
                a in scan.opaque for a in _ancestors(path)
            ):
                have.pop(path, None)
        have.update(scan.present)
    return have


# --- normalizing the export -----------------------------------------------------------


def _sort_key(name: str) -> tuple[bytes, ...]:
    return tuple(p.encode("utf-8", "surrogateescape") for p in name.split("/"))


def normalize_export(
    export: Path,
    dest: Path,
    *,
    epoch: int,
    replaced: frozenset[str],
    image: dict[str, ImageEntry],
) -> None:
    """Rewrite a ``docker export`` tar as a deterministic tar.

    Export shows what the engine's init layer put at the ``replaced`` paths; each
    is taken from ``image`` (the image's own entry and data, see
    :func:`image_entries`) or left out when the image has none.  ``image[""]`` is
    the root directory, which export leaves out.
    """
    try:
        src = tarfile.open(export, "r:")
        members = src.getmembers()
    except (tarfile.TarError, OSError) as exc:
        raise BuildStepFailed(f"docker export: unreadable archive: {exc}") from None
    with src:
        by_name: dict[str, tarfile.TarInfo] = {}
        inline: dict[str, bytes] = {}
        for m in members:
            name = _norm(m.name)
            if not name:
                continue
            if name in replaced:
                own = image.get(name)
                if own is None:
                    continue
                info, data = own
                if info.isdir() and m.isdir():
                    m = copy.copy(m)
                    m.mode, m.mtime, m.uid, m.gid = info.mode, info.mtime, info.uid, info.gid
                else:
                    m = copy.copy(info)
                    if data is not None:
                        inline[name] = data
            by_name[name] = m
        # hard link groups: every LNKTYPE name resolves to its data-holding root
        root_of: dict[str, str] = {}
        for name, m in by_name.items():
            if m.islnk():
                target = _norm(m.linkname)
                seen = {name}
                while target in by_name and by_name[target].islnk() and target not in seen:
                    seen.add(target)
                    target = _norm(by_name[target].linkname)
                if target not in by_name or not by_name[target].isreg() or target in inline:
                    raise BuildStepFailed(
                        f"docker export: hard link {name!r} points to missing {target!r}"
                    )
                root_of[name] = target
        roots = set(root_of.values())

        def group(name: str) -> str:
            return root_of.get(name) or (name if name in roots else "")

        first: dict[str, str] = {}
        for name in sorted(by_name, key=_sort_key):
            root = group(name)
            if root and root not in first:
                first[root] = name
        with (
            open(dest, "wb") as out,
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf,
        ):
            if "" in image and image[""][0].isdir():
                rootinfo = image[""][0]
                top = tarfile.TarInfo(".")
                top.type = tarfile.DIRTYPE
                top.mode = rootinfo.mode & 0o7777
                top.mtime = min(max(int(rootinfo.mtime), 0), epoch)
                top.uid, top.gid = rootinfo.uid, rootinfo.gid
                top.uname = top.gname = ""
                tf.addfile(top)
            for name in sorted(by_name, key=_sort_key):
                m = by_name[name]
                root = group(name)
                data_from = by_name[root] if root else m
                info = tarfile.TarInfo(name)
                info.mode = data_from.mode & 0o7777
                info.uid, info.gid = data_from.uid, data_from.gid
                info.uname = info.gname = ""
                info.mtime = min(max(int(data_from.mtime), 0), epoch)
                if root and first[root] != name:
                    info.type = tarfile.LNKTYPE
                    info.linkname = first[root]
                    tf.addfile(info)
                elif name in inline:
                    info.type = tarfile.REGTYPE
                    info.size = len(inline[name])
                    tf.addfile(info, io.BytesIO(inline[name]))
                elif m.isreg() or m.islnk():
                    info.type = tarfile.REGTYPE
                    info.size = data_from.size
                    tf.addfile(info, src.extractfile(data_from))
                elif m.isdir():
                    info.type = tarfile.DIRTYPE
                    tf.addfile(info)
                elif m.issym():
                    info.type = tarfile.SYMTYPE
                    info.linkname = m.linkname
                    tf.addfile(info)
                elif m.ischr() or m.isblk() or m.isfifo():
                    info.type = m.type
                    info.devmajor, info.devminor = m.devmajor, m.devminor
                    tf.addfile(info)
                else:
                    raise BuildStepFailed(
                        f"docker export: member {name!r} has an unsupported tar type {m.type!r}"
                    )


# --- the backend ----------------------------------------------------------------------


def _image_config(attrs: dict[str, Any]) -> dict[str, Any]:
    """What the enclave's ``cmd``/``env`` come from: ENTRYPOINT + CMD, ENV, USER, WORKDIR."""
    config = attrs.get("Config") or {}
    cmd = [str(a) for a in (config.get("Entrypoint") or ())]
    cmd += [str(a) for a in (config.get("Cmd") or ())]
    env: dict[str, str] = {}
    for item in config.get("Env") or ():
        key, _, value = str(item).partition("=")
        env[key] = value
    return {
        "cmd": cmd,
        "env": env,
        "user": str(config.get("User") or ""),
        "workdir": str(config.get("WorkingDir") or ""),
    }


class DockerBackend:
    """A Dockerfile built by the local Docker engine on the pinned Debian base."""

    name = "docker"

    def __init__(self, dockerfile: Path | None = None, client: Any = None) -> None:
        self._dockerfile = dockerfile
        self._client = client

    @classmethod
    def connected(cls) -> DockerBackend:
        """A backend with its engine connection checked now (before any long build step)."""
        return cls(client=connect())

    def dockerfile(self, loaded: LoadedSpec) -> Path:
        """The Dockerfile: given explicitly, or ``docker/Dockerfile`` inside the source tree."""
        if self._dockerfile is not None:
            path = self._dockerfile
        else:
            default = loaded.base / DOCKER_DIR / DOCKERFILE
            if not default.is_file():
                path = default
            else:
                path = context_directory(loaded) / DOCKERFILE
        if not path.is_file() or path.is_symlink():
            raise SpecInvalid(
                f"{path}: the docker backend builds the Dockerfile next to the spec"
                f" ({DOCKER_DIR}/{DOCKERFILE}); it does not exist or is not a regular file"
            )
        return path.resolve()

    def _cache_key(
        self, base_sha256: str, context: str, dockerfile: str, epoch: int, engine: str
    ) -> str:
        doc = {
            "recipe": RECIPE_VERSION,
            "base": base_sha256,
            "context": context,
            "dockerfile": dockerfile,
            "epoch": epoch,
            "engine": engine,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def build_rootfs(
        self,
        loaded: LoadedSpec,
        *,
        epoch: int,
        use_cache: bool,
        progress: ProgressSink,
        resolver: Resolver,
    ) -> RootfsResult:
        dockerfile = self.dockerfile(loaded)
        context = dockerfile.parent
        files = _context_files(context)
        check_dockerfile(dockerfile, _read_dockerfile(dockerfile))
        client = self._client or connect()
        engine = _engine_version(client)
        tool = f"docker {engine}"
        # the base is pinned by the lock whatever happens to the Dockerfile: reuse it
        base = NativeBackend().build_rootfs(
            loaded, epoch=epoch, use_cache=True, progress=progress, resolver=resolver
        )
        key = self._cache_key(base.sha256, context_digest(files), dockerfile.name, epoch, engine)
        final = cache_dir("rootfs-docker") / key
        if use_cache and (final / "rootfs.json").exists():
            result = self._verified(final, tool, loaded)
            self._check_config(loaded, dockerfile, self._record(final)["config"])
            return result
        started = time.perf_counter()
        with atomic_directory(final) as out:
            with tempfile.TemporaryDirectory(prefix="docker-", dir=out.parent) as tmp:
                work = Path(tmp)
                record = self._build(
                    client, loaded, base, files, dockerfile, epoch, work, out, progress
                )
            record.update(
                {
                    "epoch": epoch,
                    "key": key,
                    "engine": engine,
                    "base_sha256": base.sha256,
                    "build_seconds": round(time.perf_counter() - started, 1),
                }
            )
            record["sha256"] = sha256_file(out / "rootfs.tar")
            (out / "rootfs.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        prune_cache(final.parent, keep=ROOTFS_CACHE_KEEP, marker="rootfs.json")
        result = self._verified(final, tool, loaded)
        result.reused = False
        return result

    def _build(
        self,
        client: Any,
        loaded: LoadedSpec,
        base: RootfsResult,
        files: list[_ContextFile],
        dockerfile: Path,
        epoch: int,
        work: Path,
        out: Path,
        progress: ProgressSink,
    ) -> dict[str, Any]:
        from docker.errors import APIError, BuildError, DockerException
        from requests.exceptions import RequestException

        created: list[str] = []  # images to remove, newest last
        container: Any = None
        try:
            progress.start("rootfs: docker import of the pinned base", None)
            try:
                reply = client.api.import_image_from_file(str(base.tarball))
                base_id = str(json.loads(str(reply).strip().splitlines()[-1])["status"])
                created.append(base_id)
                base_attrs = client.api.inspect_image(base_id)
            except (DockerException, ValueError, KeyError, IndexError) as exc:
                raise BuildStepFailed(
                    f"docker import of {base.tarball}: {_error_line(exc)}"
                ) from None
            progress.done()
            layers = list((base_attrs.get("RootFS") or {}).get("Layers") or [])
            if layers != [f"sha256:{base.sha256}"]:
                raise DigestMismatch(
                    f"docker import of {base.tarball}: layers {layers}, expected the tarball's"
                    f" sha256:{base.sha256}"
                )
            progress.start(f"rootfs: docker build {dockerfile}", None)
            ctx = work / "context.tar"
            with open(ctx, "wb") as fh:
                _context_tar(files, epoch, fh)
            try:
                with open(ctx, "rb") as fh:
                    image, _logs = client.images.build(
                        fileobj=fh,
                        custom_context=True,
                        dockerfile=dockerfile.name,
                        buildargs={"BASE": base_id, "SOURCE_DATE_EPOCH": str(epoch)},
                        network_mode="none",
                        nocache=True,
                        pull=False,
                        rm=True,
                        forcerm=True,
                    )
            except BuildError as exc:
                log = list(exc.build_log)
                # the images of the steps that succeeded: removed with the others below
                created += _step_images(log)
                last = _last_log_line(log) or _error_line(exc)
                raise BuildStepFailed(f"docker build of {dockerfile} failed: {last}") from None
            except (APIError, DockerException) as exc:
                raise BuildStepFailed(
                    f"docker build of {dockerfile} failed: {_error_line(exc)}"
                ) from None
            image_id = str(image.id)
            created.append(image_id)
            progress.done()
            attrs = client.api.inspect_image(image_id)
            built_layers = list((attrs.get("RootFS") or {}).get("Layers") or [])
            if built_layers[:1] != layers:
                raise DigestMismatch(
                    f"{dockerfile}: the image is not built on the pinned base (its first layer"
                    f" is {built_layers[:1] or 'missing'}, the base is sha256:{base.sha256});"
                    " the final stage must start with: ARG BASE / FROM ${BASE}"
                )
            config = _image_config(attrs)
            self._check_config(loaded, dockerfile, config)
            progress.start("rootfs: docker export", None)
            try:
                own = image_entries(client, image_id, INIT_LAYER_PATHS | {""})
                container = client.api.create_container(
                    image_id, network_disabled=True, command=["/nonexistent"]
                )
                export = work / "export.tar"
                with open(export, "wb") as fh:
                    for chunk in client.api.export(container["Id"], _CHUNK):
                        fh.write(chunk)
            except DockerException as exc:
                raise BuildStepFailed(f"docker export of {image_id}: {_error_line(exc)}") from None
            normalize_export(
                export,
                out / "rootfs.tar",
                epoch=epoch,
                replaced=INIT_LAYER_PATHS,
                image=own,
            )
            progress.done()
            return {
                "image_id": image_id,
                "base_image_id": base_id,
                "dockerfile": dockerfile.name,
                "config": config,
            }
        except (DockerException, RequestException) as exc:
            raise BuildStepFailed(
                f"docker engine, building {dockerfile}: {_error_line(exc)}"
            ) from None
        finally:
            if container is not None:
                try:
                    client.api.remove_container(container["Id"], force=True)
                except (DockerException, RequestException):
                    pass
            for image_id in reversed(created):
                try:
                    client.api.remove_image(image_id, force=True, noprune=False)
                except (DockerException, RequestException):
                    pass

    def _check_config(self, loaded: LoadedSpec, dockerfile: Path, config: dict[str, Any]) -> None:
        app = loaded.spec.app
        cmd, env = list(config["cmd"]), dict(config["env"])
        user, workdir = str(config["user"]), str(config["workdir"])
        if cmd != list(app.cmd):
            raise SpecInvalid(
                f"{dockerfile}: the image runs ENTRYPOINT+CMD {list(cmd)}, the spec's app.cmd is"
                f" {list(app.cmd)} (make them equal)"
            )
        if env != dict(app.env):
            keys = sorted(k for k in {*env, *app.env} if env.get(k) != app.env.get(k))
            raise SpecInvalid(
                f"{dockerfile}: the image's ENV differs from the spec's app.env in"
                f" {', '.join(keys[:5])} (make them equal)"
            )
        if user not in ("", "root", "0", "0:0"):
            raise SpecInvalid(f"{dockerfile}: USER {user} cannot be honoured by the enclave init")
        if workdir not in ("", "/"):
            raise SpecInvalid(
                f"{dockerfile}: WORKDIR {workdir} cannot be honoured by the enclave init"
            )

    def _record(self, final: Path) -> dict[str, Any]:
        try:
            record = json.loads((final / "rootfs.json").read_text())
            if not isinstance(record, dict):
                raise ValueError("not an object")
            for field in ("sha256", "config"):
                if field not in record:
                    raise KeyError(field)
            return record
        except (OSError, ValueError, KeyError) as exc:
            raise DigestMismatch(
                f"cached docker rootfs {final}: unreadable record ({exc}); delete it"
            ) from None

    def _verified(self, final: Path, tool: str, loaded: LoadedSpec) -> RootfsResult:
        """The cache entry, its tarball verified on first use (see :class:`RootfsResult`)."""
        recorded = str(self._record(final)["sha256"])
        return RootfsResult.from_cache(final, recorded, loaded.lock, tool, "cached docker rootfs")


_STEP_IMAGE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")


def _step_images(log: Iterable[Any]) -> list[str]:
    """The image ids the classic builder reports (`` ---> <id>``) for each finished step."""
    out: list[str] = []
    for item in log:
        if isinstance(item, dict):
            match = _STEP_IMAGE.match(str(item.get("stream") or "").rstrip("\n"))
            if match:
                out.append(match.group(1))
    return out


def _last_log_line(log: Iterable[Any]) -> str:
    last = ""
    for item in log:
        if not isinstance(item, dict):
            continue
        text = item.get("error") or item.get("stream") or ""
        detail = item.get("errorDetail")
        if isinstance(detail, dict) and detail.get("message"):
            text = detail["message"]
        line = " ".join(str(text).split())
        if line:
            last = line
    return last[:300]
