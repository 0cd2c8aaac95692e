"""The enclave kernel: built from Debian's pinned ``linux-source`` with a pinned config.

Deterministic by construction: the version banner's time, user, host and build
count come from fixed variables (``KBUILD_BUILD_TIMESTAMP=@<epoch>`` with the
epoch of the pinned source package itself, so the kernel does not move when the
application is committed), ``LOCALVERSION`` is empty, ``TZ``/``LC_ALL`` fixed,
and the environment of ``make`` is built from scratch.  The result is cached
under ``cache_dir("kernel", <input digest>)`` and re-verified on every use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from builder.inputs.refs import kernel_input
from builder.inputs.resolver import Resolver
from builder.sandbox import Sandbox, run_sandboxed
from builder.spec import KernelSpec
from builder.toolchain import toolchain_versions
from enclave_audit.errors import BuildStepFailed, DigestMismatch, SpecInvalid
from enclave_audit.fsutil import atomic_directory, cache_dir, read_bytes, sha256_file
from enclave_audit.progress import NullProgress, ProgressSink
from enclave_audit.tools import require

#: bump when the recipe below changes in a way that changes the output.
RECIPE_VERSION = 1
#: .config lines that the toolchain writes, not the author: not compared.
_TOOLCHAIN_KEYS = (
    "CONFIG_CC_",
    "CONFIG_GCC_",
    "CONFIG_CLANG_",
    "CONFIG_LD_",
    "CONFIG_LLD_",
    "CONFIG_AS_",
    "CONFIG_RUSTC_",
    "CONFIG_BINDGEN_",
    "CONFIG_PAHOLE_",
    "CONFIG_TOOLS_SUPPORT_",
    "CONFIG_RUST_IS_AVAILABLE",
)
KERNEL_TOOLS = ("make", "gcc", "bc", "flex", "bison", "xz", "dpkg-deb", "perl")


@dataclass(frozen=True)
class KernelArtifact:
    """A built bzImage with what it was built from."""

    bzimage: Path
    config: Path
    sha256: str
    input_digest: str
    source_date_epoch: int
    release: str
    reused: bool


def kernel_input_digest(spec: KernelSpec, config_path: Path, toolchain: dict[str, str]) -> str:
    doc = {
        "recipe": RECIPE_VERSION,
        "package": spec.package,
        "version": spec.version,
        "sha256": spec.sha256,
        "config_sha256": hashlib.sha256(read_bytes(config_path)).hexdigest(),
        "toolchain": {k: toolchain[k] for k in sorted(toolchain) if k in ("gcc", "make", "ld")},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _config_lines(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# CONFIG_") and line.endswith(" is not set"):
            key, value = line[2:].split(" ", 1)[0], "n"
        elif line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
        else:
            continue
        if key.startswith(_TOOLCHAIN_KEYS):
            continue
        out[key] = value
    return out


def _make_env(epoch: int, jobs: int) -> dict[str, str]:
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/nonexistent",
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
        "SOURCE_DATE_EPOCH": str(epoch),
        "KBUILD_BUILD_TIMESTAMP": f"@{epoch}",
        "KBUILD_BUILD_USER": "enclave-audit",
        "KBUILD_BUILD_HOST": "enclave-audit",
        "KBUILD_BUILD_VERSION": "1",
        "LOCALVERSION": "",
        "MAKEFLAGS": f"-j{jobs}",
    }


def _source_member(spec: KernelSpec) -> str:
    return f"./usr/src/{spec.package}.tar.xz"


def _unpack_source(deb: Path, spec: KernelSpec, dest: Path) -> int:
    """Unpack the kernel tree from the .deb into ``dest``; returns the tarball's mtime."""
    require("dpkg-deb")
    require("xz")
    member_name = _source_member(spec)
    deb_proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert deb_proc.stdout is not None
    mtime: int | None = None
    try:
        with tarfile.open(fileobj=deb_proc.stdout, mode="r|") as tf:
            for info in tf:
                if info.name != member_name:
                    continue
                mtime = int(info.mtime)
                src = tf.extractfile(info)
                assert src is not None
                tar_proc = subprocess.Popen(
                    ["tar", "-xJ", "--no-same-owner", "-C", str(dest)], stdin=subprocess.PIPE
                )
                assert tar_proc.stdin is not None
                with src:
                    while chunk := src.read(1 << 20):
                        tar_proc.stdin.write(chunk)
                tar_proc.stdin.close()
                if tar_proc.wait() != 0:
                    raise BuildStepFailed(f"unpacking {member_name} from {deb.name} failed")
                break
    except tarfile.TarError as exc:
        raise BuildStepFailed(f"{deb}: unreadable data archive: {exc}") from None
    finally:
        if deb_proc.stdout is not None:
            deb_proc.stdout.close()
        deb_proc.wait()
    if mtime is None:
        raise BuildStepFailed(f"{deb.name} does not contain {member_name}")
    return mtime


def build_kernel(
    spec: KernelSpec,
    config_path: Path,
    *,
    resolver: Resolver,
    jobs: int | None = None,
    progress: ProgressSink | None = None,
    force: bool = False,
) -> KernelArtifact:
    """The bzImage for ``spec`` + ``config_path``, from the cache or built now."""
    progress = progress or NullProgress()
    for tool in KERNEL_TOOLS:
        require(tool)
    toolchain = toolchain_versions()
    digest = kernel_input_digest(spec, config_path, toolchain)
    final = cache_dir("kernel") / digest
    meta_path = final / "kernel.json"
    if not force and meta_path.exists():
        return _verified_cached(final, digest)
    deb = resolver.path(kernel_input(spec))
    jobs = jobs or max(1, len(os.sched_getaffinity(0)))
    started = time.perf_counter()
    pinned = read_bytes(config_path).decode("utf-8", "replace")
    work_root = cache_dir("kernel-work")
    with atomic_directory(final) as out:
        work = work_root / f"{digest}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            progress.start("kernel: unpacking source", None)
            epoch = _unpack_source(deb, spec, work)
            trees = [p for p in work.iterdir() if p.is_dir()]
            if len(trees) != 1:
                raise BuildStepFailed(
                    f"{spec.package}: expected one source tree, found {len(trees)}"
                )
            tree = trees[0]
            shutil.copyfile(config_path, tree / ".config")
            env = _make_env(epoch, jobs)
            # the audited config drives make: it runs in the build sandbox, which
            # sees the unpacked tree (read-write) and the toolchain, no host file
            sandbox = Sandbox(writable=(work,), proc=True, devices=True)
            progress.start("kernel: olddefconfig", None)
            run_sandboxed(
                ["make", "olddefconfig"],
                sandbox=sandbox,
                cwd=tree,
                env=env,
                what="kernel make olddefconfig",
            )
            resolved = (tree / ".config").read_text("utf-8", "replace")
            want, got = _config_lines(pinned), _config_lines(resolved)
            changed = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            if changed:
                raise SpecInvalid(
                    f"{config_path}: kernel config is not fully resolved for"
                    f" {spec.package} {spec.version}; olddefconfig changed {', '.join(changed[:5])}"
                )
            progress.start(f"kernel: make bzImage (-j{jobs}, minutes)", None)
            run_sandboxed(
                ["make", "bzImage"], sandbox=sandbox, cwd=tree, env=env, what="kernel make bzImage"
            )
            release = (tree / "include" / "config" / "kernel.release").read_text().strip()
            shutil.copyfile(tree / "arch" / "x86" / "boot" / "bzImage", out / "bzImage")
            shutil.copyfile(tree / ".config", out / "config")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        meta = {
            "input_digest": digest,
            "sha256": sha256_file(out / "bzImage"),
            "config_sha256": sha256_file(out / "config"),
            "source_date_epoch": epoch,
            "release": release,
            "toolchain": toolchain,
            "jobs": jobs,
            "build_seconds": round(time.perf_counter() - started, 1),
        }
        (out / "kernel.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    progress.done()
    art = _verified_cached(final, digest)
    return KernelArtifact(**{**art.__dict__, "reused": False})


def _verified_cached(final: Path, digest: str) -> KernelArtifact:
    try:
        meta = json.loads((final / "kernel.json").read_text())
        recorded = str(meta["sha256"])
        epoch = int(meta["source_date_epoch"])
        release = str(meta["release"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DigestMismatch(
            f"cached kernel {final}: unreadable record ({exc}); delete it"
        ) from None
    config_recorded = str(meta.get("config_sha256", ""))
    if sha256_file(final / "config") != config_recorded:
        raise DigestMismatch(
            f"cached kernel config {final / 'config'} does not match the digest recorded"
            " when it was built (cache tampered or corrupt; delete it)"
        )
    got = sha256_file(final / "bzImage")
    if got != recorded:
        raise DigestMismatch(
            f"cached kernel {final / 'bzImage'} has sha256 {got}, recorded {recorded}"
            " when it was built (cache tampered or corrupt; delete it)"
        )
    return KernelArtifact(
        bzimage=final / "bzImage",
        config=final / "config",
        sha256=recorded,
        input_digest=digest,
        source_date_epoch=epoch,
        release=release,
        reused=True,
    )
