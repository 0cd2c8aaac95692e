"""``audit`` and ``diff`` see every member the kernel unpacks.

Real images: a hardened gcc-built ELF, an EC private key from cryptography, ramdisks
written with the builder's newc stream and EIFs from ``write_eif``.  The hostile image
appends a second cpio archive after the application ramdisk's ``TRAILER!!!`` holding a
world-writable setuid-root shell, a PEM private key and gdbserver; the clean image
passes, the hostile one fails, and both verbs name the hidden members.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import need_tool, run_cli

from builder.eif import write_eif
from builder.initramfs.newc import EntryKind, type_bits
from builder.initramfs.writer import NewcStream
from enclave_audit.model.difference import Change, Significance
from enclave_audit.model.findings import Verdict
from verifier.audit import audit_image, load_policy
from verifier.compare import compare_paths

F, D, L = EntryKind.FILE, EntryKind.DIRECTORY, EntryKind.SYMLINK

HARDENED = r"""
#include <stdio.h>
int main(int argc, char **argv) { (void)argv; printf("%d\n", argc); return 0; }
"""


@dataclass(frozen=True)
class M:
    name: str
    kind: EntryKind = F
    perm: int = 0o644
    data: bytes = b""
    uid: int = 0
    ino: int | None = None
    nlink: int = 1


def archive(members: list[M]) -> bytes:
    out = io.BytesIO()
    stream = NewcStream(out)
    for i, m in enumerate(members, 1):
        stream.header(
            m.name,
            mode=type_bits(m.kind) | m.perm,
            ino=m.ino or i,
            nlink=2 if m.kind is D else m.nlink,
            mtime=1_700_000_000,
            size=len(m.data),
            uid=m.uid,
        )
        if m.data:
            stream.data_bytes(m.data)
    stream.trailer()
    return out.getvalue()


@dataclass(frozen=True)
class Kit:
    root: Path
    elf: bytes
    key_pem: bytes
    kernel: Path

    def image(self, name: str, app: bytes, boot: bytes | None = None) -> Path:
        d = self.root / name
        d.mkdir()
        (d / "boot.cpio").write_bytes(
            boot
            if boot is not None
            else archive([M("init", perm=0o755, data=b"#!/bin/sh\nexec /rootfs/usr/bin/app\n")])
        )
        (d / "app.cpio").write_bytes(app)
        eif = d / "image.eif"
        write_eif(
            eif,
            kernel=self.kernel,
            cmdline="console=ttyS0 reboot=k panic=30 pci=off nomodules",
            ramdisks=[d / "boot.cpio", d / "app.cpio"],
            name=name,
            version="1.0",
            build_time="2023-11-14T22:13:20Z",
        )
        return eif


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    need_tool("gcc", "gcc")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = tmp_path_factory.mktemp("kernel-view")
    (root / "app.c").write_text(HARDENED)
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-fPIE",
            "-pie",
            "-fstack-protector-strong",
            "-D_FORTIFY_SOURCE=2",
            "-Wl,-z,relro,-z,now",
            "-s",
            "-o",
            str(root / "app"),
            str(root / "app.c"),
        ],
        check=True,
    )
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    kernel = root / "kernel.bin"
    kernel.write_bytes(b"\x4d\x5a" + bytes(range(256)) * 64)
    return Kit(root, (root / "app").read_bytes(), key, kernel)


def clean_members(kit: Kit) -> list[M]:
    return [
        M("cmd", data=b"/usr/bin/app\n"),
        M("env", data=b"PATH=/usr/bin\n"),
        M("rootfs", D, 0o755),
        M("rootfs/usr", D, 0o755),
        M("rootfs/usr/bin", D, 0o755),
        M("rootfs/usr/bin/app", perm=0o755, data=kit.elf),
    ]


def hidden_members(kit: Kit) -> list[M]:
    return [
        M("rootfs/bin", D, 0o755),
        M("rootfs/bin/sh", perm=0o4777, data=kit.elf),  # world-writable setuid-root shell
        M("rootfs/etc", D, 0o755),
        M("rootfs/etc/ssl", D, 0o755),
        M("rootfs/etc/ssl/server.key", perm=0o600, data=kit.key_pem),
        M("rootfs/usr/bin/gdbserver", perm=0o755, data=kit.elf),
    ]


HIDDEN_PATHS = ("rootfs/bin/sh", "rootfs/etc/ssl/server.key", "rootfs/usr/bin/gdbserver")


@pytest.fixture(scope="module")
def clean(kit: Kit) -> Path:
    return kit.image("clean", archive(clean_members(kit)))


@pytest.fixture(scope="module")
def concatenated(kit: Kit) -> Path:
    second = archive(hidden_members(kit))
    return kit.image("concatenated", archive(clean_members(kit)) + bytes(512) + second)


def test_the_clean_image_passes(clean: Path) -> None:
    report = audit_image(clean, load_policy(None))
    assert report.verdict is Verdict.PASS, [c for c in report.checks if c.outcome.value != "pass"]


def test_audit_reports_the_hidden_members_and_fails(concatenated: Path) -> None:
    report = audit_image(concatenated, load_policy(None))
    assert report.verdict is Verdict.FAIL
    by_rule: dict[str, list[str]] = {}
    for f in report.findings:
        by_rule.setdefault(f.rule, []).append(f.path)
    assert "ramdisk[1]/rootfs/bin/sh" in by_rule["setuid-risky"]
    assert "ramdisk[1]/rootfs/bin/sh" in by_rule["world-writable"]
    assert "ramdisk[1]/rootfs/etc/ssl/server.key" in by_rule["private-key"]
    assert "ramdisk[1]/rootfs/usr/bin/gdbserver" in by_rule["debug-tool"]
    hidden = next(f for f in report.findings if f.rule == "initramfs-hidden-members")
    assert all(p in hidden.message for p in HIDDEN_PATHS)
    assert report.files == 4 + 3  # init, cmd, env, app + the three hidden files


def test_audit_cli_fails_and_names_them(concatenated: Path) -> None:
    done = run_cli(["audit", str(concatenated), "--json"])
    assert done.exit_code == 1
    report = json.loads(done.stdout)
    assert report["verdict"] == "FAIL"
    paths = {f["path"] for f in report["findings"]}
    assert {f"ramdisk[1]/{p}" for p in HIDDEN_PATHS} <= paths


def test_diff_names_the_hidden_members(clean: Path, concatenated: Path) -> None:
    report = compare_paths(clean, concatenated)
    assert report.root is not None and report.complete
    for path in HIDDEN_PATHS:
        node = report.root.find("ramdisk[1]", path)
        assert node is not None, path
        assert node.change is Change.ADDED and node.significance is Significance.SECURITY, path
        assert any("after the first archive's TRAILER!!!" in n for n in node.notes)
    assert report.root.significance is Significance.SECURITY
    done = run_cli(["diff", str(clean), str(concatenated)])
    assert done.exit_code == 1
    assert "no cpio-level difference" not in done.stdout
    for path in HIDDEN_PATHS:
        assert path in done.stdout


def test_a_gzip_segment_after_the_trailer_is_seen_too(kit: Kit, clean: Path) -> None:
    second = gzip.compress(archive(hidden_members(kit)), mtime=0)
    image = kit.image("gzip-segment", archive(clean_members(kit)) + second)
    report = audit_image(image, load_policy(None))
    assert report.verdict is Verdict.FAIL
    assert "ramdisk[1]/rootfs/etc/ssl/server.key" in {f.path for f in report.findings}
    root = compare_paths(clean, image).root
    assert root is not None and root.find("ramdisk[1]", "rootfs/bin/sh") is not None


@pytest.mark.parametrize(
    ("name", "perm", "rule", "path"),
    [
        ("rootfs/bin/./gdbserver", 0o755, "debug-tool", "rootfs/bin/gdbserver"),
        ("rootfs/sbin//tcpdump", 0o755, "debug-tool", "rootfs/sbin/tcpdump"),
        ("rootfs/usr/bin/../../opt/suidtool", 0o4755, "setuid-risky", "rootfs/opt/suidtool"),
        ("usr/bin/../../opt/suidtool", 0o4755, "setuid-risky", "opt/suidtool"),
        ("rootfs/opt/tools/gdbserver", 0o755, "debug-tool", "rootfs/opt/tools/gdbserver"),
    ],
)
def test_names_are_normalised_before_any_rule(
    kit: Kit, name: str, perm: int, rule: str, path: str
) -> None:
    members = [*clean_members(kit), M(name, perm=perm, data=kit.elf)]
    image = kit.image(f"name-{abs(hash(name))}", archive(members))
    report = audit_image(image, load_policy(None))
    found = [f for f in report.findings if f.rule == rule and f.path == f"ramdisk[1]/{path}"]
    assert found, [(f.rule, f.path) for f in report.findings]
    assert report.verdict is Verdict.FAIL


def test_a_symlinked_parent_is_followed(kit: Kit) -> None:
    members = [
        *clean_members(kit),
        M("rootfs/x", L, 0o777, data=b"usr/bin"),
        M("rootfs/x/strace", perm=0o755, data=kit.elf),
    ]
    report = audit_image(kit.image("symlinked-parent", archive(members)), load_policy(None))
    assert "ramdisk[1]/rootfs/usr/bin/strace" in {
        f.path for f in report.findings if f.rule == "debug-tool"
    }


def test_a_hard_link_to_a_setuid_file_is_caught(kit: Kit) -> None:
    members = [
        *clean_members(kit),
        M("rootfs/usr/bin/passwd", perm=0o4755, data=b"", ino=700, nlink=2),
        M("rootfs/tmp", D, 0o1777),
        M("rootfs/tmp/.cache", perm=0o4755, data=kit.elf, ino=700, nlink=2),
    ]
    report = audit_image(kit.image("hardlink", archive(members)), load_policy(None))
    risky = [f for f in report.findings if f.rule == "setuid-risky"]
    assert [f.path for f in risky] == ["ramdisk[1]/rootfs/tmp/.cache"]
    assert "hard link to 'rootfs/usr/bin/passwd'" in risky[0].message
    # the distribution-style name of the same inode is reported as what it is
    assert "ramdisk[1]/rootfs/usr/bin/passwd" in {
        f.path for f in report.findings if f.rule == "setuid"
    }
    assert report.verdict is Verdict.FAIL


def test_a_hard_link_whose_mode_differs_takes_the_inode_mode(kit: Kit) -> None:
    """The kernel chmods the shared inode with each link's mode: the last one wins."""
    members = [
        *clean_members(kit),
        M("rootfs/usr/bin/helper", perm=0o755, data=kit.elf, ino=701, nlink=2),
        M("rootfs/var", D, 0o755),
        M("rootfs/var/h", perm=0o4755, data=b"", ino=701, nlink=2),
    ]
    report = audit_image(kit.image("hardlink-mode", archive(members)), load_policy(None))
    setuid_paths = {f.path for f in report.findings if f.rule.startswith("setuid")}
    assert {"ramdisk[1]/rootfs/usr/bin/helper", "ramdisk[1]/rootfs/var/h"} <= setuid_paths


@pytest.mark.parametrize(
    "tail",
    [b"garbage!", None],  # junk after the trailer; an lz4 segment (not decompressed here)
)
def test_what_cannot_be_read_is_inconclusive_never_pass(kit: Kit, tail: bytes | None) -> None:
    if tail is None:
        lz4 = need_tool("lz4", "lz4")
        tail = subprocess.run(
            [lz4, "-l", "-c"], input=archive(hidden_members(kit)), capture_output=True, check=True
        ).stdout
    image = kit.image(f"unreadable-{len(tail)}", archive(clean_members(kit)) + tail)
    report = audit_image(image, load_policy(None))
    assert report.verdict is Verdict.INCONCLUSIVE
    assert any("unreadable" in c.detail for c in report.checks)


def test_a_later_archive_replacing_init_fails(kit: Kit) -> None:
    """The first archive shows one /init; the kernel runs the one in the second."""
    boot = archive([M("init", perm=0o755, data=b"#!/bin/sh\nexec /rootfs/usr/bin/app\n")])
    boot += archive([M("init", perm=0o755, data=b"#!/bin/sh\nexec /bin/sh\n")])
    report = audit_image(kit.image("shadow", archive(clean_members(kit)), boot), load_policy(None))
    shadow = [f for f in report.findings if f.rule == "initramfs-shadowed-member"]
    assert [f.path for f in shadow] == ["ramdisk[0]/init"]
    assert report.verdict is Verdict.FAIL


def test_diff_pairs_members_by_the_path_the_kernel_creates(kit: Kit, clean: Path) -> None:
    members = [
        *clean_members(kit),
        M("rootfs/bin/./gdbserver", perm=0o755, data=kit.elf),
        M("rootfs/usr/bin/../../opt/suidtool", perm=0o4755, data=kit.elf),
    ]
    image = kit.image("names-diff", archive(members))
    root = compare_paths(clean, image).root
    assert root is not None
    for path, stored in (
        ("rootfs/bin/gdbserver", "rootfs/bin/./gdbserver"),
        ("rootfs/opt/suidtool", "rootfs/usr/bin/../../opt/suidtool"),
    ):
        node = root.find("ramdisk[1]", path)
        assert node is not None and node.fs_path == path
        assert node.significance is Significance.SECURITY
        assert any(f"stored as {stored!r}" in n for n in node.notes)
