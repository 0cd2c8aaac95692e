"""A QEMU with the ``nitro-enclave`` machine, built once from Debian's source and cached.

Debian's ``qemu-system-x86`` is built without libcbor, and QEMU's Kconfig makes the
``nitro-enclave`` machine depend on it, so no Debian binary has the machine.  We build
the same upstream release Debian ships in bookworm-backports from Debian's own
``.orig.tar.xz`` (pinned by the SHA-256 Debian's Sources index lists), x86_64
softmmu only, with libcbor, and keep the stripped binary in the cache keyed by
everything that determines it (source digest, configure line, meson pins, recipe).

The firmware (``qboot.rom``, ``linuxboot_dma.bin``) comes from Debian's
``qemu-system-data`` package; the ``+ds`` tarball has its blobs stripped.

Steps and their pitfalls are described in ``shared/specs/qemu-nitro-enclave.md`` 2.1.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from enclave_audit.errors import (
    BuildStepFailed,
    DigestMismatch,
    EnvironmentProblem,
)
from enclave_audit.fsutil import atomic_directory, cache_dir, sha256_file, write_json_atomic
from enclave_audit.model.manifest import InputKind, PinnedInput
from enclave_audit.progress import NullProgress, ProgressSink
from enclave_audit.tools import require, run

#: Debian source package pinned for the build (bookworm-backports, as served in 2026).
DEBIAN_SUITE = "bookworm-backports"
DEBIAN_VERSION = "1:10.0.2+ds-2+deb13u1~bpo12+1"
ORIG_TARBALL = "qemu_10.0.2+ds.orig.tar.xz"
ORIG_SHA256 = "0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1"
ORIG_TOPDIR = "qemu-10.0.2"

#: The +ds tarball has no python/wheels; QEMU needs meson >= 1.5 and pycotap.
PIP_PINS = (
    "meson==1.5.2 --hash=sha256:77706e2368a00d789c097632ccf4fc39251fba56d03e1e1b262559a3c7a08f5b",
    "pycotap==1.3.1 --hash=sha256:1c3a25b3ff89e48f4e00f1f71dbbc1642b4f65c65d416524d07e73492fff25ea",
)

CONFIGURE_ARGS = (
    "--target-list=x86_64-softmmu",
    "--without-default-features",
    "--enable-libcbor",
    "--enable-gnutls",
    "--enable-fdt=system",
    "--enable-vhost-user",
    "--enable-tcg",
    "--disable-docs",
    "--disable-werror",
    "--disable-install-blobs",
)

#: Bump when the recipe below changes in a way that changes the binary.
RECIPE_VERSION = "1"

#: Debian packages the build and the binary need (scripts/apt-packages.txt lists them).
BUILD_PACKAGES = (
    "libglib2.0-dev",
    "libcbor-dev",
    "libgnutls28-dev",
    "libfdt-dev",
    "zlib1g-dev",
    "ninja-build",
    "pkg-config",
    "python3-venv",
    "flex",
    "bison",
    "xz-utils",
    "binutils",
)
FIRMWARE_PACKAGE = "qemu-system-data"
FIRMWARE_DIR = Path("/usr/share/qemu")
FIRMWARE_FILES = ("qboot.rom", "linuxboot_dma.bin")

BINARY_NAME = "qemu-system-x86_64"
MANIFEST_NAME = "qemu-build.json"
MANIFEST_SCHEMA = "enclave-audit/qemu-build/v1"
MACHINE = "nitro-enclave"
#: ``$ENCLAVE_AUDIT_QEMU``: a QEMU binary of the user's own (must list the machine).
QEMU_ENV = "ENCLAVE_AUDIT_QEMU"


@dataclass(frozen=True)
class QemuInstall:
    """A usable QEMU: its binary, firmware directory and where it came from."""

    binary: Path
    firmware_dir: Path
    version: str
    source: str  # "cache <key>" or "$ENCLAVE_AUDIT_QEMU"
    build_seconds: float | None = None


def build_key() -> str:
    """SHA-256 over every input that determines the built binary."""
    h = hashlib.sha256()
    for part in (ORIG_SHA256, DEBIAN_VERSION, RECIPE_VERSION, *PIP_PINS, *CONFIGURE_ARGS):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _cache_root() -> Path:
    return cache_dir("qemu")


def cached_build_dir() -> Path:
    return _cache_root() / build_key()


def check_firmware(firmware_dir: Path = FIRMWARE_DIR) -> Path:
    missing = [name for name in FIRMWARE_FILES if not (firmware_dir / name).is_file()]
    if missing:
        raise EnvironmentProblem(
            f"QEMU firmware {', '.join(missing)} not found in {firmware_dir}: install the Debian"
            f" package '{FIRMWARE_PACKAGE}' (apt-get install {FIRMWARE_PACKAGE})"
        )
    return firmware_dir


def has_nitro_machine(binary: Path) -> bool:
    """True when ``binary -machine help`` lists ``nitro-enclave``."""
    try:
        proc = subprocess.run(
            [os.fspath(binary), "-machine", "help"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if proc.returncode != 0:
        return False
    return any(
        line.split()[0] == MACHINE for line in proc.stdout.decode().splitlines() if line.split()
    )


def _qemu_version(binary: Path) -> str:
    proc = run([binary, "--version"], what="qemu --version")
    first = proc.stdout.decode("utf-8", "replace").splitlines()
    return first[0].strip() if first else "unknown"


def find_qemu() -> QemuInstall | None:
    """The QEMU to use, or None when none is built yet.

    ``$ENCLAVE_AUDIT_QEMU`` wins (and must have the machine); otherwise the cached
    build, whose binary is re-hashed against its manifest on every use.
    """
    override = os.environ.get(QEMU_ENV)
    if override:
        binary = Path(override)
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise EnvironmentProblem(f"${QEMU_ENV}={override}: not an executable file")
        if not has_nitro_machine(binary):
            raise EnvironmentProblem(
                f"${QEMU_ENV}={override}: this QEMU has no '{MACHINE}' machine"
                " (it needs QEMU >= 9.2 built with libcbor); run 'enclave-audit enclave qemu-setup'"
            )
        return QemuInstall(binary, check_firmware(), _qemu_version(binary), f"${QEMU_ENV}")
    return _load_cached(cached_build_dir())


def _load_cached(directory: Path) -> QemuInstall | None:
    manifest_path = directory / MANIFEST_NAME
    binary = directory / "bin" / BINARY_NAME
    if not manifest_path.is_file() or not binary.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        return None
    expected = manifest.get("binary_sha256")
    if sha256_file(binary) != expected:
        raise DigestMismatch(
            f"cached QEMU {binary} does not match the sha256 in {manifest_path};"
            f" delete {directory} and run 'enclave-audit enclave qemu-setup' again"
        )
    seconds = manifest.get("build_seconds")
    return QemuInstall(
        binary=binary,
        firmware_dir=check_firmware(),
        version=str(manifest.get("qemu_version", "unknown")),
        source=f"cache {directory.name[:16]}",
        build_seconds=float(seconds) if isinstance(seconds, int | float) else None,
    )


#: where the orig tarball is published (its pool path is the same in every suite that
#: carries this upstream version: trixie, bookworm-backports) and the snapshot time that
#: serves it once no suite does
ORIG_POOL_PATH = f"pool/main/q/qemu/{ORIG_TARBALL}"
DEBIAN_ARCHIVE = "deb http://deb.debian.org/debian trixie main"
SNAPSHOT_TIME = "20261205T000000Z"


def source_input() -> PinnedInput:
    return PinnedInput(
        name=ORIG_TARBALL,
        kind=InputKind.DEBIAN_SOURCE,
        version=DEBIAN_VERSION,
        filename=ORIG_POOL_PATH,
        origin=f"apt://deb.debian.org/source/qemu={DEBIAN_VERSION}",
        sha256=ORIG_SHA256,
    )


def fetch_source(progress: ProgressSink | None = None) -> Path:
    """Debian's orig tarball, through the resolver (store, mirror pool, snapshot archive).

    No apt configuration is used (the host's or a private one): the file is fetched by its
    pool path and pinned by sha256.
    """
    from builder.inputs.apt import parse_source_line
    from builder.inputs.resolver import Resolver, mirror_map_from_env

    resolver = Resolver(
        apt_sources=[parse_source_line(DEBIAN_ARCHIVE)],
        mirror_map=mirror_map_from_env(),
        snapshot_time=SNAPSHOT_TIME,
        progress=progress or NullProgress(),
    )
    return resolver.path(source_input())


def _check_build_tools() -> None:
    for tool in ("gcc", "ninja", "pkg-config", "flex", "bison", "xz", "strip", "python3"):
        if shutil.which(tool) is None:
            raise EnvironmentProblem(
                f"building QEMU needs '{tool}': install the Debian packages"
                f" {' '.join(BUILD_PACKAGES)}"
            )
    proc = subprocess.run(
        ["pkg-config", "--exists", "libcbor", "gnutls", "glib-2.0", "zlib"],
        check=False,
    )
    # bookworm's libfdt-dev ships no pkg-config file; look for its header
    if proc.returncode != 0 or not Path("/usr/include/libfdt.h").is_file():
        raise EnvironmentProblem(
            "building QEMU needs the development files of libcbor, gnutls, glib, libfdt and zlib:"
            f" apt-get install {' '.join(BUILD_PACKAGES)}"
        )


def _patch_blob_unpacking(tree: Path) -> None:
    """The +ds tarball lacks the edk2 blobs that pc-bios/meson.build wants to unpack."""
    meson_build = tree / "pc-bios" / "meson.build"
    text = meson_build.read_text()
    if "if unpack_edk2_blobs" not in text:
        raise BuildStepFailed(f"{meson_build}: 'if unpack_edk2_blobs' not found; recipe outdated")
    meson_build.write_text(text.replace("if unpack_edk2_blobs", "if false", 1))


def build_qemu(
    *,
    jobs: int = 2,
    niceness: int = 10,
    progress: ProgressSink | None = None,
    force: bool = False,
) -> QemuInstall:
    """Build (or reuse) the cached QEMU and return it.  Takes ~5 minutes on 2 cores."""
    progress = progress or NullProgress()
    if not force:
        existing = _load_cached(cached_build_dir())
        if existing is not None:
            return existing
    # one build at a time per cache (parallel test workers, two terminals)
    with open(_cache_root() / ".build.lock", "a+b") as lock:
        progress.start("QEMU build lock (one build at a time)")
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force:
            existing = _load_cached(cached_build_dir())
            if existing is not None:
                return existing
        return _build_locked(jobs=jobs, niceness=niceness, progress=progress)


def _build_locked(*, jobs: int, niceness: int, progress: ProgressSink) -> QemuInstall:
    check_firmware()
    _check_build_tools()
    tarball = fetch_source(progress)
    started = time.monotonic()
    work_parent = cache_dir("qemu", "work")
    nice = [shutil.which("nice") or "nice", "-n", str(niceness)]
    with tempfile.TemporaryDirectory(dir=work_parent, prefix="build-") as tmp:
        work = Path(tmp)
        progress.start(f"unpacking {ORIG_TARBALL}")
        run(["tar", "-xJf", tarball, "-C", work], what=f"tar {ORIG_TARBALL}")
        tree = work / ORIG_TOPDIR
        if not tree.is_dir():
            raise BuildStepFailed(f"{ORIG_TARBALL} has no top directory {ORIG_TOPDIR}")
        _patch_blob_unpacking(tree)
        progress.start("python venv with meson")
        venv = work / "venv"
        run([require("python3"), "-m", "venv", venv], what="python3 -m venv")
        requirements = work / "requirements.txt"
        requirements.write_text("\n".join(PIP_PINS) + "\n")
        run(
            [venv / "bin" / "pip", "install", "--quiet", "--require-hashes", "-r", requirements],
            what="pip install meson pycotap",
        )
        build = tree / "build"
        build.mkdir()
        progress.start("configuring QEMU (x86_64-softmmu, libcbor)")
        run(
            [*nice, "../configure", f"--python={venv / 'bin' / 'python3'}", *CONFIGURE_ARGS],
            cwd=build,
            what="QEMU configure",
        )
        config = build / "x86_64-softmmu-config-devices.h"
        if config.is_file() and "CONFIG_NITRO_ENCLAVE 1" not in config.read_text():
            raise BuildStepFailed(
                "QEMU configure did not enable CONFIG_NITRO_ENCLAVE (libcbor or gnutls missing?)"
            )
        progress.start(f"compiling QEMU (ninja -j{jobs}, ~5 min on 2 cores)")
        run([*nice, "ninja", f"-j{jobs}", BINARY_NAME], cwd=build, what="QEMU ninja build")
        binary = build / BINARY_NAME
        run(["strip", binary], what="strip qemu")
        if not has_nitro_machine(binary):
            raise BuildStepFailed(f"the built QEMU does not list the '{MACHINE}' machine")
        version = _qemu_version(binary)
        seconds = round(time.monotonic() - started, 1)
        final = cached_build_dir()
        with atomic_directory(final) as staging:
            (staging / "bin").mkdir()
            shutil.copy2(binary, staging / "bin" / BINARY_NAME)
            write_json_atomic(
                staging / MANIFEST_NAME,
                {
                    "schema": MANIFEST_SCHEMA,
                    "build_key": build_key(),
                    "debian_source": f"qemu {DEBIAN_VERSION} ({DEBIAN_SUITE})",
                    "orig_tarball": ORIG_TARBALL,
                    "orig_sha256": ORIG_SHA256,
                    "configure": list(CONFIGURE_ARGS),
                    "pip": list(PIP_PINS),
                    "recipe": RECIPE_VERSION,
                    "qemu_version": version,
                    "binary_sha256": sha256_file(staging / "bin" / BINARY_NAME),
                    "build_seconds": seconds,
                },
            )
    progress.done()
    loaded = _load_cached(final)
    if loaded is None:
        raise BuildStepFailed(f"QEMU build finished but {final} is incomplete")
    return loaded


def require_qemu() -> QemuInstall:
    """The QEMU to boot with, or a one-line instruction to build it."""
    found = find_qemu()
    if found is None:
        raise EnvironmentProblem(
            f"no QEMU with the '{MACHINE}' machine: run 'enclave-audit enclave qemu-setup'"
            " (builds QEMU 10.0.2 from Debian's source, ~5 min) or set"
            f" ${QEMU_ENV} to such a binary"
        )
    return found
