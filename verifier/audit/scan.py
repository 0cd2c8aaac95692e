"""One streaming pass over an EIF's ramdisks: files, binaries, secrets, packages, cmdline.

Every ramdisk member is read once.  ELF files are parsed with lief (hardening), every
regular file is searched for embedded private keys and tokens (a fast literal prefilter,
then regexes, across chunk boundaries), permission bits and names are checked, and the
dpkg database and Python dist-info files are collected for the SBOM.
"""

from __future__ import annotations

import gzip
import re
import stat
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from builder.eif import EifReader
from builder.initramfs import CpioMember, EntryKind, iter_members
from builder.inputs.apt import parse_source_line
from enclave_audit.errors import CpioError, EifError, InvalidInput
from enclave_audit.fsutil import hash_file
from enclave_audit.model.findings import Check, CheckOutcome, Finding, Severity, verdict_of
from enclave_audit.progress import NullProgress, ProgressSink
from verifier.audit.policy import AuditPolicy
from verifier.audit.report import ImageAuditReport
from verifier.audit.updates import (
    UpdatesMode,
    default_mode,
    security_sources,
    security_update_check,
)
from verifier.binaries import ELF_MAGIC, BinaryInfo, analyze_elf, hardening_findings
from verifier.compare.base import SliceBlob
from verifier.compare.kernel import version_string
from verifier.sbom import (
    DPKG_STATUS,
    PY_METADATA,
    Package,
    parse_dpkg_status,
    parse_python_metadata,
)

CHUNK = 1 << 20
OVERLAP = 8192
#: ELF files up to this size are parsed in memory
MAX_ELF = 512 << 20
MAX_METADATA_FILE = 64 << 20

SHELLS = frozenset(
    {"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "fish", "csh", "tcsh"}
)
DEBUG_TOOLS = frozenset(
    {
        "gdb",
        "gdbserver",
        "strace",
        "ltrace",
        "perf",
        "valgrind",
        "lldb",
        "tcpdump",
        "bpftrace",
        "ftrace",
        "kexec",
    }
)
NETWORK_TOOLS = frozenset(
    {
        "nc",
        "netcat",
        "ncat",
        "socat",
        "telnet",
        "telnetd",
        "sshd",
        "ssh",
        "dropbear",
        "curl",
        "wget",
        "ftp",
    }
)
_BIN_DIRS = frozenset({"bin", "sbin"})
APT_SOURCES = re.compile(r"(^|/)etc/apt/sources\.list$")

# --- secrets ---------------------------------------------------------------------------

_PREFILTER = (
    b"PRIVATE KEY",
    b"AKIA",
    b"ASIA",
    b"ghp_",
    b"gho_",
    b"ghu_",
    b"ghs_",
    b"ghr_",
    b"github_pat_",
    b"xox",
    b"aws_secret_access_key",
    b"AWS_SECRET_ACCESS_KEY",
    b"AIza",
)
_NL = rb"(?:\r?\n|\\n)"
_SECRETS: tuple[tuple[str, Severity, re.Pattern[bytes], str], ...] = (
    (
        "private-key",
        Severity.CRITICAL,
        re.compile(
            rb"-----BEGIN ((?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY"
            rb"|PGP PRIVATE KEY BLOCK)-----"
            + _NL
            + rb"(?:[\w-]+: [^\r\n\\]*"
            + _NL
            + rb"){0,4}"
            + _NL
            + rb"?"
            + rb"(?:[A-Za-z0-9+/=]{16,}"
            + _NL
            + rb"?){3,}"
        ),
        "PEM private key block",
    ),
    (
        "aws-access-key-id",
        Severity.MEDIUM,
        re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])"),
        "AWS access key id",
    ),
    (
        "credential-token",
        Severity.CRITICAL,
        re.compile(
            rb"(?i:aws_secret_access_key)\s*[=:]\s*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"
        ),
        "AWS secret access key",
    ),
    (
        "credential-token",
        Severity.CRITICAL,
        re.compile(rb"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b"),
        "GitHub token",
    ),
    (
        "credential-token",
        Severity.CRITICAL,
        re.compile(rb"\bgithub_pat_[A-Za-z0-9_]{60,}"),
        "GitHub fine-grained token",
    ),
    (
        "credential-token",
        Severity.CRITICAL,
        re.compile(rb"\bxox[baprs]-[0-9A-Za-z-]{10,72}"),
        "Slack token",
    ),
    (
        "credential-token",
        Severity.HIGH,
        re.compile(rb"\bAIza[0-9A-Za-z_-]{35}\b"),
        "Google API key",
    ),
)


#: a 40-character AWS secret access key (base64 alphabet) standing alone
_AWS_SECRET_NEAR = re.compile(rb"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def _redact(secret: bytes) -> str:
    text = secret.decode("ascii", "replace").split("\n")[0].split("\\n")[0]
    if text.startswith("-----BEGIN"):
        return text
    return text[:8] + "…" + f" ({len(secret)} chars)"


class SecretScanner:
    """Streams one file's chunks; remembers matches by offset (each reported once)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tail = b""
        self.offset = 0  # file offset of the start of ``tail``
        self.found: dict[tuple[str, int], Finding] = {}

    def feed(self, chunk: bytes) -> None:
        data = self.tail + chunk
        if any(p in data for p in _PREFILTER):
            for rule, severity, pattern, what in _SECRETS:
                for m in pattern.finditer(data):
                    at = self.offset + m.start()
                    if (rule, at) in self.found:
                        continue
                    secret = m.group(0)
                    sev, note, final_rule = severity, "", rule
                    if secret.endswith(b"EXAMPLE"):
                        sev, note = Severity.INFO, " (documentation example value)"
                        final_rule = "credential-example"
                    elif rule == "aws-access-key-id" and _AWS_SECRET_NEAR.search(
                        data, m.end(), m.end() + 256
                    ):
                        # an id is an identifier; an id with its secret is a credential
                        sev, note = Severity.CRITICAL, " with a secret access key next to it"
                        final_rule = "credential-token"
                    self.found[(rule, at)] = Finding(
                        rule=final_rule,
                        severity=sev,
                        path=self.path,
                        message=f"{what} embedded{note}",
                        evidence=f"at offset {at}: {_redact(secret)}",
                    )
        keep = min(len(data), OVERLAP)
        self.offset += len(data) - keep
        self.tail = data[len(data) - keep :]

    def findings(self) -> list[Finding]:
        return list(self.found.values())


# --- members ------------------------------------------------------------------------------


@dataclass
class ScanState:
    findings: list[Finding] = field(default_factory=list)
    binaries: list[BinaryInfo] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)
    files: int = 0
    elf_count: int = 0
    not_run: list[str] = field(default_factory=list)
    #: the image's /etc/apt/sources.list (for the security-updates check)
    apt_sources: str = ""


#: tools whose presence in an enclave image is a finding: (names, rule, severity, label)
_PRESENT_TOOLS = (
    (SHELLS, "shell-present", Severity.MEDIUM, "shell"),
    (DEBUG_TOOLS, "debug-tool", Severity.HIGH, "debugging tool"),
    (NETWORK_TOOLS, "network-tool", Severity.MEDIUM, "network tool"),
)


def _name_findings(path: str, name: str, kind: EntryKind) -> Iterator[Finding]:
    parts = name.strip("/").split("/")
    if (
        len(parts) < 2
        or parts[-2] not in _BIN_DIRS
        or kind not in (EntryKind.FILE, EntryKind.SYMLINK)
    ):
        return
    base = parts[-1]
    for names, rule, severity, what in _PRESENT_TOOLS:
        if base in names:
            yield Finding(
                rule=rule, severity=severity, path=path, message=f"{what} {base!r} present"
            )
            return


#: where a distribution installs its (few) setuid-root programs
_SYSTEM_DIRS = ("bin/", "sbin/", "usr/bin/", "usr/sbin/", "usr/lib/", "usr/libexec/")
#: a setuid bit on these hands out root to anyone who can run a program
_INTERPRETERS = re.compile(
    r"^(python[\d.]*|perl[\d.]*|ruby[\d.]*|node|lua[\d.]*|php[\d.]*|env|find|vim?)$"
)


def _setuid_risk(name: str, m: CpioMember) -> str | None:
    """Why a setuid file is worse than a distribution's setuid-root tool, if it is."""
    parts = name.strip("/").split("/")
    base = parts[-1]
    if m.uid != 0:
        return f"setuid to uid {m.uid}, not root"
    if m.perm & (stat.S_IWGRP | stat.S_IWOTH):
        return "setuid and writable by group or others"
    if base in SHELLS or _INTERPRETERS.match(base):
        return f"setuid {base}: a shell or interpreter"
    inside = "/".join(parts[1:]) if parts[0] == "rootfs" and len(parts) > 1 else "/".join(parts)
    if not inside.startswith(_SYSTEM_DIRS):
        return "setuid outside the system directories"
    return None


def _mode_findings(path: str, m: CpioMember) -> Iterator[Finding]:
    perm = m.perm
    if m.kind is EntryKind.FILE and perm & stat.S_ISUID:
        risk = _setuid_risk(m.name, m)
        if risk is None:
            yield Finding(
                rule="setuid",
                severity=Severity.MEDIUM,
                path=path,
                message=f"setuid-root program (mode {perm:04o})",
            )
        else:
            yield Finding(
                rule="setuid-risky",
                severity=Severity.HIGH,
                path=path,
                message=f"{risk} (mode {perm:04o}, owner {m.uid})",
            )
    if m.kind is EntryKind.FILE and perm & stat.S_ISGID:
        yield Finding(
            rule="setgid",
            severity=Severity.MEDIUM,
            path=path,
            message=f"setgid file (mode {perm:04o}, group {m.gid})",
        )
    if m.kind in (EntryKind.FILE, EntryKind.DIRECTORY) and perm & stat.S_IWOTH:
        if not (m.kind is EntryKind.DIRECTORY and perm & stat.S_ISVTX):
            yield Finding(
                rule="world-writable",
                severity=Severity.MEDIUM,
                path=path,
                message=f"world-writable {m.kind.value} (mode {perm:04o})",
            )


def _scan_member(label: str, m: CpioMember, state: ScanState) -> None:
    path = f"{label}/{m.name}"
    state.findings.extend(_mode_findings(path, m))
    state.findings.extend(_name_findings(path, m.name, m.kind))
    if m.kind is not EntryKind.FILE or m.data is None:
        return
    state.files += 1
    scanner = SecretScanner(path)
    first = m.data.read(CHUNK)
    is_elf = first.startswith(ELF_MAGIC)
    keep_whole = (is_elf and m.size <= MAX_ELF) or (
        m.size <= MAX_METADATA_FILE
        and (DPKG_STATUS.search(m.name) or PY_METADATA.search(m.name) or APT_SOURCES.search(m.name))
    )
    parts: list[bytes] = [first] if keep_whole else []
    scanner.feed(first)
    while chunk := m.data.read(CHUNK):
        scanner.feed(chunk)
        if keep_whole:
            parts.append(chunk)
    state.findings.extend(scanner.findings())
    if not keep_whole:
        if is_elf:
            state.unparsed.append(path)
            state.findings.append(
                Finding(
                    rule="elf-unparsed",
                    severity=Severity.MEDIUM,
                    path=path,
                    message=f"ELF larger than {MAX_ELF} bytes: hardening not checked",
                )
            )
        return
    data = b"".join(parts)
    if is_elf:
        state.elf_count += 1
        try:
            info = analyze_elf(data, path)
        except InvalidInput as exc:
            state.unparsed.append(path)
            state.findings.append(
                Finding(
                    rule="elf-unparsed",
                    severity=Severity.MEDIUM,
                    path=path,
                    message="ELF could not be parsed: hardening not checked",
                    evidence=exc.message,
                )
            )
            return
        state.binaries.append(info)
        state.findings.extend(hardening_findings(info))
    elif DPKG_STATUS.search(m.name):
        state.packages.extend(parse_dpkg_status(data.decode("utf-8", "replace"), path))
    elif APT_SOURCES.search(m.name):
        state.apt_sources = data.decode("utf-8", "replace")
    else:
        pkg = parse_python_metadata(data.decode("utf-8", "replace"), path)
        if pkg is not None:
            state.packages.append(pkg)


def _open_ramdisk(blob: SliceBlob) -> IO[bytes] | None:
    head = blob.head(6)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=blob.open(), mode="rb")  # type: ignore[return-value]
    if head[:6] in (b"070701", b"070702"):
        return blob.open()
    return None


# --- cmdline --------------------------------------------------------------------------------

_MITIGATIONS_OFF = frozenset(
    {
        "mitigations=off",
        "nopti",
        "pti=off",
        "nospectre_v1",
        "nospectre_v2",
        "spectre_v2=off",
        "spectre_v2_user=off",
        "nokaslr",
        "nosmap",
        "nosmep",
        "l1tf=off",
        "mds=off",
        "tsx=on",
        "module.sig_enforce=0",
        "lockdown=none",
        "retbleed=off",
        "srbds=off",
        "mmio_stale_data=off",
    }
)
_DEBUG_FLAGS = (
    "debug",
    "ignore_loglevel",
    "initcall_debug",
    "printk.devkmsg=on",
    "sysrq_always_enabled",
)


def cmdline_findings(cmdline: str) -> list[Finding]:
    out: list[Finding] = []
    where = "cmdline"
    for token in cmdline.split():
        key, _, value = token.partition("=")
        if token in _MITIGATIONS_OFF:
            out.append(
                Finding(
                    rule="cmdline-mitigations-off",
                    severity=Severity.HIGH,
                    path=where,
                    message=f"kernel hardening disabled: {token}",
                )
            )
        elif key in ("kgdboc", "kgdbwait", "kgdbdbgp", "kgdbcon", "kdb", "ekgdboc"):
            out.append(
                Finding(
                    rule="cmdline-kernel-debugger",
                    severity=Severity.CRITICAL,
                    path=where,
                    message=f"kernel debugger enabled: {token}",
                )
            )
        elif (
            token in _DEBUG_FLAGS
            or key.startswith("earlyprintk")
            or (key == "loglevel" and value.isdigit() and int(value) >= 7)
        ):
            out.append(
                Finding(
                    rule="cmdline-debug",
                    severity=Severity.MEDIUM,
                    path=where,
                    message=f"debug option on the kernel command line: {token}",
                )
            )
        elif key in ("init", "rdinit") and value.rsplit("/", 1)[-1] in SHELLS:
            out.append(
                Finding(
                    rule="cmdline-init-override",
                    severity=Severity.HIGH,
                    path=where,
                    message=f"init replaced by a shell: {token}",
                )
            )
        elif key == "console":
            out.append(
                Finding(
                    rule="cmdline-console",
                    severity=Severity.INFO,
                    path=where,
                    message=f"console {value!r}: output is visible only to a debug-mode enclave",
                )
            )
    return out


# --- the audit --------------------------------------------------------------------------------


def audit_image(
    path: Path,
    policy: AuditPolicy,
    *,
    progress: ProgressSink | None = None,
    security_updates: UpdatesMode | None = None,
    security_suites: Sequence[str] = (),
    debian_mirrors: dict[str, str] | None = None,
) -> ImageAuditReport:
    """Audit every file of an EIF under ``policy`` (one read of the image, plus its digest).

    ``security_suites`` (``deb URI SUITE COMPONENT`` lines) replace the image's own
    ``-security`` sources for the security-updates check.
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    sha = hash_file(path)["sha256"].hex()
    state = ScanState()
    checks: list[Check] = []
    try:
        reader = EifReader.open(path)
    except EifError as exc:
        raise InvalidInput(exc.message) from None
    with reader:
        cmdline = reader.cmdline_text()
        build_meta = reader.metadata().get("BuildMetadata")
        build_time = build_meta.get("BuildTime") if isinstance(build_meta, dict) else None
        kernel = reader.kernel
        kblob = SliceBlob(reader.path, kernel.data_offset, kernel.size, "kernel")
        kernel_version = version_string(kblob.head(0x10000))
        if kernel_version:
            state.findings.append(
                Finding(
                    rule="kernel-version",
                    severity=Severity.INFO,
                    path="kernel",
                    message=f"kernel {kernel_version}",
                )
            )
        else:
            state.findings.append(
                Finding(
                    rule="kernel-version",
                    severity=Severity.INFO,
                    path="kernel",
                    message="kernel version string not found (not a bzImage?)",
                )
            )
        state.findings.extend(cmdline_findings(cmdline))
        for i, section in enumerate(reader.ramdisks):
            label = f"ramdisk[{i}]"
            blob = SliceBlob(reader.path, section.data_offset, section.size, label)
            progress.start(f"auditing {label}", total=section.size)
            stream = _open_ramdisk(blob)
            if stream is None:
                state.not_run.append(f"{label}: not a newc cpio archive (or gzip of one)")
                continue
            try:
                with stream:
                    for member in iter_members(stream):
                        _scan_member(label, member, state)
                        progress.advance(member.size)
            except (CpioError, OSError, EOFError, zlib.error) as exc:
                state.not_run.append(f"{label}: unreadable: {exc}")
            progress.done()
    sources = (
        [parse_source_line(line) for line in security_suites]
        if security_suites
        else security_sources(state.apt_sources)
    )
    updates_check, update_findings = security_update_check(
        state.packages,
        sources,
        mode=security_updates or default_mode(),
        mirror_map=debian_mirrors,
    )
    findings, suppressed = policy.apply([*state.findings, *update_findings])
    checks = [*_checks(state, findings, policy), updates_check]
    del started
    return ImageAuditReport(
        image=str(path),
        image_sha256=sha,
        verdict=verdict_of(checks),
        policy=policy.source,
        fail_on=policy.fail_on,
        checks=checks,
        findings=findings,
        suppressed=suppressed,
        kernel_version=kernel_version,
        build_time=str(build_time) if build_time else None,
        cmdline=cmdline,
        files=state.files,
        binaries=sorted(state.binaries, key=lambda b: b.path),
        packages=sorted(state.packages, key=lambda p: p.key),
    )


_CHECK_RULES = {
    "elf-hardening": ("elf-",),
    "file-permissions": ("setuid", "setgid", "world-writable"),
    "tools-present": ("shell-present", "debug-tool", "network-tool"),
    "embedded-secrets": ("private-key", "credential-", "aws-access-key-id"),
    "kernel-cmdline": ("cmdline-",),
}


def _checks(state: ScanState, findings: list[Finding], policy: AuditPolicy) -> list[Check]:
    checks: list[Check] = []
    # an ELF that could not be analysed leaves the check unfinished, unless the policy
    # explicitly switched the rule off or allowed that path
    unparsed = [f.path for f in findings if f.rule == "elf-unparsed"]
    for name, prefixes in _CHECK_RULES.items():
        mine = [f for f in findings if f.rule.startswith(prefixes)]
        failing = [f for f in mine if policy.fails(f)]
        if state.not_run:
            outcome, detail = CheckOutcome.NOT_RUN, "; ".join(state.not_run)
        elif failing:
            outcome = CheckOutcome.FAIL
            detail = f"{len(failing)} finding(s) at or above {policy.fail_on.value}: " + ", ".join(
                sorted({f.rule for f in failing})
            )
        elif name == "elf-hardening" and unparsed:
            outcome = CheckOutcome.NOT_RUN
            detail = f"{len(unparsed)} ELF file(s) could not be analysed, e.g. {unparsed[0]}"
        else:
            outcome = CheckOutcome.PASS
            detail = f"{len(mine)} finding(s) below {policy.fail_on.value}"
            if name == "elf-hardening":
                detail += f"; {len(state.binaries)} ELF file(s) analysed"
        checks.append(Check(name=name, outcome=outcome, detail=detail))
    return checks
