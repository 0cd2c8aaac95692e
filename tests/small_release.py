"""A small but real release for verify's tests: the app package of a source tree in a
newc ramdisk, a fixed kernel blob, an EIF written by the builder's writer, and a build
manifest naming a commit; :class:`SourceRebuilder` implements the verifier's
``Rebuilder`` protocol with the same build.
"""

from __future__ import annotations

from pathlib import Path

from builder.app import collect_sources, tree_digest
from builder.eif import write_eif
from builder.initramfs import directory, file_path, write_ramdisk
from enclave_audit.errors import DigestMismatch
from enclave_audit.fsutil import hash_file
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
from verifier.rebuild import Rebuilt

EPOCH = 1_700_000_000


def _tree_digest(src: Path) -> str:
    return tree_digest(collect_sources(src, ["app"]))


def _build(src: Path, out: Path) -> tuple[Path, PcrSet, str]:
    """A small but real build: the app package in a ramdisk, a fixed kernel blob, an EIF.

    Returns the image, its PCRs and the sha256 the EIF writer computed while writing."""
    out.mkdir(parents=True)
    kernel = out / "kernel.bin"
    kernel.write_bytes(b"\x00\x01" * 2048)
    entries = [directory("app")] + [
        file_path(f.rel, f.path, mtime=EPOCH) for f in collect_sources(src, ["app"])
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


def _manifest(src: Path, eif: Path, pcrs: PcrSet, commit: str) -> BuildManifest:
    digests = hash_file(eif, ("sha256", "sha384"))
    return BuildManifest(
        name="t",
        version="1",
        builder=BuilderInfo(version="0.1.0", backend="native"),
        source_date_epoch=EPOCH,
        rootfs_source_date_epoch=EPOCH,
        source=SourceInfo(git_commit=commit, tree_sha256=_tree_digest(src)),
        spec=SpecInfo(
            path="spec/enclave.toml",
            sha256="0" * 64,
            text="",
            lock_path="spec/debian.lock",
            lock_text="",
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

    def __init__(self) -> None:
        self.built: list[Path] = []
        #: the application files of each rebuild (rel -> bytes), kept after the checkout goes
        self.files: list[dict[str, bytes]] = []

    def __call__(
        self, manifest: BuildManifest, source_dir: Path, out_dir: Path, *, progress: ProgressSink
    ) -> Rebuilt:
        self.built.append(source_dir)
        self.files.append(
            {f.rel: f.path.read_bytes() for f in collect_sources(source_dir, ["app"])}
        )
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
                "source": SourceInfo(
                    git_commit=manifest.source.git_commit, tree_sha256=_tree_digest(source_dir)
                ),
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
