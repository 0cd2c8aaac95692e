"""The unsigned SLSA Provenance v1 statement of a build, derived from its manifest.

Deterministic: no invocation id and no start/finish times (those would read the
wall clock and make ``provenance.json`` differ between identical builds).  The
``pcrs`` byproduct carries the measurements as the signing engineer's model
defines it; every pinned input is a resolved dependency.
"""

from __future__ import annotations

from builder.spec import SPEC_SCHEMA
from enclave_audit.model.attestation import (
    ResourceDescriptor,
    Statement,
    provenance_statement,
)
from enclave_audit.model.manifest import MANIFEST_MEDIA_TYPE, BuildManifest, BuildOutput

BUILDER_ID = "https://github.com/enclave-audit/enclave-audit/builder"


def _descriptor(out: BuildOutput, **extra: object) -> ResourceDescriptor:
    return ResourceDescriptor.model_validate(
        {"name": out.name, "digest": {"sha256": out.sha256, "sha384": out.sha384}, **extra}
    )


def provenance_for(manifest: BuildManifest, *, manifest_sha256: str) -> Statement:
    eif = manifest.output("enclave.eif")
    if eif is None:
        raise ValueError("manifest lists no enclave.eif output")
    deps: list[ResourceDescriptor] = []
    if manifest.source.git_commit:
        deps.append(
            ResourceDescriptor(
                name="source",
                digest={"gitCommit": manifest.source.git_commit},
                annotations={"dirty": manifest.source.git_dirty},
            )
        )
    deps.append(
        ResourceDescriptor(
            name="source-tree",
            digest={"sha256": manifest.source.tree_sha256},
            annotations={"packages": list(manifest.source.packages)},
        )
    )
    for item in manifest.inputs:
        deps.append(
            ResourceDescriptor(
                name=item.name,
                uri=item.origin or None,
                digest={"sha256": item.sha256},
                annotations={"kind": item.kind.value, "version": item.version},
            )
        )
    byproducts = [_descriptor(r, mediaType="application/x-cpio") for r in manifest.ramdisks]
    byproducts.append(
        ResourceDescriptor(
            name="build-manifest.json",
            digest={"sha256": manifest_sha256},
            mediaType=MANIFEST_MEDIA_TYPE,
        )
    )
    return provenance_statement(
        subjects=[_descriptor(eif)],
        builder_id=f"{BUILDER_ID}/{manifest.builder.backend}@v1",
        builder_version={"enclave-audit": manifest.builder.version, **manifest.toolchain},
        external_parameters={
            "spec": {
                "path": manifest.spec.path,
                "sha256": manifest.spec.sha256,
                "schema": SPEC_SCHEMA,
            },
            "backend": manifest.builder.backend,
            "sourceDateEpoch": manifest.source_date_epoch,
            "kernelCmdline": manifest.kernel.cmdline,
        },
        internal_parameters={"kernelSourceDateEpoch": manifest.kernel.source_date_epoch},
        resolved_dependencies=deps,
        pcrs=manifest.pcrs,
        byproducts=byproducts,
    )
