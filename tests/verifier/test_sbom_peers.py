"""SBOMs that the peers accept: spdx-tools, cyclonedx-python-lib and packageurl-python.

The SBOMs of a Debian-like image (this host's dpkg database, os-release, a Python
distribution) go through the CLI as a user writes them (``audit --sbom``) and are then
read by the independent tools: ``pyspdxtools -i`` (which refuses a ``created`` time that
is not ``YYYY-MM-DDThh:mm:ssZ``), CycloneDX 1.5's strict JSON validator, and
packageurl-python, which must parse every purl back to the same package (epochs,
``+`` and ``~`` in versions, the ``arch`` and ``distro`` qualifiers).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need, run_cli

sys.path.append(str(Path(__file__).resolve().parent))

from test_binaries import _debian_like, _eif
from test_binaries import build as build  # the fixture

from builder.initramfs import file_bytes
from verifier.sbom import Ecosystem, Package, parse_os_release

OS_RELEASE = (
    b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\n'
    b"VERSION_CODENAME=bookworm\nID=debian\n"
)


@pytest.fixture(scope="module")
def sboms(build: object, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sbom-peers")
    entries = [
        *_debian_like(build),
        file_bytes("usr/lib/os-release", OS_RELEASE),
    ]
    image = _eif(root, "peers", entries)
    spdx, cdx = root / "image.spdx.json", root / "image.cdx.json"
    for out in (spdx, cdx):
        result = run_cli(["audit", str(image), "--sbom", str(out), "--quiet"])
        assert result.exit_code in (0, 1), result.stderr
        assert out.exists()
    return spdx, cdx


def test_spdx_passes_pyspdxtools(sboms: tuple[Path, Path]) -> None:
    spdx, _ = sboms
    tool = Path(sys.executable).with_name("pyspdxtools")
    need(tool.exists() or shutil.which("pyspdxtools") is not None, "spdx-tools (pip, dev extra)")
    proc = subprocess.run(
        [str(tool), "-i", str(spdx)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    created = json.loads(spdx.read_text())["creationInfo"]["created"]
    assert created == "2026-11-23T00:00:00Z"


def test_spdx_tools_refuse_the_old_time_format(sboms: tuple[Path, Path], tmp_path: Path) -> None:
    """The validator does check the field: the old ``+00:00`` form is refused."""
    spdx, _ = sboms
    doc = json.loads(spdx.read_text())
    doc["creationInfo"]["created"] = "2026-11-23T00:00:00+00:00"
    old = tmp_path / "old.spdx.json"
    old.write_text(json.dumps(doc))
    tool = Path(sys.executable).with_name("pyspdxtools")
    proc = subprocess.run(
        [str(tool), "-i", str(old)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode != 0 or "created" in (proc.stdout + proc.stderr)


def test_cyclonedx_passes_the_strict_validator(sboms: tuple[Path, Path]) -> None:
    from cyclonedx.schema import OutputFormat, SchemaVersion
    from cyclonedx.validation import make_schemabased_validator

    _, cdx = sboms
    validator = make_schemabased_validator(OutputFormat.JSON, SchemaVersion.V1_5)
    errors = validator.validate_str(cdx.read_text())
    assert errors is None, errors


def test_purls_round_trip_through_packageurl(sboms: tuple[Path, Path]) -> None:
    from packageurl import PackageURL

    spdx, cdx = sboms
    spdx_purls = [
        ref["referenceLocator"]
        for p in json.loads(spdx.read_text())["packages"]
        for ref in p.get("externalRefs", [])
        if ref["referenceType"] == "purl"
    ]
    cdx_purls = [c["purl"] for c in json.loads(cdx.read_text())["components"]]
    assert sorted(spdx_purls) == sorted(cdx_purls) and spdx_purls
    debs = [p for p in spdx_purls if p.startswith("pkg:deb/")]
    assert debs and all("distro=bookworm" in p for p in debs)
    assert any(":" in PackageURL.from_string(p).version for p in debs)  # some epoch on the host
    for text in spdx_purls:
        parsed = PackageURL.from_string(text)
        assert parsed.to_string() == text, text


@pytest.mark.parametrize(
    "version",
    ["1:2.36-9+deb12u4", "2:8.2.2434-3+deb11u1~bpo11+1", "0.9.7-1", "1:1.2.13.dfsg-1~exp1"],
)
def test_epoch_and_distro_encoding(version: str) -> None:
    from packageurl import PackageURL

    pkg = Package(
        ecosystem=Ecosystem.DEBIAN,
        name="libc6",
        version=version,
        architecture="amd64",
        distro="bookworm",
        found_at="var/lib/dpkg/status",
    )
    parsed = PackageURL.from_string(pkg.purl)
    assert (parsed.type, parsed.namespace, parsed.name, parsed.version) == (
        "deb",
        "debian",
        "libc6",
        version,
    )
    assert parsed.qualifiers == {"arch": "amd64", "distro": "bookworm"}
    assert parsed.to_string() == pkg.purl


def test_os_release_gives_the_codename() -> None:
    assert parse_os_release(OS_RELEASE.decode()) == "bookworm"
    assert parse_os_release('ID=debian\nVERSION_ID="13"\n') == "debian-13"
    assert parse_os_release("VERSION_CODENAME=$(rm -rf /)\n") is None
