"""Where the source is: git commit, dirtiness, and SOURCE_DATE_EPOCH from the commit time.

Nothing reads the wall clock: the epoch is the committer time of ``HEAD`` of the
source checkout, or given explicitly (a rebuild from a manifest passes the
recorded value).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from enclave_audit.errors import SpecInvalid
from enclave_audit.tools import run, which


@dataclass(frozen=True)
class GitInfo:
    commit: str
    commit_time: int
    dirty: bool


def git_info(root: Path, paths: list[str]) -> GitInfo | None:
    """Commit, committer time and dirtiness of ``paths`` under ``root``; None if not git."""
    if which("git") is None:
        return None
    head = run(["git", "-C", str(root), "log", "-1", "--format=%H %ct", "HEAD"], check=False)
    if head.returncode != 0:
        return None
    parts = head.stdout.decode().split()
    if len(parts) != 2:
        return None
    status = run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all", "--", *paths],
        check=False,
    )
    return GitInfo(commit=parts[0], commit_time=int(parts[1]), dirty=bool(status.stdout.strip()))


def source_date_epoch(explicit: int | None, git: GitInfo | None, root: Path) -> int:
    if explicit is not None:
        if explicit < 0:
            raise SpecInvalid(f"SOURCE_DATE_EPOCH must not be negative (got {explicit})")
        return explicit
    if git is None:
        raise SpecInvalid(
            f"{root} is not a git checkout: pass --source-date-epoch"
            " (the build never reads the clock)"
        )
    return git.commit_time
