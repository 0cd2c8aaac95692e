"""Rebuild an image from its build manifest alone and compare it with what was claimed.

The rebuild runs in a fresh directory through a :class:`Rebuilder` (by default the
builder's pipeline, which fetches every pinned input into the cache and checks its
digest).  The result is compared with the expected measurements (a nitro-cli
measurements file, an EIF, or the manifest's own record): PCR0, PCR1, PCR2 and the EIF
digest, plus the source-tree and pinned-input digests of the rebuilt manifest.  On a
mismatch the two images are diffed and the difference tree (with causes) is attached.

Verdict: PASS only when every comparison ran and matched; FAIL when one differs;
INCONCLUSIVE when the rebuild (or a comparison) could not run.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from enclave_audit.errors import EnclaveAuditError, InputNotFound, InvalidInput, TrustError
from enclave_audit.fsutil import atomic_directory, hash_file, write_text_atomic
from enclave_audit.model.difference import DiffNode
from enclave_audit.model.findings import Check, CheckOutcome, Verdict, verdict_of
from enclave_audit.model.manifest import BuildManifest
from enclave_audit.model.measurements import IMAGE_PCRS, PcrSet
from enclave_audit.progress import NullProgress, ProgressSink
from enclave_audit.tools import run

VERIFY_SCHEMA: Literal["enclave-audit/verify"] = "enclave-audit/verify"
VERIFY_SCHEMA_VERSION = 1
_GIT_REF = re.compile(r"^(?P<url>.+)@(?P<commit>[0-9a-fA-F]{7,40})$")


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild produced."""

    eif: Path
    pcrs: PcrSet
    manifest: BuildManifest


class Rebuilder(Protocol):
    """Rebuild ``manifest`` from a source checkout into ``out_dir`` (which must not exist)."""

    def __call__(
        self, manifest: BuildManifest, source_dir: Path, out_dir: Path, *, progress: ProgressSink
    ) -> Rebuilt: ...


class PipelineRebuilder:
    """The builder's pipeline: pinned inputs fetched into the cache and digest-checked."""

    def __init__(
        self,
        *,
        backend: str | None = None,
        use_rootfs_cache: bool = True,
        inputs: tuple[Path, ...] = (),
        debian_mirrors: tuple[str, ...] = (),
    ) -> None:
        self.backend = backend
        self.use_rootfs_cache = use_rootfs_cache
        self.inputs = inputs
        self.debian_mirrors = debian_mirrors

    def __call__(
        self, manifest: BuildManifest, source_dir: Path, out_dir: Path, *, progress: ProgressSink
    ) -> Rebuilt:
        from builder.pipeline import rebuild_from_manifest

        result = rebuild_from_manifest(
            manifest,
            source_dir,
            out_dir,
            backend=self.backend,
            use_rootfs_cache=self.use_rootfs_cache,
            inputs=self.inputs,
            debian_mirrors=self.debian_mirrors,
            progress=progress,
        )
        return Rebuilt(eif=result.eif, pcrs=result.pcrs, manifest=result.manifest)


class VerifyResult(BaseModel):
    """The outcome of ``enclave-audit verify`` (saved as ``verify.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: Literal["enclave-audit/verify"] = Field(default=VERIFY_SCHEMA, alias="schema")
    schema_version: int = VERIFY_SCHEMA_VERSION
    manifest: str
    name: str
    version: str
    verdict: Verdict
    checks: list[Check]
    expected_from: str
    expected: PcrSet
    rebuilt: PcrSet | None = None
    expected_eif_sha256: str | None = None
    rebuilt_eif_sha256: str | None = None
    rebuilt_eif: str | None = None
    diff: DiffNode | None = None
    notes: list[str] = Field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True) + "\n"


def parse_git_ref(text: str) -> tuple[str, str]:
    """``URL@COMMIT`` -> (url, commit); the commit must be hex (7 to 40 digits)."""
    m = _GIT_REF.match(text.strip())
    if not m:
        raise InvalidInput(f"--git {text!r}: expected URL@COMMIT with a hex commit id")
    return m.group("url"), m.group("commit").lower()


def checkout(url: str, commit: str, dest: Path) -> Path:
    """Clone ``url`` and check out ``commit`` (detached) into ``dest``."""
    run(["git", "clone", "--quiet", "--no-checkout", url, str(dest)], what="git clone")
    run(
        ["git", "-C", str(dest), "-c", "advice.detachedHead=false", "checkout", "--quiet", commit],
        what=f"git checkout {commit}",
    )
    return dest


def _head(source: Path) -> str | None:
    done = run(["git", "-C", str(source), "rev-parse", "HEAD"], check=False)
    return done.stdout.decode().strip() if done.returncode == 0 else None


def _expected(
    manifest: BuildManifest, manifest_path: Path, expected: Path | None, eif: Path | None
) -> tuple[str, PcrSet, str | None, Path | None]:
    """(description, PCRs, EIF sha256 or None, an image to diff against or None)."""
    recorded = manifest.output("enclave.eif")
    if eif is not None:
        from builder.eif import describe_eif

        desc = describe_eif(eif)
        return f"image {eif}", desc.pcrs, hash_file(eif)["sha256"].hex(), eif
    image = None  # the EIF the build left next to its manifest, to diff against
    if recorded is not None:
        candidate = manifest_path.parent / (recorded.path or "enclave.eif")
        if candidate.is_file():
            image = candidate
    want_sha = recorded.sha256 if recorded else None
    if expected is not None:
        return f"measurements {expected}", PcrSet.load(expected), want_sha, image
    return f"manifest {manifest_path}", manifest.pcrs, want_sha, image


def _input_check(original: BuildManifest, rebuilt: BuildManifest) -> Check:
    before = {(i.kind.value, i.name): (i.version, i.sha256) for i in original.inputs}
    after = {(i.kind.value, i.name): (i.version, i.sha256) for i in rebuilt.inputs}
    differ = sorted(k[1] for k in set(before) | set(after) if before.get(k) != after.get(k))
    if differ:
        return Check(
            name="pinned-inputs",
            outcome=CheckOutcome.FAIL,
            detail=f"{len(differ)} input(s) differ: {', '.join(differ[:8])}",
        )
    return Check(
        name="pinned-inputs",
        outcome=CheckOutcome.PASS,
        detail=f"{len(before)} inputs with the recorded versions and sha256",
    )


def verify(
    manifest_path: Path,
    out_dir: Path,
    *,
    source: Path | None = None,
    git: str | None = None,
    expected: Path | None = None,
    eif: Path | None = None,
    rebuilder: Rebuilder | None = None,
    progress: ProgressSink | None = None,
) -> VerifyResult:
    """Rebuild from ``manifest_path`` into ``out_dir`` and compare; see the module docstring.

    ``out_dir`` gets ``verify.json``, ``rebuild/`` (the rebuilt image and its manifest)
    and, on a mismatch, ``diff.json`` and ``diff.txt``; it appears whole or not at all.
    """
    started = time.monotonic()
    progress = progress or NullProgress()
    rebuilder = rebuilder or PipelineRebuilder()
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise InputNotFound(f"{manifest_path}: no such file")
    manifest = BuildManifest.load(manifest_path)
    if source is not None and git is not None:
        raise InvalidInput("give --source or --git, not both")
    if source is None and git is None:
        raise InvalidInput("verify needs the source: --source DIR or --git URL@COMMIT")
    if source is not None and not Path(source).is_dir():
        raise InputNotFound(f"{source}: not a directory")
    for path in (expected, eif):
        if path is not None and not Path(path).is_file():
            raise InputNotFound(f"{path}: no such file")
    expected_from, want, want_sha, reference = _expected(manifest, manifest_path, expected, eif)
    checks: list[Check] = []
    notes: list[str] = []
    rebuilt: Rebuilt | None = None
    with (
        atomic_directory(Path(out_dir)) as staging,
        tempfile.TemporaryDirectory(prefix="enclave-audit-src-") as tmp,
    ):
        if git is not None:
            url, commit = parse_git_ref(git)
            recorded = manifest.source.git_commit
            if recorded and not recorded.startswith(commit) and not commit.startswith(recorded):
                raise InvalidInput(f"--git commit {commit} is not the manifest's {recorded}")
            src = checkout(url, commit, Path(tmp) / "src")
        else:
            assert source is not None
            src = Path(source).resolve()
            head = _head(src) if (src / ".git").exists() else None
            recorded = manifest.source.git_commit
            if head and recorded and head != recorded:
                notes.append(f"source checkout is at {head}, the manifest records {recorded}")
        try:
            rebuilt = rebuilder(manifest, src, staging / "rebuild", progress=progress)
        except TrustError as exc:
            # a pinned input or the checkout does not match its recorded digest: the
            # claim "built from these inputs" is refuted, not merely unverified
            checks.append(
                Check(
                    name="rebuild",
                    outcome=CheckOutcome.FAIL,
                    detail=f"{type(exc).__name__}: {exc.message}",
                )
            )
        except EnclaveAuditError as exc:
            checks.append(
                Check(
                    name="rebuild",
                    outcome=CheckOutcome.NOT_RUN,
                    detail=f"{type(exc).__name__}: {exc.message}",
                )
            )
        if rebuilt is not None:
            checks.append(
                Check(
                    name="rebuild",
                    outcome=CheckOutcome.PASS,
                    detail=f"rebuilt {rebuilt.eif.name} in a fresh directory",
                )
            )
            same_tree = rebuilt.manifest.source.tree_sha256 == manifest.source.tree_sha256
            checks.append(
                Check(
                    name="source-tree",
                    outcome=CheckOutcome.PASS if same_tree else CheckOutcome.FAIL,
                    detail=f"sha256 {rebuilt.manifest.source.tree_sha256}"
                    + ("" if same_tree else f" (manifest: {manifest.source.tree_sha256})"),
                )
            )
            checks.append(_input_check(manifest, rebuilt.manifest))
            for index in IMAGE_PCRS:
                got, exp = rebuilt.pcrs.get(index), want.get(index)
                if exp is None:
                    checks.append(
                        Check(
                            name=f"PCR{index}",
                            outcome=CheckOutcome.NOT_RUN,
                            detail=f"no expected PCR{index} in {expected_from}",
                        )
                    )
                    continue
                checks.append(
                    Check(
                        name=f"PCR{index}",
                        outcome=CheckOutcome.PASS if got == exp else CheckOutcome.FAIL,
                        detail=f"{got.hex() if got else '(none)'}"
                        + ("" if got == exp else f" != expected {exp.hex()}"),
                    )
                )
            rebuilt_sha = hash_file(rebuilt.eif)["sha256"].hex()
            if want_sha is None:
                checks.append(
                    Check(
                        name="eif-digest",
                        outcome=CheckOutcome.NOT_RUN,
                        detail="no expected EIF digest (manifest lists no enclave.eif)",
                    )
                )
            else:
                checks.append(
                    Check(
                        name="eif-digest",
                        outcome=CheckOutcome.PASS if rebuilt_sha == want_sha else CheckOutcome.FAIL,
                        detail=f"sha256 {rebuilt_sha}"
                        + ("" if rebuilt_sha == want_sha else f" != {want_sha}"),
                    )
                )
        verdict = verdict_of(checks)
        diff_root: DiffNode | None = None
        if rebuilt is not None and verdict is not Verdict.PASS:
            if reference is None:
                notes.append(
                    "no expected image to diff against: pass --eif IMAGE (or keep the"
                    " EIF next to the manifest)"
                )
            else:
                diff_root = _diff(reference, rebuilt.eif, staging, progress)
        result = VerifyResult(
            manifest=str(manifest_path),
            name=manifest.name,
            version=manifest.version,
            verdict=verdict,
            checks=checks,
            expected_from=expected_from,
            expected=want,
            rebuilt=rebuilt.pcrs if rebuilt else None,
            expected_eif_sha256=want_sha,
            rebuilt_eif_sha256=hash_file(rebuilt.eif)["sha256"].hex() if rebuilt else None,
            rebuilt_eif=str(Path(out_dir) / "rebuild" / rebuilt.eif.name) if rebuilt else None,
            diff=diff_root,
            notes=notes,
            seconds=round(time.monotonic() - started, 3),
        )
        write_text_atomic(staging / "verify.json", result.to_json())
    return result


def _diff(reference: Path, rebuilt: Path, staging: Path, progress: ProgressSink) -> DiffNode | None:
    import io

    from rich.console import Console

    from verifier.compare import compare_paths
    from verifier.compare.render import render_text

    report = compare_paths(reference, rebuilt, progress=progress)
    write_text_atomic(staging / "diff.json", report.to_json() + "\n")
    console = Console(record=True, width=120, file=io.StringIO())
    render_text(report, console)
    write_text_atomic(staging / "diff.txt", console.export_text())
    return report.root
