"""The enclave's ``/init``: a static musl binary built deterministically from C source.

Fixed flags, ``-ffile-prefix-map`` so no build path leaks, a content-derived
build id (``--build-id=sha1``), stripped, no dates (the source uses none of
``__DATE__``/``__TIME__``, checked).

The compiler runs in the build sandbox (:mod:`builder.sandbox`) on a copy of the
source file alone, so nothing outside it (a host file named by ``#include`` or
``.incbin``) can reach the binary.

A build may reuse an earlier binary from the cache, keyed by the digest of
everything that shapes it: every file the compiler reads (the source and each
header, from the compiler's own dependency output, ``-M``/``-MD``, with their
sha256), flags, compiler and musl versions, the builder's code; the cached bytes
are re-verified against their recorded sha256 on every use.  Reproducibility runs
turn the cache off and compile.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.sandbox import Sandbox, run_sandboxed
from builder.spec import InitSpec
from builder.toolchain import builder_code_digest, toolchain_versions
from enclave_audit.errors import BuildStepFailed, DigestMismatch, InvalidInput, SpecInvalid
from enclave_audit.fsutil import (
    atomic_directory,
    cache_dir,
    prune_cache,
    read_regular_file,
    touch_entry,
)
from enclave_audit.tools import require

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
    #: every file the compiler read (its dependency output), with its sha256
    depends: tuple[tuple[str, str], ...] = ()


#: the most bytes of C source read for /init or a helper
INIT_SOURCE_MAX_BYTES = 4 << 20
_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "SOURCE_DATE_EPOCH": "0"}
#: a compile runs this long at most (an #include of an endless file cannot hang the build)
COMPILE_TIMEOUT = 300.0


def compile_flags(spec: InitSpec) -> tuple[str, ...]:
    return (*spec.cflags, *FIXED_FLAGS)


def parse_depfile(text: str) -> list[str]:
    """The prerequisites of a make rule as gcc writes it with ``-M``/``-MD``."""
    _, sep, body = text.replace("\\\n", " ").partition(": ")
    if not sep:
        raise BuildStepFailed("the compiler's dependency output has no rule")
    deps: list[str] = []
    word = ""
    escaped = False
    for ch in body:
        if escaped:
            word += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if word:
                deps.append(word)
            word = ""
        else:
            word += ch
    if word:
        deps.append(word)
    return [d.replace("$$", "$") for d in deps]


def _digests(work: Path, deps: list[str]) -> tuple[tuple[str, str], ...]:
    """(path as the compiler named it, sha256) of each dependency, sorted, without repeats."""
    out: dict[str, str] = {}
    for dep in deps:
        path = Path(dep) if Path(dep).is_absolute() else work / dep
        try:
            data = read_regular_file(path, limit=64 << 20)
        except InvalidInput as exc:
            raise BuildStepFailed(f"compiler dependency {dep}: {exc.message}") from None
        out[dep] = hashlib.sha256(data).hexdigest()
    return tuple(sorted(out.items()))


def _sandbox(work: Path) -> Sandbox:
    return Sandbox(writable=(work,))


#: assembler directives that read a file, or build directive names (macros, .irp), in
#: the compiler's assembly: C never produces them, only inline ``asm`` does
_ASM_FILE_DIRECTIVES = re.compile(
    r"(?:^|[\s;:])\.(incbin|include|macro|irpc?|altmacro)\b", re.IGNORECASE | re.MULTILINE
)


def dependencies(work: Path, flags: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """What compiling ``work/init.c`` reads, from the compiler's own dependency output.

    The compiler runs in the build sandbox with the same flags as the compile, to
    assembly (``-S -MD``): the dependency list names the source and every header it
    includes, and the assembly shows every inline ``asm``.  An assembler directive
    that reads a file (``.incbin``, ``.include``) or could spell one (``.macro``,
    ``.irp``) is refused: the assembler's reads are not in the dependency output.
    """
    musl_gcc = require("musl-gcc")
    run_sandboxed(
        [musl_gcc, *flags, "-S", "-MD", "-MF", "init.d", "-o", "init.s", "init.c"],
        sandbox=_sandbox(work),
        cwd=work,
        env=_ENV,
        what="musl-gcc -S -MD (init dependencies)",
        timeout=COMPILE_TIMEOUT,
    )
    asm = (work / "init.s").read_text("utf-8", "replace")
    found = _ASM_FILE_DIRECTIVES.search(asm)
    if found:
        raise SpecInvalid(
            f"init source: inline assembly uses .{found.group(1).lower()}, which reads files"
            " outside the compiler's dependency list (refused)"
        )
    deps = parse_depfile((work / "init.d").read_text("utf-8", "surrogateescape"))
    for name in ("init.d", "init.s"):
        (work / name).unlink()
    return _digests(work, deps)


def init_cache_key(depends: tuple[tuple[str, str], ...], flags: tuple[str, ...]) -> str:
    """Everything that shapes the binary, as one digest: every byte the compiler reads
    (source and headers, from its dependency output), flags, toolchain, builder code."""
    tools = toolchain_versions()
    doc = {
        "depends": [list(d) for d in depends],
        "flags": list(flags),
        "toolchain": {k: tools.get(k, "") for k in ("musl-gcc", "gcc", "ld", "musl")},
        "code": builder_code_digest(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def build_init(
    spec: InitSpec, source: Path, out_dir: Path, *, use_cache: bool = False
) -> InitArtifact:
    """Compile ``source`` into ``out_dir/init`` (or reuse a verified cached binary).

    The compile runs in the build sandbox (:mod:`builder.sandbox`) on a copy of the
    source alone: a host file the source names (``#include``, ``.incbin``) does not
    exist there, so it cannot reach the binary.
    """
    try:
        code = read_regular_file(source, limit=INIT_SOURCE_MAX_BYTES)
    except InvalidInput as exc:
        raise SpecInvalid(f"cannot read the init source: {exc.message}") from None
    for token in _FORBIDDEN:
        if token in code:
            raise SpecInvalid(
                f"{source}: uses {token.decode()}, which makes the build non-reproducible"
            )
    flags = compile_flags(spec)
    with tempfile.TemporaryDirectory(prefix="init-") as tmp:
        work = Path(tmp)
        (work / "init.c").write_bytes(code)
        depends = dependencies(work, flags)
        if not use_cache:
            return _compile(work, code, flags, depends, out_dir)
        entry = cache_dir("init") / init_cache_key(depends, flags)
        if (entry / "init.json").exists():
            touch_entry(entry)
            return _cached(entry, code, flags, depends, out_dir)
        with atomic_directory(entry) as staging:
            built = _compile(work, code, flags, depends, staging)
            record = {
                "sha256": built.sha256,
                "source_sha256": built.source_sha256,
                "depends": [list(d) for d in depends],
            }
            (staging / "init.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    prune_cache(entry.parent, keep=8, marker="init.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(entry / "init", out_dir / "init")
    (out_dir / "init").chmod(0o755)
    return InitArtifact(
        out_dir / "init", built.sha256, built.source_sha256, flags, depends=built.depends
    )


def _cached(
    entry: Path,
    code: bytes,
    flags: tuple[str, ...],
    depends: tuple[tuple[str, str], ...],
    out_dir: Path,
) -> InitArtifact:
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
        depends=depends,
    )


def _compile(
    work: Path,
    code: bytes,
    flags: tuple[str, ...],
    depends: tuple[tuple[str, str], ...],
    out_dir: Path,
) -> InitArtifact:
    musl_gcc = require("musl-gcc")
    run_sandboxed(
        [musl_gcc, *flags, f"-ffile-prefix-map={work}=.", "-MD", "-MF", "init.d",
         "-o", "init", "init.c"],
        sandbox=_sandbox(work),
        cwd=work,
        env=_ENV,
        what="musl-gcc (init)",
        timeout=COMPILE_TIMEOUT,
    )  # fmt: skip
    read = _digests(work, parse_depfile((work / "init.d").read_text("utf-8", "surrogateescape")))
    if read != depends:
        # the files changed between the dependency pass and the compile
        raise BuildStepFailed("init: the compiler read other files than its dependency pass named")
    built = work / "init"
    data = built.read_bytes()
    if data[:4] != b"\x7fELF":
        raise BuildStepFailed("musl-gcc produced something that is not an ELF file")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built, out_dir / "init")
    (out_dir / "init").chmod(0o755)
    for name in ("init", "init.d"):
        (work / name).unlink()
    return InitArtifact(
        path=out_dir / "init",
        sha256=hashlib.sha256(data).hexdigest(),
        source_sha256=hashlib.sha256(code).hexdigest(),
        flags=flags,
        depends=depends,
    )
