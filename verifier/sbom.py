"""Software bill of materials of an image: Debian packages and Python distributions.

Sources: the dpkg database in the rootfs (``var/lib/dpkg/status``, installed paragraphs
only) and ``*.dist-info/METADATA`` (and ``*.egg-info/PKG-INFO``) of Python distributions.
Output: SPDX 2.3 JSON or CycloneDX 1.5 JSON, deterministic for a given image (the
namespace, serial number and time derive from the image digest and its build time).
"""

from __future__ import annotations

import re
import uuid
from email.parser import HeaderParser
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from enclave_audit import __version__

DPKG_STATUS = re.compile(r"(^|/)var/lib/dpkg/status$")
OS_RELEASE = re.compile(r"(^|/)(etc|usr/lib)/os-release$")
PY_METADATA = re.compile(r"(^|/)[^/]+\.(dist-info/METADATA|egg-info/PKG-INFO)$")
#: fixed namespace for deterministic identifiers
_NS = uuid.UUID("6c1f3a52-8f0e-4d0a-9f0b-3d2c5e7a9b10")


class Ecosystem(StrEnum):
    DEBIAN = "deb"
    PYPI = "pypi"


class Package(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ecosystem: Ecosystem
    name: str
    version: str
    architecture: str | None = None
    source: str | None = None
    license: str | None = None
    found_at: str
    #: the Debian release the package belongs to (os-release VERSION_CODENAME), for purls
    distro: str | None = None

    @property
    def purl(self) -> str:
        """The package URL (purl spec): for Debian ``pkg:deb/debian/NAME@VERSION?arch=&distro=``.

        Qualifiers are sorted and percent-encoded; an epoch's ``:`` is ``%3A``, as
        packageurl-python writes and reads it.
        """
        if self.ecosystem is Ecosystem.DEBIAN:
            qualifiers = [
                f"{key}={quote(value, safe='')}"
                for key, value in (("arch", self.architecture), ("distro", self.distro))
                if value
            ]
            qual = "?" + "&".join(qualifiers) if qualifiers else ""
            name, version = quote(self.name, safe=":"), quote(self.version, safe=":")
            return f"pkg:deb/debian/{name}@{version}{qual}"
        name = re.sub(r"[-_.]+", "-", self.name).lower()
        return f"pkg:pypi/{quote(name)}@{quote(self.version)}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.ecosystem.value, self.name.lower(), self.version)


def parse_dpkg_status(text: str, path: str) -> list[Package]:
    """Installed packages from a dpkg status file (deb822 paragraphs)."""
    out: list[Package] = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        current = None
        for line in para.splitlines():
            if line.startswith((" ", "\t")):
                continue  # continuation lines (descriptions, conffiles)
            key, sep, value = line.partition(":")
            if sep:
                current = key.strip()
                fields[current] = value.strip()
        if not fields.get("Package") or not fields.get("Version"):
            continue
        status = fields.get("Status", "install ok installed").split()
        if status[-1:] != ["installed"]:
            continue
        out.append(
            Package(
                ecosystem=Ecosystem.DEBIAN,
                name=fields["Package"],
                version=fields["Version"],
                architecture=fields.get("Architecture"),
                source=fields.get("Source", "").split(" ")[0] or None,
                found_at=path,
            )
        )
    return out


def parse_os_release(text: str) -> str | None:
    """The distro qualifier for Debian purls: VERSION_CODENAME, else debian-VERSION_ID."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip("\"'")
    codename = fields.get("VERSION_CODENAME")
    if codename and re.fullmatch(r"[a-z0-9][a-z0-9.+-]{0,63}", codename):
        return codename
    version_id = fields.get("VERSION_ID")
    distro_id = fields.get("ID", "debian")
    if version_id and re.fullmatch(r"[0-9][0-9.]{0,15}", version_id):
        return f"{distro_id}-{version_id}" if re.fullmatch(r"[a-z0-9]+", distro_id) else None
    return None


def parse_python_metadata(text: str, path: str) -> Package | None:
    headers = HeaderParser().parsestr(text, headersonly=True)
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        return None
    license_ = headers.get("License-Expression") or headers.get("License")
    if license_ and ("\n" in license_ or len(license_) > 100):
        license_ = None
    return Package(
        ecosystem=Ecosystem.PYPI,
        name=str(name),
        version=str(version),
        license=str(license_) if license_ else None,
        found_at=path,
    )


class SbomFormat(StrEnum):
    SPDX = "spdx"
    CYCLONEDX = "cyclonedx"


def _sorted(packages: list[Package]) -> list[Package]:
    unique = {p.key: p for p in packages}
    return [unique[k] for k in sorted(unique)]


def _spdx_id(p: Package) -> str:
    raw = f"{p.ecosystem.value}-{p.name}-{p.version}"
    return "SPDXRef-Package-" + re.sub(r"[^A-Za-z0-9.-]", "-", raw)


def spdx_time(created: str) -> str:
    """SPDX's ``creationInfo.created`` form, ``YYYY-MM-DDThh:mm:ssZ`` (UTC, no fraction)."""
    from datetime import UTC, datetime

    from enclave_audit.errors import InvalidInput

    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"the image's BuildTime {created[:80]!r} is not an ISO 8601 time (SBOM creation time)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def spdx_document(
    packages: list[Package], *, image_name: str, image_sha256: str, created: str
) -> dict[str, Any]:
    """An SPDX 2.3 JSON document describing the image and its packages."""
    pkgs = _sorted(packages)
    image_id = "SPDXRef-Image"
    doc: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{image_name} SBOM",
        "documentNamespace": f"https://enclave-audit.invalid/spdx/{image_sha256}",
        "creationInfo": {
            "created": spdx_time(created),
            "creators": [f"Tool: enclave-audit-{__version__}"],
        },
        "packages": [
            {
                "SPDXID": image_id,
                "name": image_name,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "checksums": [{"algorithm": "SHA256", "checksumValue": image_sha256}],
                "primaryPackagePurpose": "CONTAINER",
            }
        ],
        "relationships": [
            {
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": image_id,
            },
        ],
    }
    for p in pkgs:
        entry: dict[str, Any] = {
            "SPDXID": _spdx_id(p),
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": p.purl,
                }
            ],
            "comment": f"found at {p.found_at}",
        }
        if p.source:
            entry["sourceInfo"] = f"built from Debian source package {p.source}"
        doc["packages"].append(entry)
        doc["relationships"].append(
            {
                "spdxElementId": image_id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": _spdx_id(p),
            }
        )
    return doc


def cyclonedx_document(
    packages: list[Package], *, image_name: str, image_sha256: str, created: str
) -> dict[str, Any]:
    """A CycloneDX 1.5 JSON BOM describing the image and its packages."""
    pkgs = _sorted(packages)
    components = []
    for p in pkgs:
        comp: dict[str, Any] = {
            "type": "library",
            "bom-ref": p.purl,
            "name": p.name,
            "version": p.version,
            "purl": p.purl,
            "properties": [{"name": "enclave-audit:found-at", "value": p.found_at}],
        }
        if p.license:
            comp["licenses"] = (
                [{"expression": p.license}]
                if " " in p.license
                else [{"license": {"name": p.license}}]
            )
        components.append(comp)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(_NS, image_sha256)}",
        "version": 1,
        "metadata": {
            "timestamp": spdx_time(created),
            "tools": {
                "components": [
                    {"type": "application", "name": "enclave-audit", "version": __version__}
                ]
            },
            "component": {
                "type": "container",
                "bom-ref": f"image:{image_sha256}",
                "name": image_name,
                "hashes": [{"alg": "SHA-256", "content": image_sha256}],
            },
        },
        "components": components,
        "dependencies": [
            {"ref": f"image:{image_sha256}", "dependsOn": [c["bom-ref"] for c in components]}
        ],
    }
