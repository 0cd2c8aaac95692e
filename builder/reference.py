"""THE reference image, built once and shared (tests of every package use this).

``reference_image()`` returns the :class:`~builder.pipeline.BuildResult` of the
project's ``reference_enclave/enclave.toml``, from
``cache_dir("reference-image", <digest of all inputs>)`` when an earlier build
of the same inputs exists (the EIF is re-hashed against its manifest), else
built now.  A change to any input (spec, lock, kernel config, init source,
application sources, SOURCE_DATE_EPOCH) gives a new digest and a new build.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from builder.app import tree_digest, tree_files
from builder.pipeline import BuildOptions, BuildResult, build_loaded, watched_paths
from builder.source import git_info, source_date_epoch
from builder.spec import LoadedSpec, load_spec
from builder.toolchain import builder_code_digest
from enclave_audit.errors import DigestMismatch
from enclave_audit.fsutil import cache_dir, hash_file, prune_cache, touch_entry
from enclave_audit.model import manifest as manifest_module
from enclave_audit.model.manifest import BuildManifest
from enclave_audit.progress import ProgressSink

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_SPEC = PROJECT_ROOT / "reference_enclave" / "enclave.toml"
#: built images kept in the cache (older ones are removed after a new build)
KEEP_IMAGES = 4


def image_input_digest(loaded: LoadedSpec, epoch: int, backend: str) -> str:
    spec = loaded.spec
    doc = {
        "spec": loaded.sha256,
        "lock": [p.model_dump() for p in loaded.lock],
        "kernel_config": hash_file(loaded.resolve(spec.kernel.config))["sha256"].hex(),
        "init": hash_file(loaded.resolve(spec.init.source))["sha256"].hex(),
        "sources": tree_digest(tree_files(loaded, backend)),
        "epoch": epoch,
        "backend": backend,
        "builder": builder_code_digest(),
        # the manifest is an output of the cached build: a new manifest format is a new build
        "manifest_model": hashlib.sha256(
            Path(manifest_module.__file__ or "").read_bytes()
        ).hexdigest(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def reference_image(
    spec_path: Path = REFERENCE_SPEC,
    *,
    backend: str = "native",
    source_date_epoch_value: int | None = None,
    progress: ProgressSink | None = None,
) -> BuildResult:
    """The built reference image (``result.eif``, ``result.out_dir``, ``result.manifest``)."""
    loaded = load_spec(spec_path)
    git = git_info(loaded.source_root, watched_paths(loaded))
    epoch = source_date_epoch(source_date_epoch_value, git, loaded.source_root)
    digest = image_input_digest(loaded, epoch, backend)
    out = cache_dir("reference-image") / digest
    manifest_path = out / "build-manifest.json"
    if manifest_path.exists():
        manifest = BuildManifest.load(manifest_path)
        eif = manifest.output("enclave.eif")
        got = hash_file(out / "enclave.eif")["sha256"].hex()
        if eif is None or got != eif.sha256:
            raise DigestMismatch(
                f"cached reference image {out / 'enclave.eif'} does not match its manifest"
                " (delete the directory to rebuild)"
            )
        touch_entry(out)
        return BuildResult(
            out_dir=out,
            eif=out / "enclave.eif",
            manifest=manifest,
            pcrs=manifest.pcrs,
            kernel_reused=True,
            rootfs_reused=True,
        )
    options = BuildOptions(backend=backend, source_date_epoch=epoch)
    result = build_loaded(loaded, out, options=options, progress=progress)
    prune_cache(out.parent, keep=KEEP_IMAGES, marker="build-manifest.json")
    return result
