"""The pinned external inputs of a spec or a manifest, as :class:`PinnedInput` references."""

from __future__ import annotations

from collections.abc import Sequence

from builder.inputs.apt import AptSource, parse_source_line
from builder.inputs.inputset import InputSet
from builder.inputs.resolver import ModelSource, Resolver, mirror_map_from_env
from builder.spec import (
    EnclaveSpec,
    KernelSpec,
    LoadedSpec,
    LockedPackage,
    ModelSpec,
    WheelSpec,
    parse_lock,
    parse_spec,
)
from enclave_audit.model.manifest import BuildManifest, InputKind, PinnedInput
from enclave_audit.progress import NullProgress, ProgressSink

DEBIAN_ORIGIN = "deb.debian.org"


def lock_input(pkg: LockedPackage) -> PinnedInput:
    return PinnedInput(
        name=pkg.name,
        kind=InputKind.DEBIAN_PACKAGE,
        version=pkg.version,
        arch=pkg.arch,
        origin=f"apt://{DEBIAN_ORIGIN}/{pkg.name}={pkg.version}",
        sha256=pkg.sha256,
    )


def kernel_input(kernel: KernelSpec) -> PinnedInput:
    return PinnedInput(
        name=kernel.package,
        kind=InputKind.KERNEL_SOURCE,
        version=kernel.version,
        arch="all",
        origin=f"apt://{DEBIAN_ORIGIN}/{kernel.package}={kernel.version}",
        sha256=kernel.sha256,
    )


def wheel_input(wheel: WheelSpec) -> PinnedInput:
    return PinnedInput(
        name=wheel.name,
        kind=InputKind.WHEEL,
        version=wheel.version,
        filename=wheel.filename,
        origin=wheel.url
        or f"https://pypi.org/project/{wheel.name}/{wheel.version}/#{wheel.filename}",
        sha256=wheel.sha256,
    )


def model_input(model: ModelSpec) -> PinnedInput:
    return PinnedInput(
        name=model.name,
        kind=InputKind.MODEL,
        filename=model.member.rsplit("/", 1)[-1],
        origin=f"{wheel_input(model.wheel).origin}!/{model.member}",
        sha256=model.sha256,
    )


def spec_inputs(loaded: LoadedSpec) -> list[PinnedInput]:
    """Every external input of a spec: kernel source, locked .debs, wheels, the model."""
    spec = loaded.spec
    refs = [kernel_input(spec.kernel), *(lock_input(p) for p in loaded.lock)]
    refs += [wheel_input(w) for w in spec.wheels]
    if spec.model is not None:
        refs.append(model_input(spec.model))
    return refs


def apt_sources(mirrors: Sequence[str]) -> list[AptSource]:
    return [parse_source_line(m) for m in mirrors]


def make_resolver(
    loaded: LoadedSpec,
    *,
    input_sets: Sequence[InputSet] = (),
    mirror_map: dict[str, str] | None = None,
    progress: ProgressSink | None = None,
) -> Resolver:
    """A resolver for ``loaded``: its mirrors, its lock's snapshot time, its model's wheel.

    Mirror overrides come from ``ENCLAVE_AUDIT_DEBIAN_MIRRORS`` and then ``mirror_map``.
    """
    return spec_resolver(
        loaded.spec,
        lock_resolved_at=loaded.lock_resolved_at,
        input_sets=input_sets,
        mirror_map=mirror_map,
        progress=progress,
    )


def spec_resolver(
    spec: EnclaveSpec,
    *,
    lock_resolved_at: str,
    input_sets: Sequence[InputSet] = (),
    mirror_map: dict[str, str] | None = None,
    progress: ProgressSink | None = None,
) -> Resolver:
    models: dict[str, ModelSource] = {}
    if spec.model is not None:
        m = spec.model
        models[m.sha256] = ModelSource(wheel_input(m.wheel), m.member, m.size)
    return Resolver(
        input_sets=tuple(input_sets),
        apt_sources=apt_sources(spec.debian.mirrors),
        mirror_map={**mirror_map_from_env(), **(mirror_map or {})},
        snapshot_time=lock_resolved_at,
        models=models,
        progress=progress or NullProgress(),
    )


def manifest_resolver(
    manifest: BuildManifest,
    *,
    input_sets: Sequence[InputSet] = (),
    mirror_map: dict[str, str] | None = None,
    progress: ProgressSink | None = None,
) -> Resolver:
    """A resolver for the inputs a manifest records, from the spec and lock it carries."""
    where = f"{manifest.spec.path} (as recorded in the manifest)"
    spec = parse_spec(manifest.spec.text.encode("utf-8"), where)
    lock = parse_lock(manifest.spec.lock_text, manifest.spec.lock_path)
    return spec_resolver(
        spec,
        lock_resolved_at=manifest.spec.lock_resolved_at or lock.resolved_at,
        input_sets=input_sets,
        mirror_map=mirror_map,
        progress=progress,
    )


def manifest_inputs(manifest: BuildManifest) -> list[PinnedInput]:
    """The external inputs a manifest records (what an input set for it must hold)."""
    return [i for i in manifest.inputs if i.external]
