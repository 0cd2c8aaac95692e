"""The audit policy (TOML): which severity fails the audit, rule overrides, exemptions.

::

    fail_on = "high"                 # findings at or above this severity fail the audit

    [severity]                       # rule -> severity, or "off" to drop the rule
    "shell-present" = "medium"

    [allow]                          # rule -> path globs exempt from the rule
    "setuid-risky" = ["ramdisk[1]/rootfs/opt/tool/helper"]

    [[waiver]]                       # a finding accepted on purpose, with the reason
    rule = "elf-no-pie"
    path = "ramdisk[1]/rootfs/usr/bin/python3.11"
    reason = "Debian links its interpreter without PIE; ..."
    expires = 2027-06-30             # optional: after this day the waiver no longer applies

A policy file is merged over :data:`DEFAULT_POLICY`: keys it sets win, ``allow`` lists
are added to.  A waived finding keeps its severity and is reported, with the waiver's
reason, among the report's ``waived`` findings instead of its ``findings``; it no
longer fails the audit.  A waiver needs a reason, names one rule and a path glob, and
one that matched nothing is reported as unused (stale waivers are a smell, not an
error).  An ``allow`` entry, by contrast, drops findings silently (counted only).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
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
_RULE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
#: a reason is a sentence someone wrote, not a placeholder
MIN_REASON = 20


class Waiver(BaseModel):
    """One accepted finding (or family of findings, by path glob), with why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: str
    path: str
    reason: str
    expires: dt.date | None = None

    def matches(self, finding: Finding, today: dt.date) -> bool:
        if self.expires is not None and today > self.expires:
            return False
        return finding.rule == self.rule and path_matches(finding.path, self.path)


class WaivedFinding(BaseModel):
    """A finding a waiver accepted: reported with the waiver's reason, never failing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    finding: Finding
    reason: str
    expires: dt.date | None = None


class Applied(BaseModel):
    """What a policy made of the raw findings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    findings: list[Finding]
    waived: list[WaivedFinding]
    suppressed: int
    #: waivers that matched no finding (or expired): candidates for removal
    unused_waivers: list[Waiver]


class AuditPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    fail_on: Severity
    severity: dict[str, Severity | None]  # None: rule switched off
    allow: dict[str, tuple[str, ...]]
    waivers: tuple[Waiver, ...] = ()
    source: str = "default"

    def apply(self, findings: list[Finding], *, today: dt.date | None = None) -> Applied:
        """Policy severities, then 'off'/'allow' (dropped, counted), then waivers (reported)."""
        day = today or dt.datetime.now(dt.UTC).date()
        kept: list[Finding] = []
        waived: list[WaivedFinding] = []
        used: set[int] = set()
        suppressed = 0
        for f in findings:
            if f.rule in self.severity and self.severity[f.rule] is None:
                suppressed += 1
                continue
            if any(path_matches(f.path, pat) for pat in self.allow.get(f.rule, ())):
                suppressed += 1
                continue
            severity = self.severity.get(f.rule) or f.severity
            f = f.model_copy(update={"severity": severity}) if severity != f.severity else f
            waiver = next((i for i, w in enumerate(self.waivers) if w.matches(f, day)), None)
            if waiver is not None:
                used.add(waiver)
                w = self.waivers[waiver]
                waived.append(WaivedFinding(finding=f, reason=w.reason, expires=w.expires))
                continue
            kept.append(f)
        kept.sort(key=lambda f: (-f.severity.rank, f.rule, f.path))
        waived.sort(key=lambda w: (-w.finding.severity.rank, w.finding.rule, w.finding.path))
        unused = [w for i, w in enumerate(self.waivers) if i not in used]
        return Applied(findings=kept, waived=waived, suppressed=suppressed, unused_waivers=unused)

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


def _waivers(value: object, source: str) -> tuple[Waiver, ...]:
    if not isinstance(value, list):
        raise InvalidInput(f"{source}: waiver must be an array of tables ([[waiver]])")
    out: list[Waiver] = []
    for number, entry in enumerate(value):
        where = f"{source}: waiver {number + 1}"
        if not isinstance(entry, dict):
            raise InvalidInput(f"{where}: not a table")
        unknown = set(entry) - {"rule", "path", "reason", "expires"}
        if unknown:
            raise InvalidInput(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        rule, path, reason = entry.get("rule"), entry.get("path"), entry.get("reason")
        if not isinstance(rule, str) or not _RULE.match(rule):
            raise InvalidInput(f"{where}: rule must be a rule name like 'elf-no-pie'")
        if not isinstance(path, str) or not path:
            raise InvalidInput(f"{where}: path must be a non-empty path glob")
        if not isinstance(reason, str) or len(" ".join(reason.split())) < MIN_REASON:
            raise InvalidInput(
                f"{where}: a waiver needs a written reason (at least {MIN_REASON} characters)"
            )
        expires = entry.get("expires")
        if expires is not None and (
            not isinstance(expires, dt.date) or isinstance(expires, dt.datetime)
        ):
            raise InvalidInput(f"{where}: expires must be a TOML date (2027-06-30)")
        out.append(Waiver(rule=rule, path=path, reason=" ".join(reason.split()), expires=expires))
    return tuple(out)


def _parse(
    data: dict[str, Any], source: str
) -> tuple[Severity | None, dict[str, Severity | None], dict[str, tuple[str, ...]]]:
    unknown = set(data) - {"fail_on", "severity", "allow", "waiver"}
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
    waivers: tuple[Waiver, ...] = ()
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
        waivers = _waivers(data.get("waiver", []), str(path))
        source = str(path)
    return AuditPolicy(
        fail_on=fail_on, severity=severity, allow=allow, waivers=waivers, source=source
    )
