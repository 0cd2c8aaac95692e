"""verify against a hostile vendor: its repository, manifest and checkout attack the auditor.

Each case of the corpus (tests/hostile_corpus.py) is refused with its exit code or
ends in a FAIL verdict; no hostile command runs (no marker file appears) and no host
bytes reach any output.  git, the commit binding and the manifest checks are the real
ones; the image rebuild is the small real EIF build of test_rebuild.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from hostile_corpus import Host, add_backdoor_commit, git, make_host, make_repo, plant_git_config
from small_release import SourceRebuilder, _build, _manifest

from builder.git import fetch_commit, find_checkout, resolve_commit
from builder.source import git_info
from enclave_audit.errors import InvalidInput, SpecInvalid
from enclave_audit.model.findings import CheckOutcome, Verdict
from verifier.rebuild import parse_git_ref, verify


@pytest.fixture()
def host(tmp_path: Path) -> Host:
    return make_host(tmp_path / "host")


def _release(
    tmp_path: Path,
    src: Path,
    commit: str,
    built_from: Path | None = None,
    tree_from: Path | None = None,
) -> Path:
    """The vendor's release: an EIF built from ``built_from`` and a manifest naming ``commit``
    (and the tree digest of ``tree_from``, by default the tree the EIF was built from)."""
    eif, pcrs, _ = _build(built_from or src, tmp_path / "release")
    manifest = tmp_path / "release" / "build-manifest.json"
    manifest.write_text(_manifest(tree_from or built_from or src, eif, pcrs, commit).to_json())
    return manifest


# --- the tag-shadowed short commit ------------------------------------------------------


@pytest.mark.parametrize("claimed_tree", ["backdoored", "reviewed"])
def test_tag_named_like_the_short_commit_does_not_win(tmp_path: Path, claimed_tree: str) -> None:
    """The reviewed commit X; a tag named X[:12] points at backdoored Y; the image is Y's.

    The manifest names X and either Y's tree digest (the rebuild of X refuses it, as the
    pipeline does) or X's (the rebuild of X runs, and its PCRs are not the image's)."""
    repo = tmp_path / "vendor"
    _, reviewed = make_repo(repo)
    evil = add_backdoor_commit(repo, tag=reviewed[:12])
    # plain git takes the tag: the attack is real
    assert git(repo, "rev-parse", reviewed[:12]) == evil
    assert resolve_commit(repo, reviewed[:12]) == reviewed
    # the vendor's image and manifest: built from Y, naming X
    evil_tree = tmp_path / "evil-tree"
    git(repo, "worktree", "add", "--quiet", "--detach", str(evil_tree), evil)
    tree_from = evil_tree if claimed_tree == "backdoored" else repo
    manifest = _release(tmp_path, repo, reviewed, built_from=evil_tree, tree_from=tree_from)
    rebuilder = SourceRebuilder()
    result = verify(manifest, tmp_path / "out", git=f"{repo}@{reviewed[:12]}", rebuilder=rebuilder)
    assert result.verdict is Verdict.FAIL
    outcomes = {c.name: c.outcome for c in result.checks}
    assert outcomes["source-commit"] is CheckOutcome.PASS  # X was fetched, not the tag
    assert "source-tree" not in outcomes  # the rebuild itself checks the tree
    if claimed_tree == "backdoored":
        assert outcomes["rebuild"] is CheckOutcome.FAIL
        assert "tree digest" in result.checks[1].detail
    else:
        assert outcomes["rebuild"] is CheckOutcome.PASS
        assert outcomes["PCR0"] is CheckOutcome.FAIL and outcomes["PCR1"] is CheckOutcome.FAIL
    (files,) = rebuilder.files
    assert b"backdoor" not in files["app/server.py"]


def test_git_commit_other_than_the_manifests_fails_without_rebuilding(tmp_path: Path) -> None:
    repo = tmp_path / "vendor"
    _, reviewed = make_repo(repo)
    evil = add_backdoor_commit(repo, tag="v1.0")
    manifest = _release(tmp_path, repo, reviewed)
    rebuilder = SourceRebuilder()
    result = verify(manifest, tmp_path / "out", git=f"{repo}@{evil[:10]}", rebuilder=rebuilder)
    assert result.verdict is Verdict.FAIL and not rebuilder.built
    assert result.checks[0].name == "source-commit"
    assert "the manifest records" in result.checks[0].detail
    # a branch or tag name is no commit id at all
    with pytest.raises(InvalidInput, match="URL@COMMIT"):
        verify(manifest, tmp_path / "o2", git=f"{repo}@v1.0", rebuilder=rebuilder)


def test_full_commit_passes_and_binds_exactly(tmp_path: Path) -> None:
    repo = tmp_path / "vendor"
    _, reviewed = make_repo(repo)
    add_backdoor_commit(repo, tag=reviewed)  # even a tag named like the full id
    manifest = _release(tmp_path, repo, reviewed)
    result = verify(
        manifest, tmp_path / "out", git=f"{repo}@{reviewed}", rebuilder=SourceRebuilder()
    )
    assert result.verdict is Verdict.PASS, result.checks
    assert reviewed in result.checks[0].detail


def test_manifest_without_an_exact_commit_fails(tmp_path: Path) -> None:
    repo = tmp_path / "vendor"
    _, reviewed = make_repo(repo)
    for claimed in ("", reviewed[:12]):
        manifest = _release(tmp_path / claimed[:4], repo, claimed)
        for kwargs in ({"source": repo}, {"git": f"{repo}@{reviewed}"}):
            result = verify(
                manifest, tmp_path / f"out{len(claimed)}", rebuilder=SourceRebuilder(), **kwargs
            )  # type: ignore[arg-type]
            assert result.verdict is Verdict.FAIL
            assert "names no exact commit" in result.checks[0].detail


# --- --source: HEAD and every file the build reads --------------------------------------


def test_source_checkout_at_another_commit_fails_or_is_inconclusive(tmp_path: Path) -> None:
    repo = tmp_path / "vendor"
    _, reviewed = make_repo(repo)
    manifest = _release(tmp_path, repo, reviewed)
    evil = add_backdoor_commit(repo, tag="t")
    git(repo, "checkout", "--quiet", evil)
    rebuilder = SourceRebuilder()
    result = verify(manifest, tmp_path / "o1", source=repo, rebuilder=rebuilder)
    assert result.verdict is Verdict.FAIL and not rebuilder.built
    assert f"at {evil}" in result.checks[0].detail
    # the explicitly named override: rebuilt, but never PASS
    git(repo, "checkout", "--quiet", "main")
    (repo / "app" / "notes.txt").write_text("an untracked file\n")
    manifest = _release(tmp_path / "again", repo, reviewed)  # the image includes it
    result = verify(
        manifest, tmp_path / "o2", source=repo, rebuilder=rebuilder, allow_other_commit=True
    )
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.checks[0].outcome is CheckOutcome.NOT_RUN
    assert all(c.outcome is CheckOutcome.PASS for c in result.checks[1:])


@pytest.mark.parametrize("how", ["untracked", "ignored", "modified", "not-git"])
def test_source_files_not_in_the_commit_fail(tmp_path: Path, how: str) -> None:
    """A tree at the right HEAD, plus a file the build reads that the commit lacks."""
    repo = tmp_path / "vendor"
    _, reviewed = make_repo(repo)
    if how == "ignored":
        (repo / ".gitignore").write_text("app/evil.py\n")
        git(repo, "add", ".gitignore")
        git(repo, "commit", "--quiet", "-m", "ignore")
        reviewed = git(repo, "rev-parse", "HEAD")
    if how in ("untracked", "ignored"):
        (repo / "app" / "evil.py").write_text("import os; os.system('backdoor')\n")
    elif how == "modified":
        (repo / "spec" / "init" / "init.c").write_text("int main(void) { return 1; }\n")
    else:
        subprocess.run(["rm", "-rf", str(repo / ".git")], check=True)
    manifest = _release(tmp_path, repo, reviewed)  # the vendor built what is in the tree
    rebuilder = SourceRebuilder()
    result = verify(manifest, tmp_path / "out", source=repo, rebuilder=rebuilder)
    assert result.verdict is Verdict.FAIL and not rebuilder.built
    detail = result.checks[0].detail
    want = {"untracked": "app/evil.py", "ignored": "app/evil.py",
            "modified": "spec/init/init.c", "not-git": "not a git checkout"}  # fmt: skip
    assert want[how] in detail


# --- git without the repository's own config -----------------------------------------------


def test_fsmonitor_hooks_and_filters_never_run(tmp_path: Path, host: Host) -> None:
    repo = tmp_path / "vendor"
    make_repo(repo)
    head = plant_git_config(repo, host)
    # control: plain git in this repository runs the vendor's commands
    subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True)
    assert host.marker.exists()
    host.marker.unlink()
    manifest = _release(tmp_path, repo, head)
    info = git_info(repo, ["app", "spec"])
    assert info is not None and info.commit == head and not info.dirty
    result = verify(manifest, tmp_path / "o1", source=repo, rebuilder=SourceRebuilder())
    assert result.verdict is Verdict.PASS, result.checks
    result = verify(manifest, tmp_path / "o2", git=f"{repo}@{head}", rebuilder=SourceRebuilder())
    assert result.verdict is Verdict.PASS, result.checks
    result = verify(
        manifest, tmp_path / "o3", git=f"file://{repo}@{head[:8]}", rebuilder=SourceRebuilder()
    )
    assert result.verdict is Verdict.PASS, result.checks
    host.assert_clean(tmp_path / "o1", tmp_path / "o2", tmp_path / "o3")


def test_git_worktree_checkout_is_read(tmp_path: Path) -> None:
    """A `git worktree` checkout (.git is a file) resolves HEAD through its common dir."""
    repo = tmp_path / "vendor"
    _, head = make_repo(repo)
    git(repo, "pack-refs", "--all")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "--quiet", "-b", "side", str(wt))
    found = find_checkout(wt / "app")
    assert found is not None and found.top == wt and found.head == head
    assert git_info(wt, ["app"]) is not None


@pytest.mark.parametrize(
    "url",
    [
        "--upload-pack=touch {marker}",
        "-oProxyCommand=touch {marker}",
        "ext::sh -c touch% {marker}",
        "fd::7",
        "foo::bar",
        "https://host/repo\n--upload-pack=x",
        "ssh://-oProxyCommand=touch% {marker}/x",
        "ssh://user@-oProxyCommand=x/repo",
        "-oProxyCommand=x:repo",
        "user@-oProxyCommand=x:repo",
        "remote-ext::x",
        "gopher://host/repo",
    ],
)
def test_option_and_helper_urls_are_refused(tmp_path: Path, host: Host, url: str) -> None:
    repo = tmp_path / "vendor"
    _, head = make_repo(repo)
    manifest = _release(tmp_path, repo, head)
    ref = url.format(marker=host.marker) + f"@{head[:12]}"
    with pytest.raises(InvalidInput):
        parse_git_ref(ref)
    with pytest.raises(InvalidInput):
        fetch_commit(ref.rsplit("@", 1)[0], head, tmp_path / "dest")
    result = run_cli(
        ["verify", "--manifest", str(manifest), "--git", ref, "-o", str(tmp_path / "out")]
    )
    assert_one_line_error(result, 3, "--git")
    assert not (tmp_path / "out").exists()
    host.assert_clean(result.stdout, result.stderr)


# --- the manifest's paths ---------------------------------------------------------------------


def test_escaping_output_path_is_refused(tmp_path: Path, host: Host) -> None:
    repo = tmp_path / "vendor"
    _, head = make_repo(repo)
    manifest = _release(tmp_path, repo, head)
    doc = json.loads(manifest.read_text())
    depth = len(manifest.parent.relative_to("/").parts)
    doc["outputs"][0]["path"] = "../" * depth + str(host.secret_file).lstrip("/")
    manifest.write_text(json.dumps(doc))
    out = tmp_path / "out"
    result = run_cli(["verify", "--manifest", str(manifest), "--source", str(repo), "-o", str(out)])
    assert_one_line_error(result, 30, "output path")
    assert not out.exists()
    host.assert_clean(result.stdout, result.stderr)
    # the same through a symlink next to the manifest
    doc["outputs"][0]["path"] = "enclave.eif"
    manifest.write_text(json.dumps(doc))
    (manifest.parent / "enclave.eif").unlink()
    (manifest.parent / "enclave.eif").symlink_to(host.secret_file)
    with pytest.raises(SpecInvalid, match="outside"):
        verify(manifest, out, source=repo, rebuilder=SourceRebuilder())
    result = run_cli(["verify", "--manifest", str(manifest), "--source", str(repo), "-o", str(out)])
    assert_one_line_error(result, 30, "outside")
    assert not out.exists()
    host.assert_clean(result.stdout, result.stderr)


@pytest.mark.parametrize("field", ["path", "lock_path"])
def test_escaping_spec_paths_in_the_manifest_are_refused(
    tmp_path: Path, host: Host, field: str
) -> None:
    repo = tmp_path / "vendor"
    _, head = make_repo(repo)
    manifest = _release(tmp_path, repo, head)
    doc = json.loads(manifest.read_text())
    doc["spec"][field] = "../host/host-secret.txt"
    manifest.write_text(json.dumps(doc))
    result = run_cli(
        ["verify", "--manifest", str(manifest), "--source", str(repo), "-o", str(tmp_path / "o")]
    )
    assert_one_line_error(result, 30, "spec path")
    # through a symlink inside the checkout
    doc["spec"][field] = "spec/link"
    manifest.write_text(json.dumps(doc))
    (repo / "spec" / "link").symlink_to(host.secret_file)
    with pytest.raises(SpecInvalid, match="outside"):
        verify(manifest, tmp_path / "o", source=repo, rebuilder=SourceRebuilder())
    assert not (tmp_path / "o").exists()
    host.assert_clean(result.stdout, result.stderr)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_manifest_that_is_a_fifo_or_device_is_refused(tmp_path: Path, kind: str) -> None:
    repo = tmp_path / "vendor"
    make_repo(repo)
    if kind == "fifo":
        manifest = tmp_path / "manifest.json"
        os.mkfifo(manifest)
    else:
        manifest = Path("/dev/zero")
    result = run_cli(
        ["verify", "--manifest", str(manifest), "--source", str(repo), "-o", str(tmp_path / "o")],
        timeout=60,
    )
    assert_one_line_error(result, 30, kind if kind == "fifo" else "device")


def test_git_file_naming_a_host_repository_leaks_nothing(tmp_path: Path) -> None:
    """A vendor tree whose .git file points at another repository on the auditor's machine."""
    private = tmp_path / "auditor-private"
    make_repo(private)
    (private / "notes.txt").write_text("the auditor's own work\n")
    git(private, "add", "notes.txt")
    git(private, "commit", "--quiet", "-m", "private")
    private_head = git(private, "rev-parse", "HEAD")
    repo = tmp_path / "vendor"
    _, reviewed = make_repo(repo)
    manifest = _release(tmp_path, repo, reviewed)
    subprocess.run(["rm", "-rf", str(repo / ".git")], check=True)
    (repo / ".git").write_text(f"gitdir: {private / '.git'}\n")
    result = verify(manifest, tmp_path / "out", source=repo, rebuilder=SourceRebuilder())
    assert result.verdict is Verdict.FAIL
    assert private_head not in (tmp_path / "out" / "verify.json").read_text()
