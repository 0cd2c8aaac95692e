"""Export and check input sets for build manifests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.inputs.inputset import InputSet, InputSetIndex, VerifiedSet, write_input_set
from builder.inputs.refs import manifest_inputs, manifest_resolver
from enclave_audit.errors import PinnedInputUnavailable
from enclave_audit.fsutil import read_bytes
from enclave_audit.model.manifest import BuildManifest
from enclave_audit.progress import NullProgress, ProgressSink


@dataclass(frozen=True)
class Exported:
    path: Path
    index: InputSetIndex
    size: int
    #: sha256 -> the source that served it for the export
    served_by: dict[str, str]


def export_inputs(
    manifest_paths: Sequence[Path],
    dest: Path,
    *,
    input_sets: Sequence[Path] = (),
    mirror_map: dict[str, str] | None = None,
    progress: ProgressSink | None = None,
) -> Exported:
    """Write every external input of the manifests into an input set at ``dest``."""
    progress = progress or NullProgress()
    sets = [InputSet(p) for p in input_sets]
    items = []
    served: dict[str, str] = {}
    described = []
    for path in manifest_paths:
        manifest = BuildManifest.load(path)
        described.append(
            {
                "name": manifest.name,
                "version": manifest.version,
                "manifest_sha256": hashlib.sha256(read_bytes(path)).hexdigest(),
            }
        )
        resolver = manifest_resolver(
            manifest, input_sets=sets, mirror_map=mirror_map, progress=progress
        )
        refs = manifest_inputs(manifest)
        served.update(resolver.locate(refs))
        progress.start("inputs: collecting", len(refs))
        for ref in refs:
            items.append((ref, resolver.path(ref)))
            progress.advance(1)
        progress.done()
    index = write_input_set(dest, items, manifests=described)
    return Exported(dest, index, sum(e.size for e in index.inputs), served)


def verify_inputs(path: Path, *, manifests: Sequence[Path] = ()) -> VerifiedSet:
    """Every blob hashes to its name; with manifests, every input they record is there."""
    with InputSet(path) as inputs:
        verified = inputs.verify()
        for manifest_path in manifests:
            manifest = BuildManifest.load(manifest_path)
            missing = [r for r in manifest_inputs(manifest) if not inputs.has(r.sha256)]
            if missing:
                first = missing[0]
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise PinnedInputUnavailable(
                    f"{path}: lacks {first.kind.value} {first.name} {first.version}"
                    f" (sha256 {first.sha256[:16]}...){more} that {manifest_path} records;"
                    f" export it again with enclave-audit inputs export --manifest {manifest_path}"
                )
    return verified
