"""Stage 2 of the simulation launcher, run as root inside fresh namespaces.

``unshare --mount --net --pid --fork --kill-child python3 -m
reference_enclave.runtime.sandbox ROOTFS SOCKDIR CMD ENV`` does what the image's
own ``/init`` does before it runs the application, minus what needs a real kernel
boot: bring up loopback (the only network, as in an enclave); mount ``/proc``,
``/sys``, a ``/dev`` with only null/zero/random/urandom (no ``/dev/nsm``), tmpfs
``/dev/shm``, ``/tmp`` and ``/run`` inside the root; bind the launcher's socket
directory at ``/run/enclave`` (the simulated NSM and the proxy's channels); chroot;
exec the image's ``/cmd`` with exactly the image's ``/env``.
Host-side only (it runs before the chroot, with the host's interpreter).
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import struct
import subprocess
import sys

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


class UnsafeImage(Exception):
    """A path of the image that would lead the launcher outside it."""


def _inside(rootfs: str, sub: str) -> str:
    """``rootfs/sub``, refused unless it is a directory of the image itself (or absent,
    then created): a symbolic link there would make a mount land on the host."""
    path = os.path.join(rootfs, sub)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        os.mkdir(path, 0o755)
        mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
        raise UnsafeImage(f"/rootfs/{sub} is not a directory of the image")
    if os.path.realpath(path) != os.path.join(os.path.realpath(rootfs), sub):
        raise UnsafeImage(f"/rootfs/{sub} resolves outside the image")
    return path


def prepare(rootfs: str, sockdir: str, accelerator_dir: str | None = None) -> None:
    if os.path.islink(rootfs) or not os.path.isdir(rootfs):
        raise UnsafeImage("/rootfs is not a directory of the image")
    _mount("--make-rprivate", "/")
    for sub in ("proc", "sys", "dev", "tmp", "run"):
        _inside(rootfs, sub)
    _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", os.path.join(rootfs, "proc"))
    _mount("-t", "sysfs", "-o", "nosuid,nodev,noexec,ro", "sysfs", os.path.join(rootfs, "sys"))
    dev = os.path.join(rootfs, "dev")
    _mount("-t", "tmpfs", "-o", "nosuid,mode=0755", "tmpfs", dev)
    for node in ("null", "zero", "random", "urandom"):
        target = os.path.join(dev, node)
        open(target, "w").close()
        _mount("--bind", f"/dev/{node}", target)
    os.makedirs(os.path.join(dev, "shm"), exist_ok=True)
    _mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "tmpfs", os.path.join(dev, "shm"))
    _mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777", "tmpfs", os.path.join(rootfs, "tmp"))
    run = os.path.join(rootfs, "run")
    _mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=0755", "tmpfs", run)
    os.makedirs(os.path.join(run, "enclave"), exist_ok=True)
    _mount("--bind", sockdir, os.path.join(run, "enclave"))
    if accelerator_dir is not None:
        # the GPU bridge: the accelerator's socket and the ciphertext-only bounce buffers
        os.makedirs(os.path.join(run, "accelerator"), exist_ok=True)
        _mount("--bind", accelerator_dir, os.path.join(run, "accelerator"))


def read_lines(path: str) -> list[str]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # the launcher checked: a file, no link
    with open(fd, encoding="utf-8") as fh:
        return [line for line in fh.read().split("\n") if line]


def main(argv: list[str]) -> int:  # returns only on usage errors; else it execs
    if len(argv) not in (4, 5):
        print("usage: sandbox ROOTFS SOCKDIR CMDFILE ENVFILE [ACCELERATOR_DIR]", file=sys.stderr)
        return 2
    rootfs, sockdir, cmd_file, env_file = argv[:4]
    accelerator_dir = argv[4] if len(argv) == 5 else None
    cmd = read_lines(cmd_file)
    env = dict(line.split("=", 1) for line in read_lines(env_file) if "=" in line)
    if not cmd:
        print("sandbox: /cmd is empty", file=sys.stderr)
        return 2
    loopback_up()
    try:
        prepare(rootfs, sockdir, accelerator_dir)
    except UnsafeImage as exc:
        print(f"sandbox: refusing the image: {exc}", file=sys.stderr)
        return 2
    os.chroot(rootfs)
    os.chdir("/")
    os.execve(cmd[0], cmd, env)  # noqa: S606 - exactly /init's execve(argv[0], argv, envp)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
