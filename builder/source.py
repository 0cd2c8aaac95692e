"""Where the source is: git commit, dirtiness, and SOURCE_DATE_EPOCH from the commit time.

Nothing reads the wall clock: the epoch is the committer time of ``HEAD`` of the
source checkout, or given explicitly (a rebuild from a manifest passes the
recorded value).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.git import find_checkout, reading
from enclave_audit.errors import SpecInvalid
from enclave_audit.tools import which


@dataclass(frozen=True)
class GitInfo:
    commit: str
    commit_time: int
    dirty: bool


def git_info(root: Path, paths: list[str]) -> GitInfo | None:
    """Commit, committer time and dirtiness of ``paths`` under ``root``; None if not git.

    git runs without the checkout's own config, hooks or index (see
    :mod:`builder.git`): a source tree is the audited party's, and its
    ``core.fsmonitor`` or filter drivers must not run here.
    """
    if which("git") is None:
        return None
    checkout = find_checkout(root)
    if checkout is None:
        return None
    with reading(checkout) as git:
        head = git.run("log", "-1", "--format=%H %ct", checkout.head, "--", check=False)
        parts = head.stdout.decode("ascii", "replace").split()
        if head.returncode != 0 or len(parts) != 2 or parts[0] != checkout.head:
            return None
        status = git.run(
            "status", "--porcelain", "--untracked-files=all", "--ignore-submodules=all",
            "--", *paths,
            cwd=Path(root).resolve(),
            check=False,
        )  # fmt: skip
    if status.returncode != 0:
        return None
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
