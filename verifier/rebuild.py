"""Rebuild an image from its build manifest alone and compare it with what was claimed.

The rebuild runs in a fresh directory through a :class:`Rebuilder` (by default the
builder's pipeline, which fetches every pinned input into the cache and checks its
digest).  The result is compared with the expected measurements (a nitro-cli
measurements file, an EIF, or the manifest's own record): PCR0, PCR1, PCR2 and the EIF
digest, plus the pinned-input digests of the rebuilt manifest (the source tree is bound
by the ``source-commit`` check below, and the rebuild itself checks the tree digest).  On
a mismatch the two images are diffed and the difference tree (with causes, the two
manifests' build epochs as evidence) is attached.

Verdict: PASS only when every comparison ran and matched; FAIL when one differs;
INCONCLUSIVE when the rebuild (or a comparison) could not run.

The verdict binds to one exact commit (check ``source-commit``, first).  ``--git
URL@COMMIT`` resolves COMMIT among commit objects only (a tag or branch named like a
commit id never wins; see :mod:`builder.git`), and the commit checked out must be the
manifest's full ``source.git_commit``.  With ``--source DIR`` the checkout's ``HEAD``
must be that commit and every file the build reads (spec, lock, kernel config, C
sources, application packages, docker context) must be byte for byte that commit's;
otherwise FAIL, or INCONCLUSIVE when the caller asked for the rebuild anyway
(``allow_other_commit``).  No git command reads the audited repository's config,
hooks or index.  Every path the manifest names resolves inside the manifest's
directory or the source checkout, else :class:`SpecInvalid`.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from builder.git import check_url, differing, fetch_commit, find_checkout
from builder.spec import contained
from enclave_audit.errors import (
    EnclaveAuditError,
    InputNotFound,
    InvalidInput,
    SpecInvalid,
    TrustError,
)
from enclave_audit.fsutil import atomic_directory, hash_file, write_text_atomic
from enclave_audit.model.difference import DiffNode
from enclave_audit.model.findings import Check, CheckOutcome, Verdict, verdict_of
from enclave_audit.model.manifest import BuildManifest
from enclave_audit.model.measurements import IMAGE_PCRS, PcrSet
from enclave_audit.progress import NullProgress, ProgressSink
from verifier.compare.evidence import Evidence

VERIFY_SCHEMA: Literal["enclave-audit/verify"] = "enclave-audit/verify"
VERIFY_SCHEMA_VERSION = 1
_GIT_REF = re.compile(r"^(?P<url>.+)@(?P<commit>[0-9a-fA-F]{7,64})$")
_FULL_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild produced; ``eif_sha256`` is the digest the EIF writer computed as it
    wrote the image (hex)."""

    eif: Path
    pcrs: PcrSet
    manifest: BuildManifest
    eif_sha256: str


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
        written = result.manifest.output("enclave.eif")
        if written is None:
            raise InvalidInput("the rebuild's manifest records no enclave.eif output")
        return Rebuilt(
            eif=result.eif, pcrs=result.pcrs, manifest=result.manifest, eif_sha256=written.sha256
        )


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
    """``URL@COMMIT`` -> (url, commit); the commit must be hex (7 to 64 digits).

    A URL that git could take as an option (leading ``-``), a transport helper
    (``ext::``...) or control characters are refused here, before git runs.
    """
    m = _GIT_REF.match(text)
    if not m:
        raise InvalidInput(f"--git {text[:200]!r}: expected URL@COMMIT with a hex commit id")
    return check_url(m.group("url")), m.group("commit").lower()


def checkout(url: str, commit: str, dest: Path) -> str:
    """Check out ``commit`` of ``url`` into ``dest``; returns the full commit id."""
    return fetch_commit(url, commit, dest)


def _manifest_commit(manifest: BuildManifest) -> str:
    commit = manifest.source.git_commit
    return commit if _FULL_COMMIT.match(commit) else ""


def _build_files(src: Path, manifest: BuildManifest, backend: str) -> list[Path]:
    """Every file of the source checkout the rebuild reads (resolved, inside ``src``).

    Loading the checkout's spec also validates it (bounds, grammar, containment): a
    hostile spec is a :class:`SpecInvalid` here, before anything is built.
    """
    from builder.app import tree_files
    from builder.spec import load_spec

    spec = contained(src, src, manifest.spec.path, "manifest spec.path")
    lock = contained(src, src, manifest.spec.lock_path, "manifest spec.lock_path")
    for path, what in ((spec, "spec"), (lock, "Debian lock")):
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise SpecInvalid(f"{path}: the manifest's {what} is not a regular file")
    loaded = load_spec(spec, source_root=src)
    files = [*loaded.input_paths(), lock]
    files += [f.path for f in tree_files(loaded, backend)]
    return files


def _source_binding(
    src: Path, manifest: BuildManifest, backend: str, allow_other_commit: bool
) -> Check:
    """Is the source checkout exactly the manifest's commit (see the module docstring)?"""
    files = _build_files(src, manifest, backend)
    recorded = _manifest_commit(manifest)
    checkout_ = find_checkout(src)
    problem = ""
    if not recorded:
        problem = (
            "the manifest names no exact commit"
            f" (source.git_commit {manifest.source.git_commit[:80]!r})"
        )
    elif checkout_ is None:
        problem = f"{src} is not a git checkout, so it cannot be shown to be commit {recorded}"
    elif checkout_.head != recorded:
        # the commit id is shown only when the git directory is the tree's own (a .git
        # file in a vendor's tree could name a repository elsewhere on this machine)
        at = checkout_.head if checkout_.gitdir.is_relative_to(src) else "another commit"
        problem = f"the source checkout is at {at}, the manifest records {recorded}"
    else:
        differ = differing(checkout_, files)
        if differ:
            shown = ", ".join(differ[:5]) + (" ..." if len(differ) > 5 else "")
            problem = (
                f"{len(differ)} file(s) the build reads are not commit {recorded}'s"
                f" (uncommitted, untracked or ignored): {shown}"
            )
    if not problem:
        return Check(
            name="source-commit",
            outcome=CheckOutcome.PASS,
            detail=f"checkout at {recorded}; every file the build reads is that commit's",
        )
    if allow_other_commit:
        return Check(
            name="source-commit",
            outcome=CheckOutcome.NOT_RUN,
            detail=f"{problem} (rebuilt anyway: --allow-other-commit; the verdict cannot be PASS)",
        )
    return Check(name="source-commit", outcome=CheckOutcome.FAIL, detail=problem)


def _git_binding(
    git: str, manifest: BuildManifest, dest: Path, backend: str
) -> tuple[Check, Path | None]:
    """Fetch and check out the ``--git`` commit when it is the manifest's commit."""
    url, prefix = parse_git_ref(git)
    recorded = _manifest_commit(manifest)
    if not recorded:
        problem = (
            "the manifest names no exact commit"
            f" (source.git_commit {manifest.source.git_commit[:80]!r})"
        )
        return Check(name="source-commit", outcome=CheckOutcome.FAIL, detail=problem), None
    if not recorded.startswith(prefix):
        return (
            Check(
                name="source-commit",
                outcome=CheckOutcome.FAIL,
                detail=f"--git names commit {prefix}, the manifest records {recorded}",
            ),
            None,
        )
    got = checkout(url, prefix, dest)
    if got != recorded:
        return (
            Check(
                name="source-commit",
                outcome=CheckOutcome.FAIL,
                detail=f"the repository's commit {got} is not the manifest's {recorded}",
            ),
            None,
        )
    _build_files(dest, manifest, backend)  # the checkout's spec, validated before any build
    return (
        Check(
            name="source-commit",
            outcome=CheckOutcome.PASS,
            detail=f"checked out commit {recorded} (resolved as a commit object, not a ref)",
        ),
        dest,
    )


def _check_manifest_paths(manifest: BuildManifest, manifest_path: Path) -> None:
    """Every output the manifest names lies inside the manifest's directory."""
    base = manifest_path.resolve().parent
    for item in (*manifest.outputs, *manifest.ramdisks):
        if item.path:
            contained(base, base, item.path, f"{manifest_path}: outputs[{item.name}].path")


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
        base = manifest_path.resolve().parent
        candidate = contained(
            base, base, recorded.path or "enclave.eif", "enclave.eif", must_exist=False
        )
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
    allow_other_commit: bool = False,
    backend: str | None = None,
    finish: Callable[[VerifyResult, Path], None] | None = None,
) -> VerifyResult:
    """Rebuild from ``manifest_path`` into ``out_dir`` and compare; see the module docstring.

    ``allow_other_commit`` rebuilds a ``--source`` checkout that is not exactly the
    manifest's commit; the verdict is then INCONCLUSIVE at best.  ``backend`` is the
    rebuild's rootfs backend when it is not the manifest's (for the list of files the
    build reads).

    ``out_dir`` gets ``verify.json``, ``rebuild/`` (the rebuilt image and its manifest)
    and, on a mismatch, ``diff.json`` and ``diff.txt``; ``finish(result, staging)`` may
    add files (the reports) to the staging directory before it is committed.  The
    directory appears whole or not at all.
    """
    started = time.monotonic()
    progress = progress or NullProgress()
    rebuilder = rebuilder or PipelineRebuilder()
    manifest_path = Path(manifest_path)
    if not manifest_path.exists():
        raise InputNotFound(f"{manifest_path}: no such file")
    manifest = BuildManifest.load(manifest_path)  # a FIFO or device is refused unread
    if source is not None and git is not None:
        raise InvalidInput("give --source or --git, not both")
    if source is None and git is None:
        raise InvalidInput("verify needs the source: --source DIR or --git URL@COMMIT")
    if allow_other_commit and git is not None:
        raise InvalidInput("--allow-other-commit applies to --source only (--git is exact)")
    if source is not None and not Path(source).is_dir():
        raise InputNotFound(f"{source}: not a directory")
    for path in (expected, eif):
        if path is not None and not Path(path).is_file():
            raise InputNotFound(f"{path}: no such file")
    if git is not None:
        parse_git_ref(git)  # a malformed or option-like URL is refused before anything runs
    _check_manifest_paths(manifest, manifest_path)
    expected_from, want, want_sha, reference = _expected(manifest, manifest_path, expected, eif)
    checks: list[Check] = []
    notes: list[str] = []
    rebuilt: Rebuilt | None = None
    with (
        atomic_directory(Path(out_dir)) as staging,
        tempfile.TemporaryDirectory(prefix="enclave-audit-src-") as tmp,
    ):
        src: Path | None
        backend = backend or manifest.builder.backend
        if git is not None:
            binding, src = _git_binding(git, manifest, Path(tmp) / "src", backend)
        else:
            assert source is not None
            src = Path(source).resolve()
            binding = _source_binding(src, manifest, backend, allow_other_commit)
            if binding.outcome is CheckOutcome.FAIL:
                src = None
        checks.append(binding)
        if manifest.source.git_dirty:
            notes.append(
                "the manifest records a build from a checkout with uncommitted changes"
                " (git_dirty); the source-commit check compares the files the build reads"
                " with the commit"
            )
        if src is None:
            checks.append(
                Check(
                    name="rebuild",
                    outcome=CheckOutcome.NOT_RUN,
                    detail="not run: the source is not the manifest's commit (see source-commit)",
                )
            )
        else:
            rebuilt = _rebuild(rebuilder, manifest, src, staging / "rebuild", progress, checks)
        if rebuilt is not None:
            checks.append(
                Check(
                    name="rebuild",
                    outcome=CheckOutcome.PASS,
                    detail=f"rebuilt {rebuilt.eif.name} in a fresh directory",
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
            rebuilt_sha = rebuilt.eif_sha256
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
                evidence = _evidence(manifest, rebuilt.manifest)
                diff_root = _diff(reference, rebuilt.eif, staging, progress, evidence)
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
            rebuilt_eif_sha256=rebuilt.eif_sha256 if rebuilt else None,
            rebuilt_eif=str(Path(out_dir) / "rebuild" / rebuilt.eif.name) if rebuilt else None,
            diff=diff_root,
            notes=notes,
            seconds=round(time.monotonic() - started, 3),
        )
        write_text_atomic(staging / "verify.json", result.to_json())
        if finish is not None:
            finish(result, staging)
    return result


def _rebuild(
    rebuilder: Rebuilder,
    manifest: BuildManifest,
    src: Path,
    out: Path,
    progress: ProgressSink,
    checks: list[Check],
) -> Rebuilt | None:
    """Run the rebuild; a failure becomes a check (FAIL for a broken pin, else NOT_RUN)."""
    try:
        return rebuilder(manifest, src, out, progress=progress)
    except SpecInvalid:
        raise  # the audited spec is refused: an error (exit 30), not a verdict
    except TrustError as exc:
        # a pinned input or the checkout does not match its recorded digest: the
        # claim "built from these inputs" is refuted, not merely unverified
        outcome = CheckOutcome.FAIL
        detail = f"{type(exc).__name__}: {exc.message}"
    except EnclaveAuditError as exc:
        outcome = CheckOutcome.NOT_RUN
        detail = f"{type(exc).__name__}: {exc.message}"
    checks.append(Check(name="rebuild", outcome=outcome, detail=detail))
    return None


def _evidence(expected: BuildManifest, rebuilt: BuildManifest) -> Evidence:
    """Each side's recorded build epochs: the window its clocks may come from."""
    evidence = Evidence()
    for side, m in ((evidence.left, expected), (evidence.right, rebuilt)):
        side.add_time(m.source_date_epoch, "manifest SOURCE_DATE_EPOCH")
        side.add_time(m.rootfs_source_date_epoch, "manifest rootfs SOURCE_DATE_EPOCH")
    return evidence


def _diff(
    reference: Path, rebuilt: Path, staging: Path, progress: ProgressSink, evidence: Evidence
) -> DiffNode | None:
    import io

    from enclave_audit.output import make_console
    from verifier.compare import compare_paths
    from verifier.compare.render import render_text

    report = compare_paths(reference, rebuilt, progress=progress, evidence=evidence)
    write_text_atomic(staging / "diff.json", report.to_json() + "\n")
    # the same safe console as `diff -o FILE`: values shown as data, nothing wraps in a file
    console = make_console(file=io.StringIO(), record=True)
    render_text(report, console)
    write_text_atomic(staging / "diff.txt", str(console.export_text()))
    return report.root
