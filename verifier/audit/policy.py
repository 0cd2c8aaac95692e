"""The audit policy (TOML): which severity fails the audit, rule overrides, exemptions.

::

    fail_on = "high"                 # findings at or above this severity fail the audit

    [severity]                       # rule -> severity, or "off" to drop the rule
    "shell-present" = "medium"

    [allow]                          # rule -> path globs exempt from the rule
    "setuid-risky" = ["ramdisk[1]/rootfs/opt/tool/helper"]

A policy file is merged over :data:`DEFAULT_POLICY`: keys it sets win, ``allow`` lists
are added to.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from enclave_audit.errors import InvalidInput
from enclave_audit.fsutil import read_bytes
from enclave_audit.model.findings import Finding, Severity

#: the defaults: a Debian rootfs with python3 passes; real problems fail
DEFAULT_POLICY = """
fail_on = "high"

[severity]
"shell-present" = "medium"
"debug-tool" = "high"
"network-tool" = "medium"
"setuid" = "medium"
"setuid-risky" = "high"
"setgid" = "medium"
"world-writable" = "medium"
"private-key" = "critical"
"credential-token" = "critical"
"aws-access-key-id" = "medium"
"elf-exec-stack" = "high"
"elf-no-pie" = "medium"
"elf-no-relro" = "medium"
"elf-partial-relro" = "info"
"elf-no-stack-protector" = "info"
"elf-no-fortify" = "info"
"elf-not-stripped" = "low"
"elf-unparsed" = "medium"
"cmdline-debug" = "medium"
"cmdline-init-override" = "high"
"cmdline-mitigations-off" = "high"
"cmdline-kernel-debugger" = "critical"
"cmdline-console" = "info"
"kernel-version" = "info"
"initramfs-hidden-members" = "medium"
"initramfs-shadowed-member" = "high"
"initramfs-unnormalised-name" = "info"

[allow]
"""

_OFF = "off"


class AuditPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    fail_on: Severity
    severity: dict[str, Severity | None]  # None: rule switched off
    allow: dict[str, tuple[str, ...]]
    source: str = "default"

    def apply(self, findings: list[Finding]) -> tuple[list[Finding], int]:
        """(findings with policy severities, number suppressed by 'off' or 'allow')."""
        kept: list[Finding] = []
        suppressed = 0
        for f in findings:
            if f.rule in self.severity and self.severity[f.rule] is None:
                suppressed += 1
                continue
            if any(path_matches(f.path, pat) for pat in self.allow.get(f.rule, ())):
                suppressed += 1
                continue
            severity = self.severity.get(f.rule) or f.severity
            kept.append(
                f.model_copy(update={"severity": severity}) if severity != f.severity else f
            )
        kept.sort(key=lambda f: (-f.severity.rank, f.rule, f.path))
        return kept, suppressed

    def fails(self, finding: Finding) -> bool:
        return finding.severity.rank >= self.fail_on.rank


def path_matches(path: str, pattern: str) -> bool:
    """A glob match where ``ramdisk[1]`` may be written literally (brackets as characters)."""
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(
        path, pattern.replace("[", "[[]")
    )


def _severity(value: object, where: str) -> Severity | None:
    if value == _OFF:
        return None
    try:
        return Severity(str(value).lower())
    except ValueError:
        allowed = ", ".join([s.value for s in Severity] + [_OFF])
        raise InvalidInput(f"{where}: {value!r} is not one of {allowed}") from None


def _parse(
    data: dict[str, Any], source: str
) -> tuple[Severity | None, dict[str, Severity | None], dict[str, tuple[str, ...]]]:
    unknown = set(data) - {"fail_on", "severity", "allow"}
    if unknown:
        raise InvalidInput(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    fail_on = _severity(data["fail_on"], f"{source}: fail_on") if "fail_on" in data else None
    if "fail_on" in data and fail_on is None:
        raise InvalidInput(f"{source}: fail_on cannot be 'off'")
    sev_table = data.get("severity", {})
    allow_table = data.get("allow", {})
    if not isinstance(sev_table, dict) or not isinstance(allow_table, dict):
        raise InvalidInput(f"{source}: [severity] and [allow] must be tables")
    severity = {str(k): _severity(v, f"{source}: severity.{k}") for k, v in sev_table.items()}
    allow: dict[str, tuple[str, ...]] = {}
    for rule, globs in allow_table.items():
        if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
            raise InvalidInput(f"{source}: allow.{rule} must be a list of path globs")
        allow[str(rule)] = tuple(globs)
    return fail_on, severity, allow


def load_policy(path: Path | None = None) -> AuditPolicy:
    """The default policy, with the file at ``path`` merged over it."""
    fail_on, severity, allow = _parse(tomllib.loads(DEFAULT_POLICY), "default policy")
    assert fail_on is not None
    source = "default"
    if path is not None:
        raw = read_bytes(path, limit=1 << 20)
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"{path}: not valid TOML: {exc}") from None
        user_fail, user_sev, user_allow = _parse(data, str(path))
        fail_on = user_fail or fail_on
        severity.update(user_sev)
        for rule, globs in user_allow.items():
            allow[rule] = (*allow.get(rule, ()), *globs)
        source = str(path)
    return AuditPolicy(fail_on=fail_on, severity=severity, allow=allow, source=source)
