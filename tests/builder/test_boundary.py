"""The measured boundary, on THE reference image: it holds only what runs in it.

- ``/app`` is exactly the import closure of the runtime's entry point, byte for byte
  the checkout's sources, and everything that closure imports from outside ``/app`` is
  importable by the image's own interpreter;
- the root file system has no shell, login tool, setuid/setgid file or package manager,
  its package list names only what is installed, and every ELF's libraries are there;
- the audit finds nothing high or medium but the three waived non-PIE programs, and
  under the reference policy every remaining finding is waived with its reason;
- a commit to host-side code (a CLI help string, the demo, the KMS) leaves PCR0/1/2
  identical; a commit to in-image code moves PCR2 (and PCR0), never PCR1.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import need
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from gitrepo import git as _git
from import_closure import entry_module, import_closure

from builder.eif import EifReader
from builder.initramfs import EntryKind, extract, iter_members
from builder.pipeline import BuildOptions, BuildResult, build, rebuild_from_manifest
from builder.reference import PROJECT_ROOT, REFERENCE_SPEC
from builder.spec import load_spec
from enclave_audit.model.findings import Severity, Verdict
from verifier.audit import audit_image, load_policy

pytestmark = pytest.mark.slow

REFERENCE_POLICY = REFERENCE_SPEC.parent / "audit-policy.toml"
#: programs that must not be in the image: shells, login and account tools, package managers
FORBIDDEN_PROGRAMS = frozenset(
    {
        "sh", "bash", "dash", "rbash", "zsh", "ksh", "busybox",
        "su", "sudo", "login", "newgrp", "sg", "passwd", "chsh", "chfn", "gpasswd",
        "chpasswd", "useradd", "usermod", "unix_chkpwd", "sulogin", "runuser", "nologin",
        "dpkg", "dpkg-deb", "dpkg-query", "dpkg-divert", "update-alternatives",
        "apt", "apt-get", "perl", "mount", "umount", "start-stop-daemon",
    }
)  # fmt: skip
LIB_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib", "lib/x86_64-linux-gnu", "lib")


@dataclass(frozen=True)
class Member:
    kind: EntryKind
    mode: int
    link: str | None
    data: bytes | None  # ELF files and the dpkg database only


@pytest.fixture(scope="module")
def app_cpio(reference_image: BuildResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("boundary") / "application.cpio"
    with EifReader.open(reference_image.eif) as r:
        r.copy_section(r.ramdisks[-1], path)
    return path


@pytest.fixture(scope="module")
def rootfs(app_cpio: Path) -> dict[str, Member]:
    """The application ramdisk's ``rootfs/`` members by path (without the prefix)."""
    out: dict[str, Member] = {}
    with open(app_cpio, "rb") as fh:
        for m in iter_members(fh):
            if not m.name.startswith("rootfs/"):
                continue
            data = None
            if m.kind is EntryKind.FILE and m.data is not None:
                head = m.data.read(4)
                if head == b"\x7fELF" or m.name.endswith("var/lib/dpkg/status"):
                    data = head + m.data.read()
            out[m.name.removeprefix("rootfs/")] = Member(m.kind, m.mode, m.link_target, data)
    return out


def test_app_is_exactly_the_import_closure(app_cpio: Path, tmp_path: Path) -> None:
    loaded = load_spec(REFERENCE_SPEC)
    app = loaded.spec.app
    closure = import_closure(PROJECT_ROOT, entry_module(app.cmd), app.packages)
    in_image: dict[str, bytes] = {}
    with open(app_cpio, "rb") as fh:
        for m in iter_members(fh):
            if m.name.startswith("rootfs/app/") and m.kind is EntryKind.FILE:
                assert m.data is not None
                in_image[m.name.removeprefix("rootfs/app/")] = m.data.read()
    assert set(in_image) == closure.files(PROJECT_ROOT), (
        f"in /app but never imported: {sorted(set(in_image) - closure.files(PROJECT_ROOT))};"
        f" imported but missing: {sorted(closure.files(PROJECT_ROOT) - set(in_image))}"
    )
    for rel, data in in_image.items():  # the very bytes of the checkout
        assert (
            hashlib.sha256(data).digest()
            == hashlib.sha256((PROJECT_ROOT / rel).read_bytes()).digest()
        ), rel
    assert not any(rel.startswith(("reference_enclave/", "enclave_audit/")) for rel in in_image)


def test_closure_imports_resolve_in_the_image(reference_image: BuildResult, tmp_path: Path) -> None:
    """What /app imports from outside is importable by the image's own python3."""
    chroot = shutil.which("chroot")
    need(os.geteuid() == 0 and chroot is not None, "root and chroot")
    assert chroot is not None
    loaded = load_spec(REFERENCE_SPEC)
    app = loaded.spec.app
    closure = import_closure(PROJECT_ROOT, entry_module(app.cmd), app.packages)
    with EifReader.open(reference_image.eif) as r:
        r.copy_section(r.ramdisks[-1], tmp_path / "application.cpio")
    extract(tmp_path / "application.cpio", tmp_path / "app")
    probe = (
        "import importlib.util, json, sys;"
        "print(json.dumps([n for n in sys.argv[1:] if importlib.util.find_spec(n) is None]))"
    )
    done = subprocess.run(
        [chroot, str(tmp_path / "app" / "rootfs"), app.cmd[0], "-I", "-c", probe,
         *sorted(closure.external)],
        env={"PATH": "/usr/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert json.loads(done.stdout) == []
    assert {"numpy", "cryptography", "boto3", "cbor2"} <= closure.external


def _programs(rootfs: dict[str, Member]) -> Iterator[str]:
    for path, m in rootfs.items():
        parent, _, name = path.rpartition("/")
        if parent in ("usr/bin", "usr/sbin", "bin", "sbin", "usr/local/bin", "usr/local/sbin"):
            if m.kind in (EntryKind.FILE, EntryKind.SYMLINK):
                yield name


def test_no_shell_login_tool_setuid_or_package_manager(rootfs: dict[str, Member]) -> None:
    present = sorted(set(_programs(rootfs)) & FORBIDDEN_PROGRAMS)
    assert present == []
    assert not any(n.startswith(("dpkg", "apt")) for n in _programs(rootfs))
    special = [
        p
        for p, m in rootfs.items()
        if m.kind is EntryKind.FILE and m.mode & (stat.S_ISUID | stat.S_ISGID)
    ]
    assert special == []
    assert "usr/share/perl5" not in rootfs and "var/lib/dpkg/status-old" not in rootfs


def _resolve(rootfs: dict[str, Member], path: str) -> str | None:
    """``path`` (no leading /) with symbolic links followed inside the image."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    for _ in range(64):
        if not parts:
            return "/".join(done)
        part = parts.pop(0)
        here = "/".join([*done, part])
        m = rootfs.get(here)
        if m is None:
            return None
        if m.kind is EntryKind.SYMLINK:
            assert m.link is not None
            target = [p for p in m.link.split("/") if p]
            done = [] if m.link.startswith("/") else done
            parts = target + parts
            continue
        done.append(part)
    return None


def test_installed_packages_and_every_elf_dependency_are_there(
    rootfs: dict[str, Member],
) -> None:
    status = rootfs["var/lib/dpkg/status"].data
    assert status is not None
    stanzas = [s for s in status.decode().split("\n\n") if s.strip()]
    names = {line.split(": ", 1)[1] for s in stanzas for line in s.splitlines()
             if line.startswith("Package: ")}  # fmt: skip
    assert all("Status: install ok installed" in s for s in stanzas)
    purged = set(load_spec(REFERENCE_SPEC).spec.debian.purge)
    assert names and not names & purged, sorted(names & purged)
    assert {"python3.11", "python3-numpy", "libc6"} <= names
    missing: list[str] = []
    for path, m in rootfs.items():
        if m.data is None or not m.data.startswith(b"\x7fELF"):
            continue
        elf = ELFFile(io.BytesIO(m.data))
        for section in elf.iter_sections():
            if not isinstance(section, DynamicSection):
                continue
            for tag in section.iter_tags():
                if tag.entry.d_tag != "DT_NEEDED":
                    continue
                if not any(_resolve(rootfs, f"{d}/{tag.needed}") for d in LIB_DIRS):
                    missing.append(f"{path} needs {tag.needed}")
    assert missing == []


def test_audit_under_the_default_policy_and_the_reference_waivers(
    reference_image: BuildResult,
) -> None:
    plain = audit_image(reference_image.eif, load_policy(None))
    assert plain.verdict is Verdict.PASS
    serious = [(f.rule, f.path) for f in plain.findings if f.severity.rank >= Severity.MEDIUM.rank]
    assert sorted(serious) == [
        ("elf-no-pie", "ramdisk[0]/init"),
        ("elf-no-pie", "ramdisk[0]/nsm-attest"),
        ("elf-no-pie", "ramdisk[1]/rootfs/usr/bin/python3.11"),
    ]
    rules = {f.rule for f in plain.findings}
    for gone in ("shell-present", "setuid", "setgid", "aws-access-key-id", "network-tool"):
        assert gone not in rules
    waived = audit_image(reference_image.eif, load_policy(REFERENCE_POLICY))
    assert waived.verdict is Verdict.PASS
    left = sorted((f.rule, f.severity.value) for f in waived.findings)
    assert left == [("cmdline-console", "info"), ("kernel-version", "info")], left
    assert waived.unused_waivers == []
    pie = {w.finding.path: w.reason for w in waived.waived if w.finding.rule == "elf-no-pie"}
    assert set(pie) == {path for _, path in serious}
    assert all(len(reason) > 40 for reason in pie.values())
    # the README's example shows this very audit
    readme = (PROJECT_ROOT / "README.md").read_text()
    example = readme.split("--policy reference_enclave/audit-policy.toml\n", 1)[1]
    assert f"findings: {waived.summary()}\n" in example.split("```", 1)[0]


# --- what moves the measurements ------------------------------------------------------


def _commit(root: Path, edit: str, when: int) -> None:
    path = root / edit
    path.write_text(path.read_text() + "# edited\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", f"edit {edit}", when=when)


def test_host_commits_keep_every_pcr_and_in_image_commits_move_pcr2(
    reference_image: BuildResult, tmp_path: Path
) -> None:
    """A checkout of the real sources, committed at the reference image's own epoch."""
    need(shutil.which("git") is not None, "git")
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("enclave_runtime", "reference_enclave", "enclave_audit"):
        shutil.copytree(PROJECT_ROOT / package, src / package, ignore=ignore)
    epoch = reference_image.manifest.source_date_epoch
    _git(src, "init", "-q")
    _git(src, "add", "-A")
    _git(src, "commit", "-q", "-m", "snapshot", when=epoch)

    def built(name: str) -> BuildResult:
        return build(
            src / "reference_enclave" / "enclave.toml",
            tmp_path / name,
            options=BuildOptions(source_root=src),
        )

    base = built("base")
    # the same sources at the same epoch: the reference image itself, bit for bit
    assert base.pcrs == reference_image.pcrs
    assert base.manifest.source.epoch_commit
    for number, edit in enumerate(
        ("enclave_audit/cli/__init__.py", "reference_enclave/demo.py",
         "reference_enclave/kms/server.py"),
        start=1,
    ):  # fmt: skip
        _commit(src, edit, epoch + 100 * number)
    host = built("host")
    assert host.pcrs == base.pcrs, "a host-side commit moved a measurement"
    assert host.manifest.source_date_epoch == epoch
    _commit(src, "enclave_runtime/wire.py", epoch + 1000)
    inside = built("inside")
    assert inside.manifest.source_date_epoch == epoch + 1000
    assert inside.pcrs[1] == base.pcrs[1]
    assert inside.pcrs[2] != base.pcrs[2] and inside.pcrs[0] != base.pcrs[0]
    # the manifest records where the epoch came from; a rebuild from it (a checkout
    # without .git, as a source tarball is) uses the recorded value, not a clock or HEAD
    recorded = inside.manifest.source
    assert recorded.epoch_paths == (
        "enclave_runtime",
        "reference_enclave/debian.lock",
        "reference_enclave/enclave.toml",
    )
    tarball = tmp_path / "tarball"
    shutil.copytree(src, tarball, ignore=shutil.ignore_patterns(".git"))
    again = rebuild_from_manifest(inside.manifest, tarball, tmp_path / "again")
    assert again.pcrs == inside.pcrs
    assert again.manifest.source_date_epoch == epoch + 1000
    assert again.manifest.source.epoch_commit == recorded.epoch_commit != ""
