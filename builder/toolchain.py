"""Versions of the tools that shape the output, recorded in every manifest."""

from __future__ import annotations

import functools
import hashlib
import shutil
from pathlib import Path

from enclave_audit.tools import run

_QUERIES: dict[str, list[str]] = {
    "gcc": ["gcc", "--version"],
    "make": ["make", "--version"],
    "ld": ["ld", "--version"],
    "musl-gcc": ["musl-gcc", "--version"],
    "mmdebstrap": ["mmdebstrap", "--version"],
    "apt": ["apt-get", "--version"],
    "dpkg": ["dpkg", "--version"],
}


@functools.cache
def toolchain_versions() -> dict[str, str]:
    """tool -> first line of its version output, for the tools installed here."""
    out: dict[str, str] = {}
    for name, argv in _QUERIES.items():
        if shutil.which(argv[0]) is None:
            continue
        done = run(argv, check=False, what=f"{name} --version")
        text = (done.stdout or done.stderr).decode("utf-8", "replace").strip().splitlines()
        out[name] = text[0].strip() if text else "unknown"
    musl = run(["dpkg-query", "-W", "-f=${Version}", "musl-dev"], check=False)
    if musl.returncode == 0:
        out["musl"] = musl.stdout.decode().strip()
    return out


@functools.cache
def builder_code_digest() -> str:
    """Digest of the builder's own code: cached artefacts of an older recipe are not reused."""
    h = hashlib.sha256()
    base = Path(__file__).resolve().parent
    for path in sorted(base.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(base).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()
