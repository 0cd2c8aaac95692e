"""Security updates the image lacks: packages for which its security suite serves a newer version.

The suites are the image's own: the ``-security`` lines of its ``/etc/apt/sources.list``
(or ``--security-suite``).  Each index is read directly (``InRelease`` signature checked
against the Debian archive keyring when it is installed) and every installed Debian
package is compared, by Debian version order, with the newest version that suite lists
for its name and architecture.  The finding carries both versions; the fix is
``enclave-audit lock update`` and a rebuild.

``--security-updates`` chooses what happens when the index cannot be read: ``auto`` (the
default) records the check as skipped with the reason, ``require`` makes it not-run (the
verdict is then INCONCLUSIVE), ``off`` does not look.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path

from debian.debian_support import Version

from builder.inputs.apt import (
    AptSource,
    SuiteIndex,
    archive_keyring,
    load_suite,
    parse_source_line,
)
from builder.inputs.fetch import FetchFailed
from enclave_audit.errors import SpecInvalid, TrustError
from enclave_audit.model.findings import Check, CheckOutcome, Finding, Severity
from verifier.sbom import Ecosystem, Package

RULE = "debian-security-update"
CHECK = "security-updates"


class UpdatesMode(StrEnum):
    AUTO = "auto"
    REQUIRE = "require"
    OFF = "off"


def default_mode() -> UpdatesMode:
    """``ENCLAVE_AUDIT_SECURITY_UPDATES`` (auto, require, off); auto when unset."""
    raw = os.environ.get("ENCLAVE_AUDIT_SECURITY_UPDATES", "auto").strip().lower()
    try:
        return UpdatesMode(raw)
    except ValueError:
        return UpdatesMode.AUTO


def security_sources(sources_list: str) -> list[AptSource]:
    """The ``-security`` suites among the one-line entries of a sources.list."""
    out: list[AptSource] = []
    for line in sources_list.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        try:
            src = parse_source_line(line)
        except SpecInvalid:
            continue
        if src.suite.endswith("-security"):
            out.append(src)
    return out


_INDEX_CACHE: dict[tuple[str, str, str], SuiteIndex] = {}


def _index(src: AptSource, base: str) -> SuiteIndex:
    key = (base, src.suite, " ".join(src.components))
    if key not in _INDEX_CACHE:
        keyring: Path | None = archive_keyring()
        if keyring is not None and not keyring.is_file():
            keyring = None  # unsigned read: a forged index can only add or hide findings
        _INDEX_CACHE[key] = load_suite(src, base=base, keyring=keyring)
    return _INDEX_CACHE[key]


def security_update_check(
    packages: Iterable[Package],
    sources: Sequence[AptSource],
    *,
    mode: UpdatesMode,
    mirror_map: dict[str, str] | None = None,
) -> tuple[Check, list[Finding]]:
    """One finding per installed Debian package that a security suite has a newer version of."""
    if mode is UpdatesMode.OFF:
        return Check(name=CHECK, outcome=CheckOutcome.SKIPPED, detail="not asked for"), []
    if not sources:
        return (
            Check(
                name=CHECK,
                outcome=CheckOutcome.SKIPPED,
                detail="the image's sources.list names no -security suite",
            ),
            [],
        )
    mirror_map = mirror_map or {}
    indices: list[SuiteIndex] = []
    for src in sources:
        base = mirror_map.get(src.uri, src.uri)
        try:
            indices.append(_index(src, base))
        except (FetchFailed, TrustError) as exc:
            reason = exc.reason if isinstance(exc, FetchFailed) else exc.message
            detail = f"cannot read {base} {src.suite}: {reason}"
            if mode is UpdatesMode.REQUIRE:
                return Check(name=CHECK, outcome=CheckOutcome.NOT_RUN, detail=detail), []
            return (
                Check(
                    name=CHECK,
                    outcome=CheckOutcome.SKIPPED,
                    detail=f"{detail} (--security-updates require makes this fail the audit)",
                ),
                [],
            )
    findings: list[Finding] = []
    debs = [p for p in packages if p.ecosystem is Ecosystem.DEBIAN]
    for pkg in debs:
        try:
            installed = Version(pkg.version)
        except ValueError:
            continue
        for index in indices:
            newest = index.newest(pkg.name)
            if newest is None:
                continue
            if pkg.architecture and newest.arch not in (pkg.architecture, "all"):
                continue
            if Version(newest.version) > installed:
                findings.append(
                    Finding(
                        rule=RULE,
                        severity=Severity.LOW,
                        path=pkg.found_at,
                        message=(
                            f"{pkg.name} {pkg.version} is installed; {index.source.suite} now"
                            f" serves {newest.version}"
                        ),
                        evidence=f"{index.base}/{newest.filename} sha256 {newest.sha256}",
                    )
                )
                break
    suites = ", ".join(f"{i.source.suite}" for i in indices)
    return (
        Check(
            name=CHECK,
            outcome=CheckOutcome.PASS,
            detail=f"{len(findings)} of {len(debs)} Debian package(s) have a newer version in"
            f" {suites} (fix: enclave-audit lock update, then rebuild)",
        ),
        findings,
    )
