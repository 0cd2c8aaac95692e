"""Tidy a root file system after packages were purged from it (an mmdebstrap hook).

``python3 -I prune.py ROOT`` runs on the build host, after ``dpkg --purge`` inside the
root removed what the image does not run (shells, login tools, the package manager;
``[debian] purge`` in the spec).  Purged packages' maintainer scripts were not run, so
what they would have cleaned up is removed here, by rule rather than by name:

* symbolic links that resolve to nothing *inside ROOT* (``/etc/alternatives`` entries
  and their ``/usr/bin`` links, init-script links of purged services), repeatedly,
  since removing one can leave another dangling;
* programs (regular files) in ``bin``/``sbin`` that no installed package lists (dpkg
  leaves its own ``start-stop-daemon`` behind when it purges itself);
* dpkg state that only dpkg itself used (``status-old``, ``diversions-old``, the
  alternatives database, lock files, pending updates) and the debconf cache.

``var/lib/dpkg/status`` and ``var/lib/dpkg/info/*.list`` stay: they are the image's
package list (the audit's SBOM reads them) and now list exactly what is installed.
Only this standard library module runs; its bytes are part of the rootfs cache key.
"""

from __future__ import annotations

import os
import shutil
import sys

_MAX_HOPS = 40
#: mount points mmdebstrap may have filled while hooks run: never walked
_MOUNTS = ("proc", "sys", "dev")
_DPKG_STATE = (
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/alternatives",
    "var/lib/dpkg/lock",
    "var/lib/dpkg/lock-frontend",
    "var/lib/dpkg/triggers/Lock",
    "var/lib/dpkg/updates",
    "var/cache/debconf",
)


def exists_in_root(root: str, path: str) -> bool:
    """Whether ``path`` (absolute, as seen from inside ``root``) resolves to something there.

    Symbolic links are followed component by component, absolute targets from ``root``
    (never from the host's ``/``), ``..`` stops at ``root``.
    """
    pending = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            resolved = resolved[:-1]
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > _MAX_HOPS:
                return False
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
            continue
        if not os.path.lexists(candidate):
            return False
        resolved.append(part)
    return True


def dangling_links(root: str) -> list[str]:
    """Paths (inside ``root``, absolute) of symbolic links that resolve to nothing there."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.samefile(dirpath, root):
            dirnames[:] = [d for d in dirnames if d not in _MOUNTS]
        dirnames.sort()
        inside = "/" + os.path.relpath(dirpath, root).lstrip(".")
        for name in sorted(filenames + dirnames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full) and not exists_in_root(root, f"{inside.rstrip('/')}/{name}"):
                out.append(f"{inside.rstrip('/')}/{name}")
    return out


_PROGRAM_DIRS = ("usr/bin", "usr/sbin", "bin", "sbin")


def _merged(path: str) -> str:
    """``/bin/x`` and ``/usr/bin/x`` name one file on a merged-/usr system."""
    for old, new in (("/bin/", "/usr/bin/"), ("/sbin/", "/usr/sbin/")):
        if path.startswith(old):
            return new + path[len(old) :]
    return path


def unowned_programs(root: str) -> list[str]:
    """Regular files in the program directories that no package's file list names.

    Symbolic links are left to :func:`dangling_links`: ``update-alternatives`` creates
    links no file list names, and those of installed packages must stay.
    """
    info = os.path.join(root, "var/lib/dpkg/info")
    if not os.path.isdir(info):
        return []
    owned: set[str] = set()
    for name in sorted(os.listdir(info)):
        if name.endswith(".list"):
            with open(os.path.join(info, name), encoding="utf-8", errors="replace") as fh:
                owned.update(_merged(line.rstrip("\n")) for line in fh if line.strip())
    out: list[str] = []
    for directory in _PROGRAM_DIRS:
        full = os.path.join(root, directory)
        if os.path.islink(full) or not os.path.isdir(full):
            continue  # merged /usr: bin -> usr/bin is listed once
        for name in sorted(os.listdir(full)):
            path = f"/{directory}/{name}"
            target = os.path.join(full, name)
            if os.path.islink(target) or not os.path.isfile(target):
                continue
            if _merged(path) not in owned:
                out.append(path)
    return out


def prune(root: str) -> list[str]:
    """Remove unowned programs, dangling links (until none is left) and dpkg's own state."""
    removed: list[str] = []
    for program in unowned_programs(root):
        os.unlink(os.path.join(root, program.lstrip("/")))
        removed.append(program)
    while True:
        links = dangling_links(root)
        if not links:
            break
        for link in links:
            os.unlink(os.path.join(root, link.lstrip("/")))
        removed += links
    for rel in _DPKG_STATE:
        path = os.path.join(root, rel)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
            removed.append(f"/{rel}/")
        elif os.path.lexists(path):
            os.unlink(path)
            removed.append(f"/{rel}")
    return sorted(removed)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not os.path.isdir(argv[0]):
        print("usage: prune.py ROOT", file=sys.stderr)
        return 2
    for path in prune(argv[0]):
        print(f"prune: removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
