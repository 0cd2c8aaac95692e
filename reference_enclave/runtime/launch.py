"""The simulation launcher: run an EIF's own root file system with a simulated NSM.

``launch_image`` unpacks the EIF's ramdisks (:func:`builder.initramfs.extract`),
reads the image's ``/cmd`` and ``/env`` exactly as its ``/init`` would, and runs
that command with the host's ``unshare`` (mount, network, PID namespaces) and
``chroot`` into the image's ``/rootfs`` (see :mod:`.sandbox`). So the Python, NumPy,
wheels and runtime code that run are the measured ones; what is *not* exercised is
the kernel and the C ``/init`` itself (their mounts need a real boot: use QEMU for
that). The NSM is :class:`~reference_enclave.nsm.simulator.SimulatedNsm` with the
PCRs :func:`builder.eif.describe_eif` measures from that same file, served on a
Unix socket bound at ``/run/enclave/nsm.sock``; the host proxy's channels sit beside
it. ``launch_host_process`` runs the runtime from this checkout instead (fast path
for tests, no image).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from enclave_audit.errors import (
    BridgeRefused,
    EnclaveAuditError,
    EnvironmentProblem,
    InvalidInput,
    KmsRefused,
    ModelTampered,
    ServiceUnavailable,
)
from enclave_audit.tools import require
from enclave_runtime import strictjson
from enclave_runtime.channels import Endpoint
from reference_enclave.nsm.sim_ca import SimulationCa
from reference_enclave.nsm.simulator import NsmSocketServer, SimulatedNsm
from reference_enclave.proxy import HostProxy, ProxySettings, start_proxy

READY_TIMEOUT = 900.0
ACCELERATOR_SOCKET_NAME = "accelerator.sock"
_REPO = Path(__file__).resolve().parents[2]
#: exit codes the runtime reports, mapped back to the errors it raised
_EXIT_ERRORS: dict[int, type[EnclaveAuditError]] = {
    BridgeRefused.exit_code: BridgeRefused,
    KmsRefused.exit_code: KmsRefused,
    ModelTampered.exit_code: ModelTampered,
}


@dataclass(frozen=True)
class HostServices:
    """What the host provides: the KMS, the model store, credentials, capture."""

    kms_url: str
    model_store: Path
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"
    client_port: int = 0
    capture: Path | None = None
    #: the GPU bridge's accelerator socket on the host; it must be named accelerator.sock,
    #: and its directory (which holds the bounce buffers) is bound into the enclave
    accelerator: Path | None = None


@dataclass
class RunningEnclave:
    """A launched enclave: ``url`` for clients, ``nsm`` for inspection, ``stop()``."""

    process: subprocess.Popen[bytes]
    proxy: HostProxy
    nsm: SimulatedNsm
    nsm_server: NsmSocketServer
    workdir: Path
    log_path: Path
    events: list[dict[str, object]] = field(default_factory=list)
    _owned_workdir: bool = True

    @property
    def url(self) -> str:
        return self.proxy.client_url

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.proxy.stop()
        self.nsm_server.stop()
        if self._owned_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:  # keep the log; the unpacked image is large and reproducible from the EIF
            shutil.rmtree(self.workdir / "root", ignore_errors=True)
            shutil.rmtree(self.workdir / "run", ignore_errors=True)  # sockets

    def __enter__(self) -> RunningEnclave:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _proxy_settings(services: HostServices, sockdir: Path) -> ProxySettings:
    return ProxySettings(
        client_listen=Endpoint("tcp", "127.0.0.1", services.client_port),
        enclave_client=Endpoint("unix", str(sockdir / "client.sock")),
        kms_listen=Endpoint("unix", str(sockdir / "kms.sock")),
        kms_url=services.kms_url,
        parent_listen=Endpoint("unix", str(sockdir / "parent.sock")),
        model_store=services.model_store,
        credentials={
            "access_key_id": services.access_key_id,
            "secret_access_key": services.secret_access_key,
            "region": services.region,
        },
        capture=services.capture,
    )


def _start(
    argv: list[str],
    env: Mapping[str, str],
    *,
    nsm: SimulatedNsm,
    services: HostServices,
    workdir: Path,
    sockdir: Path,
    owned: bool,
    timeout: float,
) -> RunningEnclave:
    sockdir.mkdir(parents=True, exist_ok=True)
    os.chmod(sockdir, 0o700)
    nsm_server = NsmSocketServer(nsm, sockdir / "nsm.sock")
    try:
        proxy = start_proxy(_proxy_settings(services, sockdir))
    except BaseException:
        nsm_server.stop()
        raise
    log_path = workdir / "enclave.log"
    try:
        log = open(log_path, "wb")
        process = subprocess.Popen(
            argv,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        log.close()
    except OSError as exc:
        proxy.stop()
        nsm_server.stop()
        raise EnvironmentProblem(f"cannot start the enclave process: {exc}") from None
    running = RunningEnclave(
        process, proxy, nsm, nsm_server, workdir, log_path, _owned_workdir=owned
    )
    try:
        _wait_ready(running, timeout)
    except BaseException:
        running.stop()
        raise
    return running


def _wait_ready(running: RunningEnclave, timeout: float) -> None:
    assert running.process.stdout is not None
    ready = threading.Event()
    stdout = running.process.stdout

    def read() -> None:
        with open(running.log_path, "ab") as log:
            for line in stdout:
                log.write(line)
                log.flush()
                try:  # the image's output: parsed strictly, never trusted to be sane
                    event = strictjson.loads(line, what="event", error=ValueError)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    running.events.append(event)
                    if event.get("event") == "ready":
                        ready.set()

    threading.Thread(target=read, daemon=True, name="enclave-log").start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.2):
        code = running.process.poll()
        if code is not None:
            time.sleep(0.2)  # let the reader drain the last lines
            failure = next(
                (e for e in reversed(running.events) if e.get("event") == "failed"), None
            )
            detail = str(failure["error"]) if failure else _tail(running.log_path)
            error = _EXIT_ERRORS.get(code, ServiceUnavailable)
            raise error(f"enclave exited with status {code} before it was ready: {detail}")
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"enclave not ready after {timeout:.0f} s")


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"
    return "(no output)"


def launch_host_process(
    *,
    config_path: Path,
    nsm: SimulatedNsm,
    services: HostServices,
    workdir: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> RunningEnclave:
    """Run the runtime from this checkout (no image, no chroot); tests and benchmarks."""
    owned = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="enclave-host-"))
    sockdir = work / "run"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(_REPO),
        "ENCLAVE_RUN_DIR": str(sockdir),
        "ENCLAVE_RUNTIME_CONFIG": str(config_path),
        "ENCLAVE_TRANSPORT": "unix",
    }
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if name in os.environ:  # benchmarks pin BLAS threads on both sides alike
            env[name] = os.environ[name]
    if services.accelerator is not None:
        env["ENCLAVE_ACCELERATOR"] = str(_accelerator_socket(services.accelerator))
    argv = [sys.executable, "-m", "enclave_runtime"]
    return _start(
        argv,
        env,
        nsm=nsm,
        services=services,
        workdir=work,
        sockdir=sockdir,
        owned=owned,
        timeout=timeout,
    )


def _accelerator_socket(path: Path) -> Path:
    socket_path = Path(path).resolve()
    if socket_path.name != ACCELERATOR_SOCKET_NAME:
        raise InvalidInput(
            f"--accelerator {path}: the socket must be named {ACCELERATOR_SOCKET_NAME}"
            " (its directory is bound into the enclave at /run/accelerator)"
        )
    if not socket_path.exists():
        raise ServiceUnavailable(f"no accelerator listening at {socket_path}")
    return socket_path


@dataclass(frozen=True)
class UnpackedImage:
    root: Path
    rootfs: Path
    cmd: list[str]
    env: dict[str, str]


#: directories of the image's root file system that the launcher mounts over
MOUNT_POINTS = ("proc", "sys", "dev", "tmp", "run")
#: the largest /cmd or /env read
MAX_LAUNCH_FILE = 1 << 20


def _launch_file(path: Path, image: Path) -> str:
    """An image's ``/cmd`` or ``/env``: a regular file of the image, never a link out of it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InvalidInput(
            f"{image}: the ramdisks have no /{path.name} (not a nitro-cli layout)"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInput(
                f"{image}: /{path.name} is a symbolic link; /cmd and /env must be files"
                " of the image itself"
            ) from None
        raise InvalidInput(f"{image}: cannot read /{path.name}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInput(f"{image}: /{path.name} is not a regular file")
        data = os.read(fd, MAX_LAUNCH_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_LAUNCH_FILE:
        raise InvalidInput(f"{image}: /{path.name} is larger than {MAX_LAUNCH_FILE} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{image}: /{path.name} is not UTF-8") from None


def _real_directory(path: Path, what: str, image: Path) -> None:
    """``path`` is a directory of the extracted image itself (not a link to one elsewhere)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise InvalidInput(
            f"{image}: the ramdisks have no {what} (not a nitro-cli layout)"
        ) from None
    if stat.S_ISLNK(mode):
        raise InvalidInput(
            f"{image}: {what} is a symbolic link; the launcher chroots into and mounts over it,"
            " so it must be a directory of the image itself"
        )
    if not stat.S_ISDIR(mode):
        raise InvalidInput(f"{image}: {what} is not a directory")


def unpack_image(image: Path, dest: Path) -> UnpackedImage:
    """Extract every ramdisk of ``image`` in order into ``dest``; read ``/cmd`` and ``/env``.

    The image is untrusted input to the host: ``/cmd`` and ``/env`` must be regular
    files and ``/rootfs`` (and each directory the launcher mounts over in it) a real
    directory, none of them a symbolic link, so nothing the launcher reads, chroots
    into or mounts over resolves outside the extracted image.
    """
    from builder.eif import EifReader
    from builder.initramfs import extract

    dest.mkdir(parents=True, exist_ok=True)
    with EifReader.open(image) as reader:
        for i, section in enumerate(reader.ramdisks):
            part = dest.parent / f".ramdisk{i}.cpio"
            reader.copy_section(section, part)
            try:
                extract(part, dest, devices=False)
            finally:
                part.unlink(missing_ok=True)
    root = dest
    cmd_text = _launch_file(root / "cmd", image)
    env_text = _launch_file(root / "env", image)
    rootfs = root / "rootfs"
    _real_directory(rootfs, "/rootfs", image)
    for sub in MOUNT_POINTS:
        if os.path.lexists(rootfs / sub):
            _real_directory(rootfs / sub, f"/rootfs/{sub}", image)
    cmd = [line for line in cmd_text.split("\n") if line]
    env = dict(line.split("=", 1) for line in env_text.split("\n") if "=" in line)
    if not cmd:
        raise InvalidInput(f"{image}: /cmd is empty")
    return UnpackedImage(root, rootfs, cmd, env)


def launch_image(
    image: Path,
    *,
    ca: SimulationCa,
    services: HostServices,
    workdir: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> RunningEnclave:
    """Run ``image`` in the chroot simulation (root required)."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("enclave run (simulation) needs root for unshare and chroot")
    require("unshare")
    require("mount")
    nsm = SimulatedNsm.for_eif(image, ca)
    owned = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="enclave-sim-"))
    try:
        unpacked = unpack_image(image, work / "root")
    except BaseException:
        if owned:
            shutil.rmtree(work, ignore_errors=True)
        raise
    sockdir = work / "run"
    argv = [
        "unshare",
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--kill-child",
        sys.executable,
        "-m",
        "reference_enclave.runtime.sandbox",
        str(unpacked.rootfs),
        str(sockdir),
        str(unpacked.root / "cmd"),
        str(unpacked.root / "env"),
    ]
    if services.accelerator is not None:
        argv.append(str(_accelerator_socket(services.accelerator).parent))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(_REPO)}
    return _start(
        argv,
        env,
        nsm=nsm,
        services=services,
        workdir=work,
        sockdir=sockdir,
        owned=owned,
        timeout=timeout,
    )
