"""SOURCE_DATE_EPOCH comes from the image's own inputs, not from HEAD.

The application ramdisk is dated by the last commit that touched its inputs (the
spec's app packages, the spec, the Debian lock); commits elsewhere in the repository
(the CLI, the demo, the KMS) leave it, and so PCR2, unchanged.  Dirtiness covers every
path the image is made from, and nothing else.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import need
from gitrepo import git as _git

from builder.reference import REFERENCE_SPEC
from builder.source import epoch_paths, image_git_info, image_paths, source_date_epoch
from builder.spec import LoadedSpec, load_spec

T0 = 1_800_000_000


def _commit(root: Path, message: str, when: int) -> str:
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", message, when=when)
    return _git(root, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, LoadedSpec]:
    need(shutil.which("git") is not None, "git")
    root = tmp_path / "repo"
    spec_dir = root / "reference_enclave"
    reference = REFERENCE_SPEC.parent
    for rel in ("enclave.toml", "debian.lock", "kernel/enclave.config", "init/init.c"):
        (spec_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(reference / rel, spec_dir / rel)
    shutil.copytree(reference / "nsm-attest", spec_dir / "nsm-attest")
    (spec_dir / "demo.py").write_text("# host side\n")
    (spec_dir / "kms").mkdir()
    (spec_dir / "kms" / "server.py").write_text("# host side\n")
    app = root / "enclave_runtime"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "__main__.py").write_text("print('enclave')\n")
    (root / "enclave_audit" / "cli").mkdir(parents=True)
    (root / "enclave_audit" / "cli" / "help.py").write_text('HELP = "audit an image"\n')
    _git(root, "init", "-q")
    _commit(root, "first", T0)
    return root, load_spec(spec_dir / "enclave.toml")


def _epoch(loaded: LoadedSpec) -> tuple[int, str, bool]:
    git = image_git_info(loaded)
    assert git is not None
    return source_date_epoch(None, git, loaded.source_root), git.inputs_commit, git.dirty


def test_paths_are_the_images_inputs(repo: tuple[Path, LoadedSpec]) -> None:
    _, loaded = repo
    assert epoch_paths(loaded) == [
        "enclave_runtime",
        "reference_enclave/debian.lock",
        "reference_enclave/enclave.toml",
    ]
    paths = image_paths(loaded)
    assert set(epoch_paths(loaded)) < set(paths)
    assert {
        "reference_enclave/kernel/enclave.config",
        "reference_enclave/init/init.c",
        "reference_enclave/nsm-attest/nsm_attest.c",
    } <= set(paths)
    assert not any(p.endswith(("demo.py", "kms", "server.py")) for p in paths)
    assert "reference_enclave" not in paths  # not the whole spec directory


def test_host_side_commits_leave_the_epoch(repo: tuple[Path, LoadedSpec]) -> None:
    root, loaded = repo
    first = _git(root, "rev-parse", "HEAD")
    assert _epoch(loaded) == (T0, first, False)
    (root / "enclave_audit" / "cli" / "help.py").write_text('HELP = "audit an enclave image"\n')
    (root / "reference_enclave" / "demo.py").write_text("# host side, edited\n")
    assert _epoch(loaded)[2] is False  # host-side edits do not make the image dirty
    _commit(root, "host side", T0 + 100)
    (root / "reference_enclave" / "kms" / "server.py").write_text("# kms, edited\n")
    _commit(root, "kms", T0 + 200)
    assert _epoch(loaded) == (T0, first, False)


def test_in_image_commits_move_the_epoch(repo: tuple[Path, LoadedSpec]) -> None:
    root, loaded = repo
    (root / "enclave_runtime" / "__main__.py").write_text("print('enclave 2')\n")
    assert _epoch(loaded)[2] is True
    app_commit = _commit(root, "runtime", T0 + 300)
    assert _epoch(loaded) == (T0 + 300, app_commit, False)
    lock = root / "reference_enclave" / "debian.lock"
    lock.write_text(lock.read_text() + "\n")
    lock_commit = _commit(root, "lock", T0 + 400)
    assert _epoch(loaded) == (T0 + 400, lock_commit, False)
    config = root / "reference_enclave" / "kernel" / "enclave.config"
    config.write_text(config.read_text() + "\n")
    assert _epoch(loaded)[2] is True  # dirty: the kernel config goes into the image
    _commit(root, "kernel config", T0 + 500)
    # ... but it is not an input of the application ramdisk: its epoch stays
    assert _epoch(loaded) == (T0 + 400, lock_commit, False)


def test_explicit_epoch_wins(repo: tuple[Path, LoadedSpec]) -> None:
    _, loaded = repo
    assert source_date_epoch(1234, image_git_info(loaded), loaded.source_root) == 1234
