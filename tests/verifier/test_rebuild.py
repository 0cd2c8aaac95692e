"""Rebuild-and-compare: PASS on an identical rebuild, FAIL with a diff on a changed one,
INCONCLUSIVE when the rebuild cannot run; the real pipeline on the reference image (slow).

The fast tests use a rebuilder that implements the real :class:`Rebuilder` protocol by
writing a real EIF (builder writer, real ramdisk) from the source directory, so the
comparison, the diff and the output directory are exercised for real.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import run_cli

from builder.eif import write_eif
from builder.initramfs import directory, file_path, write_ramdisk
from enclave_audit.errors import DigestMismatch, EnvironmentProblem, InputNotFound, InvalidInput
from enclave_audit.fsutil import hash_file
from enclave_audit.model.findings import CheckOutcome, Verdict
from enclave_audit.model.manifest import (
    BuilderInfo,
    BuildManifest,
    BuildOutput,
    InputKind,
    KernelInfo,
    PinnedInput,
    SourceInfo,
    SpecInfo,
)
from enclave_audit.model.measurements import PcrSet
from enclave_audit.progress import ProgressSink
from verifier.rebuild import Rebuilt, parse_git_ref, verify

EPOCH = 1_700_000_000


def _tree_digest(src: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(src.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(src).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _build(src: Path, out: Path) -> tuple[Path, PcrSet, str]:
    """A small but real build: the source files in a ramdisk, a fixed kernel blob, an EIF.

    Returns the image, its PCRs and the sha256 the EIF writer computed while writing."""
    out.mkdir(parents=True)
    kernel = out / "kernel.bin"
    kernel.write_bytes(b"\x00\x01" * 2048)
    entries = [directory("app")] + [
        file_path(f"app/{p.relative_to(src).as_posix()}", p, mtime=EPOCH)
        for p in sorted(src.rglob("*"))
        if p.is_file()
    ]
    ramdisk = out / "app.cpio"
    write_ramdisk(ramdisk, entries, epoch=EPOCH)
    eif = out / "enclave.eif"
    written = write_eif(
        eif,
        kernel=kernel,
        cmdline="reboot=k",
        ramdisks=[ramdisk],
        name="t",
        version="1",
        build_time="2026-11-23T00:00:00Z",
    )
    return eif, written.pcrs, written.sha256


def _manifest(src: Path, eif: Path, pcrs: PcrSet) -> BuildManifest:
    digests = hash_file(eif, ("sha256", "sha384"))
    return BuildManifest(
        name="t",
        version="1",
        builder=BuilderInfo(version="0.1.0", backend="native"),
        source_date_epoch=EPOCH,
        rootfs_source_date_epoch=EPOCH,
        source=SourceInfo(tree_sha256=_tree_digest(src)),
        spec=SpecInfo(
            path="enclave.toml", sha256="0" * 64, text="", lock_path="lock", lock_text=""
        ),
        kernel=KernelInfo(
            release="6.1",
            cmdline="reboot=k",
            bzimage_sha256="0" * 64,
            config_sha256="0" * 64,
            input_digest="0" * 64,
            source_date_epoch=EPOCH,
        ),
        inputs=(
            PinnedInput(
                name="app", kind=InputKind.SOURCE_TREE, origin="test", sha256=_tree_digest(src)
            ),
        ),
        toolchain={"gcc": "12"},
        ramdisks=(),
        outputs=(
            BuildOutput(
                name="enclave.eif",
                path="enclave.eif",
                size=eif.stat().st_size,
                sha256=digests["sha256"].hex(),
                sha384=digests["sha384"].hex(),
            ),
        ),
        pcrs=pcrs,
    )


class SourceRebuilder:
    """Implements the Rebuilder protocol with the small real build above; like the builder's
    pipeline, it refuses a source tree that is not the manifest's (DigestMismatch)."""

    def __call__(
        self, manifest: BuildManifest, source_dir: Path, out_dir: Path, *, progress: ProgressSink
    ) -> Rebuilt:
        tree = _tree_digest(source_dir)
        if tree != manifest.source.tree_sha256:
            raise DigestMismatch(
                f"{source_dir}: application sources have tree digest {tree},"
                f" the manifest records {manifest.source.tree_sha256}"
            )
        eif, pcrs, sha256 = _build(source_dir, out_dir)
        rebuilt = manifest.model_copy(
            update={
                "pcrs": pcrs,
                "source": SourceInfo(tree_sha256=_tree_digest(source_dir)),
                "inputs": (
                    PinnedInput(
                        name="app",
                        kind=InputKind.SOURCE_TREE,
                        origin="test",
                        sha256=_tree_digest(source_dir),
                    ),
                ),
            }
        )
        return Rebuilt(eif=eif, pcrs=pcrs, manifest=rebuilt, eif_sha256=sha256)


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
    src = tmp_path / "src"
    src.mkdir()
    (src / "server.py").write_text("print('serving')\n")
    (src / "config.json").write_text('{"port": 8080}\n')
    eif, pcrs, _ = _build(src, tmp_path / "orig")
    manifest = tmp_path / "orig" / "build-manifest.json"
    manifest.write_text(_manifest(src, eif, pcrs).to_json())
    return src, manifest, eif


def test_identical_rebuild_passes(original: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, manifest, eif = original
    result = verify(manifest, tmp_path / "out", source=src, rebuilder=SourceRebuilder())
    assert result.verdict is Verdict.PASS, result.checks
    assert [c.name for c in result.checks] == [
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


def test_published_image_from_other_source_fails_with_diff(
    original: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The manifest's source rebuilds; the image published with it was built from other
    source: the PCRs differ and the diff names the file."""
    src, manifest, _ = original
    other = tmp_path / "other-src"
    other.mkdir()
    for p in src.iterdir():
        (other / p.name).write_bytes(p.read_bytes())
    (other / "server.py").write_text("print('serving!')\n")
    published, _, _ = _build(other, tmp_path / "published")
    result = verify(
        manifest, tmp_path / "out", source=src, eif=published, rebuilder=SourceRebuilder()
    )
    assert result.verdict is Verdict.FAIL
    outcomes = {c.name: c.outcome for c in result.checks}
    assert outcomes["rebuild"] is CheckOutcome.PASS
    assert outcomes["PCR0"] is CheckOutcome.FAIL and outcomes["PCR1"] is CheckOutcome.FAIL
    assert "source-tree" not in outcomes  # the rebuild itself checks the tree
    assert result.diff is not None
    node = result.diff.find("app/server.py")
    assert node is not None and node.pcrs == (0, 1)
    assert node.significance is not None and node.significance.value == "unexplained"
    assert "app/server.py" in (tmp_path / "out" / "diff.txt").read_text()
    assert json.loads((tmp_path / "out" / "diff.json").read_text())["identical"] is False


def test_a_checkout_of_other_source_fails_the_rebuild(
    original: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    src, manifest, _ = original
    (src / "server.py").write_text("print('serving!')\n")
    result = verify(manifest, tmp_path / "out", source=src, rebuilder=SourceRebuilder())
    assert result.verdict is Verdict.FAIL
    assert result.checks[0].name == "rebuild" and result.checks[0].outcome is CheckOutcome.FAIL
    assert "tree digest" in result.checks[0].detail


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
    """The real command, with its real pipeline swapped for nothing: a wrong source fails
    in the rebuild step, and the output directory still has verify.json and the reports."""
    src, manifest, _ = original
    (src / "server.py").write_text("changed\n")
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
        result.checks[0].outcome is CheckOutcome.NOT_RUN and "mmdebstrap" in result.checks[0].detail
    )


def test_input_digest_mismatch_fails(original: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, manifest, _ = original
    result = verify(manifest, tmp_path / "out", source=src, rebuilder=TamperedInputRebuilder())
    assert result.verdict is Verdict.FAIL
    assert result.checks[0].outcome is CheckOutcome.FAIL and "sha256" in result.checks[0].detail


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
