"""External tools: one runner, actionable "install package X" errors."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from enclave_audit.errors import BuildStepFailed, EnvironmentProblem

#: executable -> the Debian package that provides it (for error messages and setup).
DEBIAN_PACKAGE: dict[str, str] = {
    "mmdebstrap": "mmdebstrap",
    "musl-gcc": "musl-tools",
    "gcc": "gcc",
    "make": "make",
    "bc": "bc",
    "flex": "flex",
    "bison": "bison",
    "cpio": "cpio",
    "dpkg-source": "dpkg-dev",
    "dpkg-scanpackages": "dpkg-dev",
    "gpgv": "gpgv",
    "bwrap": "bubblewrap",
    "apt-get": "apt",
    "dockerd": "docker.io",
    "docker": "docker.io",
    "qemu-system-x86_64": "qemu-system-x86",
    "chromium": "chromium",
    "diffoscope": "diffoscope",
    "openssl": "openssl",
    "unshare": "util-linux",
    "chroot": "coreutils",
    "npm": "npm",
    "node": "nodejs",
    "xz": "xz-utils",
    "zstd": "zstd",
    "objcopy": "binutils",
    "readelf": "binutils",
    "git": "git",
    "ip": "iproute2",
}


def which(tool: str) -> str | None:
    return shutil.which(tool)


def require(tool: str) -> str:
    """Path of ``tool`` or an :class:`EnvironmentProblem` naming its Debian package."""
    found = shutil.which(tool)
    if found is None:
        package = DEBIAN_PACKAGE.get(tool, tool)
        raise EnvironmentProblem(
            f"required tool '{tool}' not found: install the Debian package '{package}'"
            f" (apt-get install {package})"
        )
    return found


@dataclass(frozen=True)
class Completed:
    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes


def _tail(data: bytes, lines: int = 25) -> str:
    text = data.decode("utf-8", "replace").rstrip().splitlines()
    return "\n".join(text[-lines:])


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: bytes | None = None,
    timeout: float | None = None,
    capture: bool = True,
    what: str | None = None,
) -> Completed:
    """Run a tool with an argument list (never a shell).

    A missing executable raises :class:`EnvironmentProblem`; a non-zero exit with
    ``check`` raises :class:`BuildStepFailed` whose message carries the last
    lines of stderr.
    """
    argv = [os.fspath(a) for a in args]
    if os.sep not in argv[0]:
        require(argv[0])
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BuildStepFailed(f"{what or argv[0]}: timed out after {timeout} s") from None
    except FileNotFoundError:
        raise EnvironmentProblem(f"cannot execute {argv[0]}") from None
    done = Completed(tuple(argv), proc.returncode, proc.stdout or b"", proc.stderr or b"")
    if check and proc.returncode != 0:
        detail = _tail(done.stderr) or _tail(done.stdout)
        last = detail.splitlines()[-1] if detail else ""
        raise BuildStepFailed(f"{what or argv[0]} failed with exit code {proc.returncode}: {last}")
    return done
