"""A small probe EIF for booting under QEMU: the enclave kernel plus ``nsm-attest`` as /init.

The probe boots in seconds under TCG: its bootstrap ramdisk holds only the
static ``nsm-attest`` helper (``reference_enclave/nsm-attest/nsm_attest.c``,
compiled like the image's init by :func:`builder.init.build_init`) as ``/init``;
its application ramdisk holds one file whose bytes the caller chooses, so a
changed application byte moves PCR2 (and PCR0) and nothing else.  The kernel
is the reference image's pinned kernel, from the builder's cache.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from builder.eif import write_eif
from builder.init import InitArtifact, build_init
from builder.initramfs import char_device, directory, file_bytes, file_path, write_ramdisk
from builder.kernel import KernelArtifact, build_kernel
from builder.spec import InitSpec, load_spec
from enclave_audit.errors import SpecInvalid
from enclave_audit.model.measurements import PcrSet
from enclave_audit.progress import ProgressSink

#: reboot=t + QEMU's -no-reboot: QEMU exits when the probe reboots after attesting.
PROBE_CMDLINE: Final = "reboot=t panic=-1 console=ttyS0 quiet pci=off nomodule"
PROBE_BUILD_TIME: Final = "2025-01-01T00:00:00+00:00"
DEFAULT_APP_PAYLOAD: Final = b"enclave-audit QEMU probe application v1\n"

_SOURCE_ROOT: Final = Path(__file__).resolve().parents[2]


def nsm_attest_source() -> Path:
    path = _SOURCE_ROOT / "reference_enclave" / "nsm-attest" / "nsm_attest.c"
    if not path.is_file():
        raise SpecInvalid(f"{path}: the nsm-attest source is missing from the source tree")
    return path


def reference_spec_path() -> Path:
    return _SOURCE_ROOT / "reference_enclave" / "enclave.toml"


def build_nsm_attest(out_dir: Path) -> InitArtifact:
    """Compile the helper (static musl, deterministic flags) into ``out_dir/init``."""
    source = nsm_attest_source()
    return build_init(InitSpec(source=source.name), source, out_dir)


def reference_kernel(progress: ProgressSink | None = None) -> KernelArtifact:
    """The reference image's pinned kernel (cached by the builder; ~4 min to build once)."""
    from builder.inputs.refs import make_resolver

    loaded = load_spec(reference_spec_path())
    return build_kernel(
        loaded.spec.kernel,
        loaded.resolve(loaded.spec.kernel.config),
        resolver=make_resolver(loaded),
        progress=progress,
    )


@dataclass(frozen=True)
class ProbeImage:
    eif: Path
    pcrs: PcrSet
    helper_sha256: str


def write_probe_eif(
    out: Path,
    *,
    kernel: Path,
    app_payload: bytes = DEFAULT_APP_PAYLOAD,
    signing: tuple[Path, Path] | None = None,
    cmdline: str = PROBE_CMDLINE,
) -> ProbeImage:
    """Write the probe EIF to ``out`` (atomically); returns its PCRs as the writer computed."""
    with tempfile.TemporaryDirectory(prefix="qemu-probe-") as tmp:
        work = Path(tmp)
        helper = build_nsm_attest(work / "helper")
        bootstrap = work / "bootstrap.cpio"
        write_ramdisk(
            bootstrap,
            [
                directory("dev"),
                char_device("dev/console", 5, 1),
                directory("proc"),
                file_path("init", helper.path, perm=0o755, mtime=0),
            ],
            epoch=0,
        )
        app = work / "app.cpio"
        write_ramdisk(app, [directory("app"), file_bytes("app/payload", app_payload)], epoch=0)
        pcrs = write_eif(
            out,
            kernel=kernel,
            cmdline=cmdline,
            ramdisks=[bootstrap, app],
            name="enclave-audit-qemu-probe",
            version="1",
            build_time=PROBE_BUILD_TIME,
            signing=signing,
        ).pcrs
        shutil.rmtree(work / "helper", ignore_errors=True)
    return ProbeImage(out, pcrs, helper.sha256)
