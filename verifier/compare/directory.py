"""Two directory trees (an unpacked rootfs): file type, permissions, link targets, contents.

Host-side owner and mtime are not compared (they describe the unpacking, not the image);
permission bits and the file capability (``security.capability`` xattr) are, because an
image carries them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from enclave_audit.model.difference import Change, DiffNode, NodeKind, Side
from verifier.compare.base import EngineApi, FileBlob, Member
from verifier.compare.nodes import describe_children

CAPABILITY_XATTR = "security.capability"


def _capability(path: Path) -> str | None:
    try:
        value = os.getxattr(path, CAPABILITY_XATTR, follow_symlinks=False)
    except OSError:
        return None
    return value.hex()


def _ftype(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode):
        return "char"
    if stat.S_ISBLK(mode):
        return "block"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "socket"


def walk(root: Path) -> Iterator[Member]:
    """Members of a tree in sorted order, never following symlinks."""
    stack = [""]
    while stack:
        rel = stack.pop()
        base = root / rel if rel else root
        try:
            names = sorted(os.listdir(base), reverse=True)
        except OSError:
            continue
        children: list[str] = []
        for name in sorted(names):
            relname = f"{rel}/{name}" if rel else name
            full = root / relname
            st = os.lstat(full)
            ftype = _ftype(st.st_mode)
            meta: list[tuple[str, str]] = [("mode", f"{stat.S_IMODE(st.st_mode):04o}")]
            blob = None
            if ftype == "symlink":
                meta.append(("link target", os.readlink(full)))
            elif ftype == "file":
                blob = FileBlob(full, relname)
                cap = _capability(full)
                if cap is not None:
                    meta.append((f"xattr {CAPABILITY_XATTR}", cap))
            elif ftype in ("char", "block"):
                meta.append(("rdev", f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"))
            yield Member(relname, ftype, tuple(meta), blob, fs_path=relname)
            if ftype == "dir":
                children.append(relname)
        stack.extend(reversed(children))


def compare_directories(
    left: Path, right: Path, path: tuple[str, ...], engine: EngineApi, depth: int
) -> DiffNode | None:
    la, lb = list(walk(left)), list(walk(right))
    children = engine.compare_members(la, lb, path, depth)
    # walking order is ours, not the data's: a "reordered" node would be noise here
    children = tuple(c for c in children if c.kind is not NodeKind.ORDER)
    if not children:
        return None
    return DiffNode(
        path=path,
        kind=NodeKind.DIRECTORY,
        change=Change.CONTENT,
        left=Side.of(value=f"{len(la)} entries"),
        right=Side.of(value=f"{len(lb)} entries"),
        summary=describe_children(children, "directory"),
        children=children,
    )
