"""Launching an image (issue 18): nothing the launcher reads, chroots into or mounts over
may resolve outside the extracted image.

The findings: an image whose ``/cmd`` links to a host file ran that file's text as the
command, and ``/rootfs -> /`` resolved to the host root.  A property test then tries
every layout of ``/cmd``, ``/env``, ``/rootfs`` and the directories the launcher mounts
over (a file, a directory, a link inside the image, a link to the host, absent).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import need, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.eif import write_eif
from builder.initramfs import write_ramdisk
from builder.initramfs.entries import Entry, directory, file_bytes, symlink
from enclave_audit.errors import InvalidInput
from reference_enclave.runtime.launch import MOUNT_POINTS, unpack_image

GOOD_CMD = b"/bin/app\n--serve\n"
GOOD_ENV = b"PATH=/bin\n"


def _image(tmp: Path, entries: list[Entry], name: str = "image") -> Path:
    ramdisk = tmp / f"{name}.cpio"
    write_ramdisk(ramdisk, entries, epoch=0)
    kernel = tmp / "bzImage"
    kernel.write_bytes(b"not a kernel, never booted here")
    image = tmp / f"{name}.eif"
    write_eif(
        image,
        kernel=kernel,
        cmdline="console=ttyS0",
        ramdisks=[ramdisk],
        name=name,
        version="1",
        build_time="2026-01-01T00:00:00Z",
    )
    return image


def _layout(**override: Entry | None) -> list[Entry]:
    parts: dict[str, Entry | None] = {
        "cmd": file_bytes("cmd", GOOD_CMD),
        "env": file_bytes("env", GOOD_ENV),
        "rootfs": directory("rootfs"),
    }
    parts.update(override)
    tail = [directory("rootfs/bin"), file_bytes("rootfs/bin/app", b"x")]
    return [e for e in parts.values() if e is not None] + tail


def test_a_well_formed_image_unpacks(tmp_path: Path) -> None:
    unpacked = unpack_image(_image(tmp_path, _layout()), tmp_path / "root")
    assert unpacked.cmd == ["/bin/app", "--serve"] and unpacked.env == {"PATH": "/bin"}


def test_cmd_linked_to_a_host_file_is_refused(tmp_path: Path) -> None:
    """The finding: the host file's text became the command."""
    host_file = tmp_path / "host-secret"
    host_file.write_text("/bin/sh\n-c\necho pwned\n")
    image = _image(tmp_path, _layout(cmd=symlink("cmd", str(host_file))))
    with pytest.raises(InvalidInput, match="/cmd is a symbolic link"):
        unpack_image(image, tmp_path / "root")


def test_env_linked_to_a_host_file_is_refused(tmp_path: Path) -> None:
    image = _image(tmp_path, _layout(env=symlink("env", "/etc/hostname")))
    with pytest.raises(InvalidInput, match="/env is a symbolic link"):
        unpack_image(image, tmp_path / "root")


@pytest.mark.parametrize("target", ["/", "/etc", "rootfs-real", "../"])
def test_rootfs_that_is_a_link_is_refused(tmp_path: Path, target: str) -> None:
    """The finding: ``/rootfs -> /`` resolved to the host root (chroot to /)."""
    entries = [*_layout(rootfs=symlink("rootfs", target)), directory("rootfs-real")]
    entries = [e for e in entries if not e.name.startswith("rootfs/")]
    with pytest.raises(InvalidInput, match="/rootfs is a symbolic link"):
        unpack_image(_image(tmp_path, entries), tmp_path / "root")


@pytest.mark.parametrize("sub", MOUNT_POINTS)
def test_a_mount_point_that_links_to_the_host_is_refused(tmp_path: Path, sub: str) -> None:
    image = _image(tmp_path, [*_layout(), symlink(f"rootfs/{sub}", "/etc")])
    with pytest.raises(InvalidInput, match=f"/rootfs/{sub} is a symbolic link"):
        unpack_image(image, tmp_path / "root")


def test_cmd_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    image = _image(tmp_path, _layout(cmd=directory("cmd")))
    with pytest.raises(InvalidInput, match="/cmd is not a regular file"):
        unpack_image(image, tmp_path / "root")


def test_enclave_run_refuses_the_image_before_running_anything(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "enclave run (simulation) needs root")
    ca = tmp_path / "ca"
    assert run_cli(["enclave", "sim-ca", "-o", str(ca)]).exit_code == 0
    marker = tmp_path / "ran"
    host_file = tmp_path / "host-cmd"
    host_file.write_text(f"/bin/sh\n-c\ntouch {marker}\n")
    image = _image(tmp_path, _layout(cmd=symlink("cmd", str(host_file))))
    (tmp_path / "models").mkdir()
    result = run_cli(
        [
            "enclave",
            "run",
            str(image),
            "--kms",
            "http://127.0.0.1:9",
            "--model-store",
            str(tmp_path / "models"),
            "--sim-ca",
            str(ca),
            "--access-key",
            "AKIAEXAMPLE000000000",
            "--secret-key",
            "x" * 40,
            "--timeout",
            "20",
        ],
        timeout=120,
    )
    assert result.exit_code == InvalidInput.exit_code, result.stderr
    assert "/cmd is a symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


# --- the property: every layout is unpacked inside the image, or refused ------------------------

_KINDS = ("file", "dir", "link-inside", "link-host", "absent")


def _entry(name: str, kind: str, *, default_file: bytes) -> Entry | None:
    if kind == "file":
        return file_bytes(name, default_file)
    if kind == "dir":
        return directory(name)
    if kind == "link-inside":
        return symlink(name, "rootfs-real" if name == "rootfs" else "real-" + name.split("/")[-1])
    if kind == "link-host":
        return symlink(name, "/" if name == "rootfs" else "/etc/hostname")
    return None


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    cmd=st.sampled_from(_KINDS),
    env=st.sampled_from(_KINDS),
    rootfs=st.sampled_from(_KINDS),
    mounts=st.lists(
        st.sampled_from(_KINDS), min_size=len(MOUNT_POINTS), max_size=len(MOUNT_POINTS)
    ),
)
def test_every_layout_unpacks_inside_the_image_or_is_refused(
    tmp_path_factory: pytest.TempPathFactory, cmd: str, env: str, rootfs: str, mounts: list[str]
) -> None:
    tmp = tmp_path_factory.mktemp("layout")
    entries = [
        e
        for e in (
            _entry("cmd", cmd, default_file=GOOD_CMD),
            _entry("env", env, default_file=GOOD_ENV),
            _entry("rootfs", rootfs, default_file=b"x"),
            directory("rootfs-real"),
            file_bytes("real-cmd", GOOD_CMD),
            file_bytes("real-env", GOOD_ENV),
        )
        if e is not None
    ]
    if rootfs == "dir":
        for sub, kind in zip(MOUNT_POINTS, mounts, strict=True):
            entry = _entry(f"rootfs/{sub}", kind, default_file=b"x")
            if entry is not None:
                entries.append(entry)
    dest = tmp / "root"
    try:
        unpacked = unpack_image(_image(tmp, entries), dest)
    except InvalidInput as exc:
        assert exc.message and "\n" not in exc.message
        return
    real = os.path.realpath(dest)
    for name in ("cmd", "env"):
        assert stat.S_ISREG(os.lstat(dest / name).st_mode)
    assert stat.S_ISDIR(os.lstat(unpacked.rootfs).st_mode)
    assert os.path.realpath(unpacked.rootfs) == os.path.join(real, "rootfs")
    for sub in MOUNT_POINTS:
        path = unpacked.rootfs / sub
        if os.path.lexists(path):
            assert stat.S_ISDIR(os.lstat(path).st_mode)
            assert os.path.realpath(path).startswith(real + os.sep)
