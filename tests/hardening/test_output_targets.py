"""Output targets (issue 18): ``atomic_write`` never renames over what is not a file.

The finding: ``-o /dev/full`` as root replaced the device node with a regular file
(``atomic_write`` renamed its temp file over whatever was there).  Now a character
device (or a name for the process's own stdout/stderr) is written in place,
deliberately, and a FIFO, a socket or a block device is refused; whole-directory
outputs refuse to replace anything that is not a directory.  Checked on every kind
of target, through the function and through the CLI.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import need, run_cli

from enclave_audit.errors import OutputError
from enclave_audit.fsutil import atomic_directory, output_kind, write_text_atomic
from enclave_audit.model.findings import Verdict
from enclave_audit.model.report import AuditReport


def _mknod_chr(path: Path, major: int, minor: int) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
    except PermissionError:
        need(False, "creating a device node needs root (CAP_MKNOD)")


def _full(path: Path) -> Path:
    """A private /dev/full (char 1:7): writes fail with ENOSPC."""
    _mknod_chr(path, 1, 7)
    return path


def _null(path: Path) -> Path:
    _mknod_chr(path, 1, 3)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        yield path


def _kind(path: Path) -> int:
    return stat.S_IFMT(os.lstat(path).st_mode)


@pytest.mark.parametrize(("make", "name"), [(_fifo, "a FIFO")])
def test_fifo_is_refused_without_blocking(
    tmp_path: Path, make: Callable[[Path], Path], name: str
) -> None:
    target = make(tmp_path / "target")
    with pytest.raises(OutputError, match=f"it is {name}"):
        write_text_atomic(target, "x")
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert os.listdir(tmp_path) == ["target"]  # no temp file left behind


def test_socket_is_refused(unix_socket: Path) -> None:
    with pytest.raises(OutputError, match="it is a socket"):
        write_text_atomic(unix_socket, "x")
    assert stat.S_ISSOCK(os.lstat(unix_socket).st_mode)


def test_full_device_is_written_in_place_and_fails_cleanly(tmp_path: Path) -> None:
    full = _full(tmp_path / "full")
    with pytest.raises(OutputError, match="No space left on device"):
        write_text_atomic(full, "x" * 100_000)
    assert stat.S_ISCHR(os.lstat(full).st_mode) and os.lstat(full).st_rdev == os.makedev(1, 7)
    assert os.listdir(tmp_path) == ["full"]


def test_null_device_is_written_in_place(tmp_path: Path) -> None:
    null = _null(tmp_path / "null")
    write_text_atomic(null, "discarded")
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert output_kind(Path("/dev/stdout")) == "stream"
    assert output_kind(Path("/proc/self/fd/1")) == "stream"


def test_block_device_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "block"
    try:
        os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(7, 0))
    except PermissionError:
        need(False, "creating a device node needs root (CAP_MKNOD)")
    with pytest.raises(OutputError, match="block device"):
        write_text_atomic(path, "x")
    assert stat.S_ISBLK(os.lstat(path).st_mode)


def test_regular_files_and_symlinks_to_them_still_work(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "new.txt", "one")
    write_text_atomic(tmp_path / "new.txt", "two")
    assert (tmp_path / "new.txt").read_text() == "two"
    (tmp_path / "link").symlink_to(tmp_path / "new.txt")
    write_text_atomic(tmp_path / "link", "three")
    assert (tmp_path / "link").read_text() == "three"


def test_whole_directory_output_refuses_to_replace_a_device_or_file(tmp_path: Path) -> None:
    null = _null(tmp_path / "null")
    for target in (null, _fifo(tmp_path / "fifo"), tmp_path / "file"):
        if target.name == "file":
            target.write_text("keep")
        with pytest.raises(OutputError, match="not a directory"), atomic_directory(target) as d:
            (d / "x").write_text("x")
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert (tmp_path / "file").read_text() == "keep"


# --- through the CLI, as root: the finding ------------------------------------------------------


def _saved_report(tmp_path: Path) -> Path:
    report = AuditReport(
        title="t", generated_at="2026-01-01T00:00:00Z", verdict=Verdict.PASS, summary="s"
    )
    path = tmp_path / "report.json"
    path.write_text(report.to_json())
    return path


def test_cli_output_to_a_full_device_as_root_keeps_the_device(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "the finding needs root (rename over a device node in /dev)")
    full = _full(tmp_path / "full")
    result = run_cli(
        ["report", str(_saved_report(tmp_path)), "--format", "markdown", "-o", str(full)]
    )
    assert result.exit_code == 7, result.stderr
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert stat.S_ISCHR(os.lstat(full).st_mode) and os.lstat(full).st_rdev == os.makedev(1, 7)


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_cli_outputs_refuse_fifos_and_sockets(tmp_path: Path, kind: str, unix_socket: Path) -> None:
    target = _fifo(tmp_path / "out") if kind == "fifo" else unix_socket
    before = _kind(target)
    saved = _saved_report(tmp_path)
    result = run_cli(["report", str(saved), "--format", "json", "-o", str(target)], timeout=60)
    assert result.exit_code == 7, result.stderr
    assert "not a regular file" in result.stderr
    assert _kind(target) == before


def test_cli_output_to_dev_stdout_is_written_there(tmp_path: Path) -> None:
    result = run_cli(
        ["report", str(_saved_report(tmp_path)), "--format", "json", "-o", "/dev/stdout"]
    )
    assert result.exit_code == 0, result.stderr
    assert '"schema": "enclave-audit/report"' in result.stdout
