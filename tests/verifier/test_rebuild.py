"""Rebuild-and-compare: PASS on an identical rebuild, FAIL with a diff on a changed one,
INCONCLUSIVE when the rebuild cannot run; the real pipeline on the reference image (slow).

The fast tests use a rebuilder that implements the real :class:`Rebuilder` protocol by
writing a real EIF (builder writer, real ramdisk) from the source directory, so the
comparison, the diff and the output directory are exercised for real.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from hostile_corpus import git, make_repo
from small_release import SourceRebuilder, _build, _manifest

from enclave_audit.errors import DigestMismatch, EnvironmentProblem, InputNotFound, InvalidInput
from enclave_audit.model.findings import CheckOutcome, Verdict
from enclave_audit.model.manifest import (
    BuildManifest,
)
from enclave_audit.model.measurements import PcrSet
from enclave_audit.progress import ProgressSink
from verifier.rebuild import Rebuilt, parse_git_ref, verify


class TamperedInputRebuilder:
    def __call__(
        self, manifest: BuildManifest, source_dir: Path, out_dir: Path, *, progress: ProgressSink
    ) -> Rebuilt:
        raise DigestMismatch("python3_3.11.2-1+b1_amd64.deb: sha256 differs from the lock")


class BrokenRebuilder:
    def __call__(
        self, manifest: BuildManifest, source_dir: Path, out_dir: Path, *, progress: ProgressSink
    ) -> Rebuilt:
        raise EnvironmentProblem("required tool 'mmdebstrap' not found: install 'mmdebstrap'")


@pytest.fixture()
def original(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A committed source tree (a real git repository), its build and its manifest."""
    src = tmp_path / "src"
    _, commit = make_repo(src)
    (src / "app" / "config.json").write_text('{"port": 8080}\n')
    git(src, "add", "-A")
    git(src, "commit", "--quiet", "-m", "config")
    commit = git(src, "rev-parse", "HEAD")
    eif, pcrs, _ = _build(src, tmp_path / "orig")
    manifest = tmp_path / "orig" / "build-manifest.json"
    manifest.write_text(_manifest(src, eif, pcrs, commit).to_json())
    return src, manifest, eif


def test_identical_rebuild_passes(original: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, manifest, eif = original
    result = verify(manifest, tmp_path / "out", source=src, rebuilder=SourceRebuilder())
    assert result.verdict is Verdict.PASS, result.checks
    assert [c.name for c in result.checks] == [
        "source-commit",
        "rebuild",
        "pinned-inputs",
        "PCR0",
        "PCR1",
        "PCR2",
        "eif-digest",
    ]
    assert result.diff is None
    saved = json.loads((tmp_path / "out" / "verify.json").read_text())
    assert saved["schema"] == "enclave-audit/verify" and saved["verdict"] == "PASS"
    assert (tmp_path / "out" / "rebuild" / "enclave.eif").read_bytes() == eif.read_bytes()


def test_changed_source_fails(original: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, manifest, eif = original
    (src / "app" / "server.py").write_text("print('serving!')\n")
    rebuilder = SourceRebuilder()
    # not the manifest's commit any more: FAIL, and nothing is rebuilt
    result = verify(manifest, tmp_path / "o1", source=src, eif=eif, rebuilder=rebuilder)
    assert result.verdict is Verdict.FAIL and not rebuilder.built
    assert result.checks[0].outcome is CheckOutcome.FAIL
    assert "app/server.py" in result.checks[0].detail
    # asked to rebuild anyway: the rebuild itself refuses sources that are not the
    # manifest's tree (as the builder's pipeline does), so the verdict is still FAIL
    result = verify(
        manifest, tmp_path / "out", source=src, eif=eif, rebuilder=rebuilder,
        allow_other_commit=True,
    )  # fmt: skip
    assert result.verdict is Verdict.FAIL and rebuilder.built
    assert [c.name for c in result.checks] == ["source-commit", "rebuild"]
    assert result.checks[0].outcome is CheckOutcome.NOT_RUN
    assert result.checks[1].outcome is CheckOutcome.FAIL  # no separate source-tree check
    assert "tree digest" in result.checks[1].detail


def test_published_image_from_other_source_fails_with_diff(
    original: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The manifest's commit rebuilds; the image published with it was built from other
    source: the PCRs and the EIF digest differ and the diff names the file, unexplained."""
    src, manifest, _ = original
    other = tmp_path / "other-src"
    shutil.copytree(src / "app", other / "app")
    (other / "app" / "server.py").write_text("print('serving!')\n")
    published, _, _ = _build(other, tmp_path / "published")
    result = verify(
        manifest, tmp_path / "out", source=src, eif=published, rebuilder=SourceRebuilder()
    )
    assert result.verdict is Verdict.FAIL
    outcomes = {c.name: c.outcome for c in result.checks}
    assert outcomes["source-commit"] is CheckOutcome.PASS
    assert outcomes["rebuild"] is CheckOutcome.PASS
    assert outcomes["PCR0"] is CheckOutcome.FAIL and outcomes["PCR1"] is CheckOutcome.FAIL
    assert outcomes["eif-digest"] is CheckOutcome.FAIL
    assert "source-tree" not in outcomes  # the rebuild itself checks the tree
    assert result.diff is not None
    node = result.diff.find("app/server.py")
    assert node is not None and node.pcrs == (0, 1)
    assert node.significance is not None and node.significance.value == "unexplained"
    assert "app/server.py" in (tmp_path / "out" / "diff.txt").read_text()
    assert json.loads((tmp_path / "out" / "diff.json").read_text())["identical"] is False


def test_the_writers_digest_is_carried_through(
    original: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify does not hash the rebuilt image again: the EIF writer's digest is used."""
    import verifier.rebuild as rebuild

    src, manifest, eif = original
    hashed: list[Path] = []
    real = rebuild.hash_file

    def counting(path: Path, *args: object, **kw: object) -> object:
        hashed.append(Path(path))
        return real(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rebuild, "hash_file", counting)
    result = verify(manifest, tmp_path / "out", source=src, rebuilder=SourceRebuilder())
    assert result.verdict is Verdict.PASS
    assert result.rebuilt_eif_sha256 == hashlib.sha256(eif.read_bytes()).hexdigest()
    assert not [p for p in hashed if "rebuild" in p.parts or p.name == "enclave.eif"], hashed


def test_reports_are_written_inside_the_atomic_output(
    original: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    src, manifest, _ = original
    out = tmp_path / "out"
    seen: list[bool] = []

    def finish(result: object, staging: Path) -> None:
        seen.append(out.exists())  # not committed yet
        (staging / "report.json").write_text("{}")

    verify(manifest, out, source=src, rebuilder=SourceRebuilder(), finish=finish)
    assert seen == [False] and (out / "report.json").exists()

    def failing(result: object, staging: Path) -> None:
        (staging / "report.json").write_text("{}")
        raise OSError("disk full")

    with pytest.raises(OSError):
        verify(manifest, tmp_path / "out2", source=src, rebuilder=SourceRebuilder(), finish=failing)
    assert not (tmp_path / "out2").exists()  # nothing half-written


def test_cli_writes_the_reports_in_the_output_directory(
    original: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The real command: a source that is not the manifest's commit fails (source-commit,
    before any build), and the output directory still has verify.json and the reports."""
    src, manifest, _ = original
    (src / "app" / "server.py").write_text("changed\n")
    out = tmp_path / "cli-out"
    done = run_cli(["verify", "--manifest", str(manifest), "--source", str(src), "-o", str(out)])
    assert done.exit_code != 0
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert {"verify.json", "report.json", "report.md", "report.html"} <= set(names), (
        names,
        done.stderr,
    )


def test_expected_measurements_file(original: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, manifest, _ = original
    other = PcrSet(values={0: b"\x01" * 48, 1: b"\x02" * 48, 2: b"\x03" * 48})
    measurements = tmp_path / "m.json"
    measurements.write_text(json.dumps({"Measurements": other.to_nitro()}))
    result = verify(
        manifest, tmp_path / "out", source=src, expected=measurements, rebuilder=SourceRebuilder()
    )
    assert result.verdict is Verdict.FAIL
    assert result.expected == other
    outcomes = {c.name: c.outcome for c in result.checks}
    assert outcomes["PCR0"] is CheckOutcome.FAIL
    assert outcomes["eif-digest"] is CheckOutcome.PASS  # the manifest's digest still matches
    # the image next to the manifest was diffed: it is byte-identical to the rebuild
    assert result.diff is None and (tmp_path / "out" / "diff.json").exists()


def test_rebuild_that_cannot_run_is_inconclusive(
    original: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    src, manifest, _ = original
    result = verify(manifest, tmp_path / "out", source=src, rebuilder=BrokenRebuilder())
    assert result.verdict is Verdict.INCONCLUSIVE
    assert (
        result.checks[1].outcome is CheckOutcome.NOT_RUN and "mmdebstrap" in result.checks[1].detail
    )


def test_input_digest_mismatch_fails(original: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, manifest, _ = original
    result = verify(manifest, tmp_path / "out", source=src, rebuilder=TamperedInputRebuilder())
    assert result.verdict is Verdict.FAIL
    assert result.checks[1].outcome is CheckOutcome.FAIL and "sha256" in result.checks[1].detail


def test_bad_arguments(original: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, manifest, _ = original
    with pytest.raises(InvalidInput, match="--source DIR or --git"):
        verify(manifest, tmp_path / "o", rebuilder=SourceRebuilder())
    with pytest.raises(InputNotFound):
        verify(tmp_path / "nope.json", tmp_path / "o", source=src)
    with pytest.raises(InvalidInput):
        parse_git_ref("https://example.invalid/repo.git")
    assert parse_git_ref("https://h/r.git@ABCDEF1") == ("https://h/r.git", "abcdef1")
    assert not (tmp_path / "o").exists()


def test_cli_bad_inputs_are_one_line(original: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from conftest import assert_one_line_error

    src, manifest, _ = original
    assert_one_line_error(
        run_cli(["verify", "--manifest", str(manifest), "-o", str(tmp_path / "o")]), 3, "--source"
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "nope"}')
    assert_one_line_error(
        run_cli(
            ["verify", "--manifest", str(broken), "--source", str(src), "-o", str(tmp_path / "o")]
        ),
        30,
    )


@pytest.mark.slow
def test_reference_image_rebuilds_to_pass(tmp_path: Path) -> None:
    """The real pipeline: rebuild the reference image from its manifest and compare."""
    from builder.reference import PROJECT_ROOT, reference_image

    ref = reference_image()
    manifest = ref.out_dir / "build-manifest.json"
    result = verify(manifest, tmp_path / "out", source=PROJECT_ROOT, eif=ref.eif)
    assert result.verdict is Verdict.PASS, (result.checks, result.notes)
    # the same commit fetched from the repository (objects only, never its config)
    commit = ref.manifest.source.git_commit
    result = verify(manifest, tmp_path / "out2", git=f"{PROJECT_ROOT}@{commit[:12]}", eif=ref.eif)
    assert result.verdict is Verdict.PASS, (result.checks, result.notes)
