"""What builder/rootfs/prune.py removes after a purge, resolving links inside the root only."""

from __future__ import annotations

import os
from pathlib import Path

from builder.rootfs.prune import dangling_links, exists_in_root, prune, unowned_programs


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for d in ("usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu/blis", "etc/alternatives",
              "var/lib/dpkg/info", "var/lib/dpkg/alternatives", "var/lib/dpkg/updates",
              "var/cache/debconf", "etc/rcS.d", "etc/init.d"):  # fmt: skip
        (root / d).mkdir(parents=True)
    os.symlink("usr/bin", root / "bin")  # merged /usr
    os.symlink("usr/sbin", root / "sbin")
    (root / "usr/bin/python3.11").write_bytes(b"\x7fELF")
    os.symlink("python3.11", root / "usr/bin/python3")
    (root / "usr/lib/x86_64-linux-gnu/blis/libblas.so.3").write_bytes(b"\x7fELF")
    # alternatives: absolute targets, valid inside the root only
    os.symlink(
        "/usr/lib/x86_64-linux-gnu/blis/libblas.so.3",
        root / "etc/alternatives/libblas.so.3-x86_64-linux-gnu",
    )
    os.symlink(
        "/etc/alternatives/libblas.so.3-x86_64-linux-gnu",
        root / "usr/lib/x86_64-linux-gnu/libblas.so.3",
    )
    # a purged package's leftovers: an alternative chain and an init link
    os.symlink("/usr/bin/mawk", root / "etc/alternatives/awk")
    os.symlink("/etc/alternatives/awk", root / "usr/bin/awk")
    os.symlink("../init.d/hwclock.sh", root / "etc/rcS.d/S01hwclock.sh")
    # a program nobody owns any more (dpkg leaves its start-stop-daemon behind)
    (root / "usr/sbin/start-stop-daemon").write_bytes(b"\x7fELF")
    # an alternative of an installed package: no file list names it, it stays
    os.symlink("/usr/bin/python3.11", root / "etc/alternatives/python")
    os.symlink("/etc/alternatives/python", root / "usr/bin/python")
    (root / "var/lib/dpkg/info/python3.11.list").write_text(
        "/.\n/usr\n/usr/bin\n/usr/bin/python3.11\n"
    )
    (root / "var/lib/dpkg/info/python3.list").write_text("/usr/bin/python3\n")
    for name in ("status", "status-old", "lock", "lock-frontend"):
        (root / "var/lib/dpkg" / name).write_text("")
    (root / "var/lib/dpkg/alternatives/awk").write_text("auto\n")
    return root


def test_links_resolve_inside_the_root_not_on_the_host(tmp_path: Path) -> None:
    root = _root(tmp_path)
    assert exists_in_root(str(root), "/usr/lib/x86_64-linux-gnu/libblas.so.3")
    assert exists_in_root(str(root), "/bin/python3")  # through the merged-/usr link
    assert not exists_in_root(str(root), "/usr/bin/awk")
    # /etc/passwd exists on the host, not in this root
    os.symlink("/etc/passwd", root / "etc/hostlink")
    assert Path("/etc/passwd").exists() and not exists_in_root(str(root), "/etc/hostlink")
    # a loop is not a target
    os.symlink("loop-b", root / "etc/loop-a")
    os.symlink("loop-a", root / "etc/loop-b")
    assert not exists_in_root(str(root), "/etc/loop-a")
    assert set(dangling_links(str(root))) == {
        "/etc/alternatives/awk",
        "/usr/bin/awk",  # resolves through the dangling alternative
        "/etc/hostlink",
        "/etc/loop-a",
        "/etc/loop-b",
        "/etc/rcS.d/S01hwclock.sh",
    }


def test_prune_removes_leftovers_and_keeps_the_package_list(tmp_path: Path) -> None:
    root = _root(tmp_path)
    assert unowned_programs(str(root)) == ["/usr/sbin/start-stop-daemon"]
    removed = prune(str(root))
    assert "/usr/sbin/start-stop-daemon" in removed
    # the chain awk -> /etc/alternatives/awk -> /usr/bin/mawk goes as a whole
    assert {"/etc/alternatives/awk", "/usr/bin/awk", "/etc/rcS.d/S01hwclock.sh"} <= set(removed)
    assert not (root / "usr/bin/awk").is_symlink()
    assert (root / "usr/lib/x86_64-linux-gnu/libblas.so.3").is_symlink()
    assert (root / "usr/bin/python3").is_symlink() and (root / "usr/bin/python3.11").exists()
    assert (root / "usr/bin/python").is_symlink()
    assert (root / "var/lib/dpkg/status").exists()
    assert (root / "var/lib/dpkg/info/python3.11.list").exists()
    for gone in ("status-old", "lock", "lock-frontend", "alternatives", "updates"):
        assert not (root / "var/lib/dpkg" / gone).exists()
    assert not (root / "var/cache/debconf").exists()
    assert prune(str(root)) == []  # nothing left to do
