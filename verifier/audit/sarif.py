"""SARIF 2.1.0 for ``enclave-audit audit --format sarif`` (GitHub code scanning and peers).

One run, with the tool's rules (one per finding rule), one result per finding, located
in the image by an artifact location relative to ``IMAGE_ROOT`` (the EIF's file
system) and a logical location naming the image.  Levels follow the severity:
critical and high are ``error``, medium ``warning``, low and info ``note``; a finding
at or above the policy's ``fail_on`` carries ``properties.fails_audit``.  Checks that
could not run are tool execution notifications, so an INCONCLUSIVE audit is visible.
"""

from __future__ import annotations

import hashlib
from typing import Any

from enclave_audit import __version__
from enclave_audit.model.findings import CheckOutcome, Finding, Severity
from verifier.audit.report import ImageAuditReport

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
IMAGE_ROOT = "IMAGEROOT"
INFORMATION_URI = "https://github.com/enclave-audit/enclave-audit"

_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
# GitHub reads properties.security-severity (a CVSS-like score) for security alerts
_SCORE = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}


def _uri(path: str) -> str:
    """A relative URI reference for a path inside the image (percent-encoded).

    A name that is not UTF-8 (undecodable bytes kept as ``surrogateescape``) is
    percent-encoded byte for byte, as a URI carries any bytes.
    """
    from urllib.parse import quote

    return quote(path.lstrip("/"), safe="/-._~", errors="surrogateescape") or "."


def _fingerprint(finding: Finding) -> str:
    key = f"{finding.rule}\0{finding.path}\0{finding.message}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(key).hexdigest()


def sarif_log(report: ImageAuditReport) -> dict[str, Any]:
    """The SARIF 2.1.0 log of one image audit."""
    rules: dict[str, dict[str, Any]] = {}
    worst: dict[str, Severity] = {}
    for f in report.findings:
        if f.rule not in worst or f.severity.rank > worst[f.rule].rank:
            worst[f.rule] = f.severity
    for rule, severity in sorted(worst.items()):
        rules[rule] = {
            "id": rule,
            "name": "".join(part.capitalize() for part in rule.split("-")),
            "shortDescription": {"text": f"enclave-audit rule {rule}"},
            "defaultConfiguration": {"level": _LEVEL[severity]},
            "properties": {"tags": ["security", "enclave"], "security-severity": _SCORE[severity]},
        }
    index = {rule: i for i, rule in enumerate(rules)}
    results = []
    for f in report.findings:
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": _LEVEL[f.severity],
            "message": {"text": f.message + (f" ({f.evidence})" if f.evidence else "")},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": _uri(f.path), "uriBaseId": IMAGE_ROOT}
                    },
                    "logicalLocations": [{"name": report.image, "kind": "module"}],
                }
            ],
            "partialFingerprints": {"enclaveAuditFinding/v1": _fingerprint(f)},
            "properties": {
                "severity": f.severity.value,
                "fails_audit": f.severity.rank >= report.fail_on.rank,
            },
        }
        results.append(result)
    notifications = [
        {"level": "warning", "message": {"text": f"{c.name}: {c.detail}"}}
        for c in report.checks
        if c.outcome is CheckOutcome.NOT_RUN
    ]
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "enclave-audit",
                "semanticVersion": __version__,
                "informationUri": INFORMATION_URI,
                "rules": list(rules.values()),
            }
        },
        "originalUriBaseIds": {
            IMAGE_ROOT: {"description": {"text": f"the file system inside {report.image}"}}
        },
        "artifacts": [
            {
                "location": {"uri": _uri(report.image)},
                "hashes": {"sha-256": report.image_sha256},
                "roles": ["analysisTarget"],
            }
        ],
        "invocations": [
            {
                "executionSuccessful": not notifications,
                "toolExecutionNotifications": notifications,
            }
        ],
        "results": results,
        "properties": {
            "verdict": report.verdict.value,
            "policy": report.policy,
            "fail_on": report.fail_on.value,
        },
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}
