"""The enclave's ``/init``: a static musl binary built deterministically from C source.

Fixed flags, ``-ffile-prefix-map`` so no build path leaks, a content-derived
build id (``--build-id=sha1``), stripped, no dates (the source uses none of
``__DATE__``/``__TIME__``, checked).

A build may reuse an earlier binary from the cache, keyed by the digest of
everything that shapes it (source, flags, compiler and musl versions, the
builder's code); the cached bytes are re-verified against their recorded
sha256 on every use.  Reproducibility runs turn the cache off and compile.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.spec import InitSpec
from builder.toolchain import builder_code_digest, toolchain_versions
from enclave_audit.errors import BuildStepFailed, DigestMismatch, SpecInvalid
from enclave_audit.fsutil import (
    atomic_directory,
    cache_dir,
    prune_cache,
    read_bytes,
    touch_entry,
)
from enclave_audit.tools import require, run

#: flags every build uses in addition to the spec's cflags.
FIXED_FLAGS = (
    "-std=gnu11",
    "-fno-asynchronous-unwind-tables",
    "-Wl,--build-id=sha1",
    "-Wl,--hash-style=gnu",
    "-s",
)
_FORBIDDEN = (b"__DATE__", b"__TIME__", b"__TIMESTAMP__")


@dataclass(frozen=True)
class InitArtifact:
    path: Path
    sha256: str
    source_sha256: str
    flags: tuple[str, ...]
    reused: bool = False


def compile_flags(spec: InitSpec) -> tuple[str, ...]:
    return (*spec.cflags, *FIXED_FLAGS)


def init_cache_key(code: bytes, flags: tuple[str, ...]) -> str:
    """Everything that shapes the binary, as one digest."""
    tools = toolchain_versions()
    doc = {
        "source": hashlib.sha256(code).hexdigest(),
        "flags": list(flags),
        "toolchain": {k: tools.get(k, "") for k in ("musl-gcc", "gcc", "ld", "musl")},
        "code": builder_code_digest(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def build_init(
    spec: InitSpec, source: Path, out_dir: Path, *, use_cache: bool = False
) -> InitArtifact:
    """Compile ``source`` into ``out_dir/init`` (or reuse a verified cached binary)."""
    code = read_bytes(source)
    for token in _FORBIDDEN:
        if token in code:
            raise SpecInvalid(
                f"{source}: uses {token.decode()}, which makes the build non-reproducible"
            )
    flags = compile_flags(spec)
    if not use_cache:
        return _compile(code, flags, out_dir)
    entry = cache_dir("init") / init_cache_key(code, flags)
    if (entry / "init.json").exists():
        touch_entry(entry)
        return _cached(entry, code, flags, out_dir)
    with atomic_directory(entry) as staging:
        built = _compile(code, flags, staging)
        record = {"sha256": built.sha256, "source_sha256": built.source_sha256}
        (staging / "init.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    prune_cache(entry.parent, keep=8, marker="init.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(entry / "init", out_dir / "init")
    (out_dir / "init").chmod(0o755)
    return InitArtifact(out_dir / "init", built.sha256, built.source_sha256, flags)


def _cached(entry: Path, code: bytes, flags: tuple[str, ...], out_dir: Path) -> InitArtifact:
    try:
        recorded = str(json.loads((entry / "init.json").read_text())["sha256"])
        data = (entry / "init").read_bytes()
    except (OSError, ValueError, KeyError) as exc:
        raise DigestMismatch(f"cached init {entry}: unreadable ({exc}); delete it") from None
    got = hashlib.sha256(data).hexdigest()
    if got != recorded:
        raise DigestMismatch(
            f"cached init {entry / 'init'} has sha256 {got}, recorded {recorded}"
            " when it was built (cache tampered or corrupt; delete it)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "init").write_bytes(data)
    (out_dir / "init").chmod(0o755)
    return InitArtifact(
        path=out_dir / "init",
        sha256=got,
        source_sha256=hashlib.sha256(code).hexdigest(),
        flags=flags,
        reused=True,
    )


def _compile(code: bytes, flags: tuple[str, ...], out_dir: Path) -> InitArtifact:
    musl_gcc = require("musl-gcc")
    with tempfile.TemporaryDirectory(prefix="init-") as tmp:
        work = Path(tmp)
        src = work / "init.c"
        src.write_bytes(code)
        run(
            [musl_gcc, *flags, f"-ffile-prefix-map={work}=.", "-o", "init", "init.c"],
            cwd=work,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "SOURCE_DATE_EPOCH": "0"},
            what="musl-gcc (init)",
        )
        built = work / "init"
        data = built.read_bytes()
        if data[:4] != b"\x7fELF":
            raise BuildStepFailed("musl-gcc produced something that is not an ELF file")
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, out_dir / "init")
    (out_dir / "init").chmod(0o755)
    return InitArtifact(
        path=out_dir / "init",
        sha256=hashlib.sha256(data).hexdigest(),
        source_sha256=hashlib.sha256(code).hexdigest(),
        flags=flags,
    )
