"""The enclave's ``/init``: a static musl binary built deterministically from C source.

Fixed flags, ``-ffile-prefix-map`` so no build path leaks, a content-derived
build id (``--build-id=sha1``), stripped, no dates (the source uses none of
``__DATE__``/``__TIME__``, checked).  Building takes well under a second, so it is
rebuilt every time rather than cached.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.spec import InitSpec
from enclave_audit.errors import BuildStepFailed, SpecInvalid
from enclave_audit.fsutil import read_bytes
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


def compile_flags(spec: InitSpec) -> tuple[str, ...]:
    return (*spec.cflags, *FIXED_FLAGS)


def build_init(spec: InitSpec, source: Path, out_dir: Path) -> InitArtifact:
    """Compile ``source`` into ``out_dir/init``."""
    musl_gcc = require("musl-gcc")
    code = read_bytes(source)
    for token in _FORBIDDEN:
        if token in code:
            raise SpecInvalid(
                f"{source}: uses {token.decode()}, which makes the build non-reproducible"
            )
    flags = compile_flags(spec)
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
