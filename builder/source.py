"""Where the source is: git commit, dirtiness, and SOURCE_DATE_EPOCH from the image's inputs.

Nothing reads the wall clock.  The epoch (the timestamps of the application ramdisk)
is the committer time of the last commit that touched what goes into that ramdisk:
the spec's application packages, the spec and its Debian lock
(:func:`epoch_paths`).  A commit elsewhere in the repository (the auditing CLI, the
demo, the reference KMS) leaves the epoch, and so PCR2, where it was.  A rebuild from
a manifest passes the recorded value explicitly.  Dirtiness covers every repository
path the image is made from (:func:`image_paths`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.git import find_checkout, reading
from builder.spec import LoadedSpec
from enclave_audit.errors import SpecInvalid
from enclave_audit.tools import which


@dataclass(frozen=True)
class GitInfo:
    commit: str
    commit_time: int
    dirty: bool
    #: the last commit that touched the epoch paths, and its committer time (the epoch)
    inputs_commit: str = ""
    inputs_time: int | None = None


def _repo_paths(loaded: LoadedSpec, paths: list[Path]) -> list[str]:
    out: list[str] = []
    for path in paths:
        try:
            out.append(path.resolve().relative_to(loaded.source_root).as_posix())
        except ValueError:
            continue  # outside the checkout: not under its version control
    return sorted(set(out))


def epoch_paths(loaded: LoadedSpec) -> list[str]:
    """What the application ramdisk is made from, in the checkout: its last commit dates it."""
    spec = loaded.spec
    return _repo_paths(
        loaded,
        [
            loaded.path,
            loaded.resolve(spec.debian.lock),
            *(loaded.source_root / package for package in spec.app.packages),
        ],
    )


def image_paths(loaded: LoadedSpec) -> list[str]:
    """Every checkout path the image is made from (their uncommitted changes make it dirty)."""
    spec = loaded.spec
    docker = loaded.base / "docker"
    return sorted(
        {
            *epoch_paths(loaded),
            *_repo_paths(
                loaded,
                [
                    loaded.resolve(spec.kernel.config),
                    loaded.resolve(spec.init.source),
                    *(loaded.resolve(h) for h in spec.init.helpers),
                    *([docker] if docker.is_dir() else []),
                ],
            ),
        }
    )


def image_git_info(loaded: LoadedSpec) -> GitInfo | None:
    """:func:`git_info` of the image's paths, dated by the last commit of its epoch paths."""
    return git_info(loaded.source_root, image_paths(loaded), epoch_paths=epoch_paths(loaded))


def git_info(
    root: Path, paths: list[str], *, epoch_paths: list[str] | None = None
) -> GitInfo | None:
    """Commit, committer time and dirtiness of ``paths`` under ``root``; None if not git.

    With ``epoch_paths``, also the last commit that touched one of them (``inputs_*``).
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
        inputs_commit, inputs_time = "", None
        if epoch_paths:
            last = git.run(
                "--literal-pathspecs", "log", "-1", "--format=%H %ct", checkout.head,
                "--", *epoch_paths,
                cwd=Path(root).resolve(),
                check=False,
            )  # fmt: skip
            found = last.stdout.decode("ascii", "replace").split() if last.returncode == 0 else []
            if len(found) == 2 and found[1].isdigit():
                inputs_commit, inputs_time = found[0], int(found[1])
    if status.returncode != 0:
        return None
    return GitInfo(
        commit=parts[0],
        commit_time=int(parts[1]),
        dirty=bool(status.stdout.strip()),
        inputs_commit=inputs_commit,
        inputs_time=inputs_time,
    )


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
    # inputs never committed (a new checkout's first build): the commit they sit on
    return git.inputs_time if git.inputs_time is not None else git.commit_time
