"""The build sandbox: steps that run audited inputs see only their work directory.

Compiling the audited ``init.c`` and building the kernel with the audited config
(and, in the rootfs backends, the package installation and its hooks) run code or
directives chosen by the party being audited: an ``.incbin "/etc/shadow"`` in C,
a ``CONFIG_INITRAMFS_SOURCE``, a symlink in the source pointing at a host file.
Each such step runs under bubblewrap (Debian's ``bwrap``) in new user, mount,
network, PID, IPC, UTS and cgroup namespaces with every capability dropped:

* the host's ``/usr`` (the toolchain) and the few ``/etc`` files the dynamic
  linker and ``update-alternatives`` links need are mounted read-only;
* the step's work directories are mounted read-write at their own paths, and any
  input directories read-only; nothing else of the host exists in the sandbox
  (``/tmp`` is an empty tmpfs, ``/dev`` holds only ``null`` unless asked for the
  minimal device set, ``/proc`` only when asked for, and then the sandbox's own);
* there is no network at all (only a loopback device), no terminal (a new
  session), and the sandbox dies with its parent.

So a host file named by an audited input cannot be read, by construction: the
path does not exist where the step runs.  A host without a working ``bwrap`` is an
:class:`EnvironmentProblem` (the build fails closed, it never runs unsandboxed).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from enclave_audit.errors import EnvironmentProblem
from enclave_audit.tools import Completed, require, run

#: top-level host directories that are symlinks into /usr on a merged-/usr system
_USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: /etc entries the toolchain needs: the dynamic linker's cache and alternatives links
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives")
#: /etc entries name resolution and TLS need, for a sandbox with the network
_NET_ETC = ("resolv.conf", "hosts", "nsswitch.conf", "gai.conf", "ssl", "ca-certificates")
#: capabilities a sandbox never keeps: each one undoes the mount confinement
_NEVER_CAPS = frozenset(
    {
        "CAP_SYS_ADMIN",
        "CAP_MKNOD",
        "CAP_DAC_READ_SEARCH",
        "CAP_SYS_PTRACE",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_BOOT",
        "CAP_NET_ADMIN",
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYSLOG",
        "CAP_SYS_TIME",
        "CAP_MAC_ADMIN",
        "CAP_MAC_OVERRIDE",
        "CAP_LINUX_IMMUTABLE",
    }
)
#: what installing packages into a chroot as root needs, and nothing more
INSTALL_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_SETFCAP",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
)


@dataclass(frozen=True)
class Sandbox:
    """What one sandboxed step may see (see the module docstring)."""

    #: directories mounted read-write at their own path (the step's work directories)
    writable: tuple[Path, ...] = ()
    #: directories or files mounted read-only at their own path (inputs)
    readable: tuple[Path, ...] = ()
    #: mount a /proc of the sandbox's own PID namespace (make and scripts may need it)
    proc: bool = False
    #: /dev with null, zero, full, random, urandom and tty instead of null alone
    devices: bool = False
    #: capabilities kept, for a step that must act as root (installing packages into a
    #: chroot: chown, chroot, setuid); only when running as root, and then without a user
    #: namespace (so files may belong to any uid) but never CAP_SYS_ADMIN, CAP_MKNOD or
    #: CAP_DAC_READ_SEARCH: no mount or remount, no device node, no open-by-handle
    caps: tuple[str, ...] = ()
    #: share the host's network (only the input resolver, e.g. resolving a lock, needs it);
    #: the resolver's own files (/etc/resolv.conf, /etc/hosts, CA certificates) come along
    network: bool = False

    def command(
        self, argv: Sequence[str | os.PathLike[str]], *, cwd: Path, env: Mapping[str, str]
    ) -> list[str]:
        """The ``bwrap`` command line that runs ``argv`` in this sandbox."""
        bwrap = require("bwrap")
        refused = sorted(set(self.caps) & _NEVER_CAPS)
        if refused:
            raise ValueError(f"the sandbox never grants {', '.join(refused)}")
        if self.caps and os.geteuid() != 0:
            raise EnvironmentProblem("a sandbox keeping capabilities needs root")
        # every namespace; a user namespace only without caps (--unshare-all would try one)
        out = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        if not self.network:
            out.append("--unshare-net")
        if self.caps:
            # no user namespace: a chroot's files may belong to any uid; every capability
            # but the listed ones is dropped (bwrap keeps them all for root otherwise)
            out += ["--cap-drop", "ALL"]
            for cap in self.caps:
                out += ["--cap-add", cap]
        else:
            out += ["--unshare-user", "--cap-drop", "ALL"]
        out += [
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        for name in _USR_LINKS:
            host = Path("/") / name
            if host.is_symlink():
                out += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                out += ["--ro-bind", str(host), str(host)]
        for name in (*_ETC, *(_NET_ETC if self.network else ())):
            host = Path("/etc") / name
            if host.exists():
                out += ["--ro-bind", str(host), str(host)]
        out += ["--tmpfs", "/tmp"]  # noqa: S108 - an empty tmpfs inside the sandbox
        if self.devices:
            out += ["--dev", "/dev"]
        else:
            out += ["--tmpfs", "/dev", "--dev-bind", "/dev/null", "/dev/null"]
        if self.proc:
            out += ["--proc", "/proc"]
        for path in self.readable:
            real = str(Path(path).resolve())
            out += ["--ro-bind", real, real]
        for path in self.writable:
            real = str(Path(path).resolve())
            out += ["--bind", real, real]
        for key in sorted(env):
            out += ["--setenv", key, env[key]]
        out += ["--chdir", str(Path(cwd).resolve()), "--", *(os.fspath(a) for a in argv)]
        return out


@functools.cache
def _probe() -> str:
    """'' when bwrap can make a sandbox here, else why not (one line)."""
    done = run(
        Sandbox().command(["/usr/bin/true"], cwd=Path("/"), env={"PATH": "/usr/bin"}),
        check=False,
        timeout=60,
        what="bwrap (sandbox probe)",
    )
    if done.returncode == 0:
        return ""
    text = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
    return text[-1] if text else f"exit code {done.returncode}"


def available() -> str:
    """'' when the sandbox works on this host, else the reason (for tests and doctor)."""
    try:
        return _probe()
    except EnvironmentProblem as exc:
        return exc.message


def run_sandboxed(
    argv: Sequence[str | os.PathLike[str]],
    *,
    sandbox: Sandbox,
    cwd: Path,
    env: Mapping[str, str],
    what: str,
    check: bool = True,
    timeout: float | None = None,
) -> Completed:
    """Run ``argv`` inside ``sandbox`` (fails closed: no working bwrap, no run)."""
    why = _probe()
    if why:
        raise EnvironmentProblem(
            f"the build sandbox (bubblewrap) does not work here: {why}; it needs user"
            " namespaces (sysctl kernel.unprivileged_userns_clone=1, or run as root)"
        )
    return run(
        sandbox.command(argv, cwd=cwd, env=env),
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        what=what,
        check=check,
        timeout=timeout,
        input=b"",
    )
