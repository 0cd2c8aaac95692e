"""Session fixtures for the QEMU tests: the QEMU build, the enclave kernel, probe images.

QEMU (~5-8 min on 2 cores) and the kernel (~4 min) are built once and cached by
input digest; later runs reuse them.  A missing build tool skips locally and
fails in CI (``need``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import need

from builder.eif import write_eif
from verifier.qemu.build import BUILD_PACKAGES, QemuInstall, build_qemu, find_qemu
from verifier.qemu.testimage import ProbeImage, reference_kernel, write_probe_eif

QEMU_BUILD_TOOLS = ("gcc", "ninja", "pkg-config", "flex", "bison", "strip", "apt-get")
KERNEL_TOOLS = ("make", "gcc", "bc", "flex", "bison", "xz", "dpkg-deb", "perl", "musl-gcc")


@pytest.fixture(scope="session")
def qemu_install() -> QemuInstall:
    found = find_qemu()
    if found is not None:
        return found
    missing = [t for t in QEMU_BUILD_TOOLS if shutil.which(t) is None]
    need(not missing, f"QEMU build tools {missing} (apt-get install {' '.join(BUILD_PACKAGES)})")
    return build_qemu()


@pytest.fixture(scope="session")
def probe_kernel() -> Path:
    missing = [t for t in KERNEL_TOOLS if shutil.which(t) is None]
    need(not missing, f"kernel build tools {missing} (apt-get install musl-tools bc flex bison)")
    return reference_kernel().bzimage


@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qemu-probe")


@pytest.fixture(scope="session")
def probe(probe_kernel: Path, probe_dir: Path) -> ProbeImage:
    return write_probe_eif(probe_dir / "probe.eif", kernel=probe_kernel)


def _has_member(eif: Path, name: str) -> bool:
    from builder.eif import EifReader
    from builder.initramfs import list_members

    with EifReader.open(eif) as reader, tempfile.TemporaryDirectory() as tmp:
        for index, section in enumerate(reader.ramdisks):
            copy = Path(tmp) / f"ramdisk{index}"
            reader.copy_section(section, copy)
            if any(m.name.lstrip("/") == name for m in list_members(copy)):
                return True
    return False


@pytest.fixture(scope="session")
def reference_build_eif() -> Path:
    """The builder's reference image (built once per cache, shared with tests/builder)."""
    tools = ("mmdebstrap", "musl-gcc", "make", "gcc", "bc", "flex", "bison", "dpkg-deb")
    need(all(shutil.which(t) for t in tools), "image build tools (scripts/apt-packages.txt)")
    from builder.reference import reference_image

    return reference_image().eif


@pytest.fixture(scope="session")
def reference_eif(reference_build_eif: Path) -> Path:
    """The reference image; it must carry /nsm-attest for the attestation check."""
    eif = reference_build_eif
    need(
        _has_member(eif, "nsm-attest"),
        f"{eif} has no /nsm-attest in its ramdisks (reference_enclave/nsm-attest, run by init"
        " when the kernel command line has enclave_audit.attest=1)",
    )
    return eif


@pytest.fixture(scope="session")
def unbootable_eif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A well-formed EIF (its 'kernel' is not one): enough for every check before booting."""
    work = tmp_path_factory.mktemp("eif")
    (work / "kernel").write_bytes(b"not a kernel")
    (work / "ramdisk").write_bytes(b"070701" + bytes(506))
    write_eif(
        work / "x.eif",
        kernel=work / "kernel",
        cmdline="console=ttyS0",
        ramdisks=[work / "ramdisk"],
        name="x",
        version="1",
        build_time="2025-01-01T00:00:00+00:00",
    )
    return work / "x.eif"
