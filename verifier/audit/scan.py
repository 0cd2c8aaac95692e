"""One streaming pass over an EIF's ramdisks: files, binaries, secrets, packages, cmdline.

The ramdisks are read as the kernel unpacks them (:mod:`builder.initramfs.unpack`):
every archive, also those after a ``TRAILER!!!``, compressed segments, names resolved
to the paths the kernel creates, hard links joined to their inode, all ramdisks into
one root.  Every member's content is read once: ELF files are parsed with lief
(hardening), every regular file is searched for embedded private keys and tokens (a fast
literal prefilter, then regexes, across chunk boundaries), and the dpkg database and
Python dist-info files are collected for the SBOM.  Permission bits and names are
checked on the end state of the unpacking (every name of every inode).

What cannot be read, and every budget that is hit (decompressed bytes, bytes held in
memory), leaves the checks NOT_RUN: the verdict is INCONCLUSIVE, never PASS, and the
detail names the limit and the flag that raises it.
"""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.eif import EifReader
from builder.initramfs import EntryKind
from builder.initramfs.unpack import Inode, KernelView, PathResolver, Unpacked, iter_initramfs
from builder.inputs.apt import parse_source_line
from enclave_audit.errors import CpioError, EifError, InvalidInput
from enclave_audit.fsutil import hash_file
from enclave_audit.limits import LimitExceeded, Limits, memory_limit
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
    OS_RELEASE,
    PY_METADATA,
    Ecosystem,
    Package,
    parse_dpkg_status,
    parse_os_release,
    parse_python_metadata,
)

CHUNK = 1 << 20
OVERLAP = 8192

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
    limits: Limits = field(default_factory=Limits)
    findings: list[Finding] = field(default_factory=list)
    binaries: list[BinaryInfo] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)
    distro: str | None = None  # from os-release, for the Debian purls' distro= qualifier
    unparsed: list[str] = field(default_factory=list)
    files: int = 0
    elf_count: int = 0
    not_run: list[str] = field(default_factory=list)
    #: budgets that were hit (each names its limit and flag): the audit is incomplete
    limits_reached: list[str] = field(default_factory=list)
    #: the image's /etc/apt/sources.list (for the security-updates check)
    apt_sources: str = ""


#: tools whose presence in an enclave image is a finding: (names, rule, severity, label)
_PRESENT_TOOLS = (
    (SHELLS, "shell-present", Severity.MEDIUM, "shell"),
    (DEBUG_TOOLS, "debug-tool", Severity.HIGH, "debugging tool"),
    (NETWORK_TOOLS, "network-tool", Severity.MEDIUM, "network tool"),
)


def _name_findings(path: str, name: str, kind: EntryKind, perm: int = 0) -> Iterator[Finding]:
    """Shells, debuggers and network tools: in a bin directory, or executable anywhere."""
    parts = name.strip("/").split("/")
    if kind not in (EntryKind.FILE, EntryKind.SYMLINK) or not parts[-1]:
        return
    in_bin = len(parts) >= 2 and parts[-2] in _BIN_DIRS
    executable = kind is EntryKind.SYMLINK or bool(perm & 0o111)
    if not (in_bin or executable):
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


def _setuid_risk(name: str, m: Inode) -> str | None:
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


def _mode_findings(path: str, name: str, m: Inode, link: str) -> Iterator[Finding]:
    perm = m.perm
    if m.kind is EntryKind.FILE and perm & stat.S_ISUID:
        risk = _setuid_risk(name, m)
        if risk is None:
            yield Finding(
                rule="setuid",
                severity=Severity.MEDIUM,
                path=path,
                message=f"setuid-root program (mode {perm:04o}){link}",
            )
        else:
            yield Finding(
                rule="setuid-risky",
                severity=Severity.HIGH,
                path=path,
                message=f"{risk} (mode {perm:04o}, owner {m.uid}){link}",
            )
    if m.kind is EntryKind.FILE and perm & stat.S_ISGID:
        yield Finding(
            rule="setgid",
            severity=Severity.MEDIUM,
            path=path,
            message=f"setgid file (mode {perm:04o}, group {m.gid}){link}",
        )
    if m.kind in (EntryKind.FILE, EntryKind.DIRECTORY) and perm & stat.S_IWOTH:
        if not (m.kind is EntryKind.DIRECTORY and perm & stat.S_ISVTX):
            yield Finding(
                rule="world-writable",
                severity=Severity.MEDIUM,
                path=path,
                message=f"world-writable {m.kind.value} (mode {perm:04o}){link}",
            )


def _final_findings(view: KernelView, state: ScanState) -> None:
    """Permission and name checks on what the kernel leaves once everything is unpacked."""
    for name, inode in view.paths.items():
        if not name:
            continue
        path = f"{inode.source}/{name}"
        first = inode.names[0] if inode.names else name
        link = f"; hard link to {first!r}" if first != name and inode.kind is EntryKind.FILE else ""
        state.findings.extend(_mode_findings(path, name, inode, link))
        state.findings.extend(_name_findings(path, name, inode.kind, inode.perm))


def _scan_member(label: str, item: Unpacked, state: ScanState) -> None:
    """Content checks of one member as it streams by (secrets, ELF hardening, packages)."""
    m = item.member
    path = f"{label}/{item.path}"
    if m.kind is not EntryKind.FILE or m.data is None:
        return
    state.files += 1
    scanner = SecretScanner(path)
    first = m.data.read(CHUNK)
    is_elf = first.startswith(ELF_MAGIC)
    is_metadata = bool(
        DPKG_STATUS.search(item.path)
        or PY_METADATA.search(item.path)
        or APT_SOURCES.search(item.path)
        or OS_RELEASE.search(item.path)
    )
    fits = m.size <= state.limits.memory
    keep_whole = (is_elf or is_metadata) and fits
    parts: list[bytes] = [first] if keep_whole else []
    scanner.feed(first)
    while chunk := m.data.read(CHUNK):
        scanner.feed(chunk)
        if keep_whole:
            parts.append(chunk)
    state.findings.extend(scanner.findings())
    if not keep_whole:
        if (is_elf or is_metadata) and not fits:
            limit = memory_limit(path, m.size, state.limits.memory)
            state.limits_reached.append(limit.message)
            if is_elf:
                state.unparsed.append(path)
                state.findings.append(
                    Finding(
                        rule="elf-unparsed",
                        severity=Severity.MEDIUM,
                        path=path,
                        message="ELF not analysed: hardening not checked",
                        evidence=limit.message,
                    )
                )
        return
    data = b"".join(parts)
    del parts
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
    elif DPKG_STATUS.search(item.path):
        state.packages.extend(parse_dpkg_status(data.decode("utf-8", "replace"), path))
    elif OS_RELEASE.search(item.path):
        state.distro = parse_os_release(data.decode("utf-8", "replace")) or state.distro
    elif APT_SOURCES.search(item.path):
        state.apt_sources = data.decode("utf-8", "replace")
    else:
        pkg = parse_python_metadata(data.decode("utf-8", "replace"), path)
        if pkg is not None:
            state.packages.append(pkg)


def _hidden_findings(label: str, hidden: list[Unpacked], archives: int) -> Iterator[Finding]:
    if not hidden:
        return
    shown = sorted(hidden, key=lambda u: u.member.is_dir)[:10]  # files before directories
    names = ", ".join(repr(u.path) for u in shown)
    more = f" and {len(hidden) - len(shown)} more" if len(hidden) > len(shown) else ""
    yield Finding(
        rule="initramfs-hidden-members",
        severity=Severity.MEDIUM,
        path=label,
        message=f"{len(hidden)} member(s) in {archives - 1} further archive(s) after the first"
        f" TRAILER!!! (the kernel unpacks them): {names}{more}",
    )


def _shadow_finding(label: str, item: Unpacked, earlier: str) -> Finding:
    """A later member replacing an earlier one: what a reader of the first archive sees
    is not what the kernel leaves there."""
    return Finding(
        rule="initramfs-shadowed-member",
        severity=Severity.HIGH,
        path=f"{label}/{item.path}",
        message=f"replaces the member unpacked from {earlier} (the kernel keeps this one)",
        evidence=f"stored as {item.member.name!r} in archive #{item.archive + 1}",
    )


def _renamed_findings(label: str, renamed: list[Unpacked]) -> Iterator[Finding]:
    for u in renamed[:50]:
        yield Finding(
            rule="initramfs-unnormalised-name",
            severity=Severity.INFO,
            path=f"{label}/{u.path}",
            message=f"stored as {u.member.name!r}; the kernel unpacks it to {u.path!r}",
        )


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
    limits: Limits | None = None,
) -> ImageAuditReport:
    """Audit every file of an EIF under ``policy`` (one read of the image, plus its digest).

    ``security_suites`` (``deb URI SUITE COMPONENT`` lines) replace the image's own
    ``-security`` sources for the security-updates check.  ``limits`` bounds
    decompression (``--max-decompressed``) and what one file may hold in memory
    (``--max-memory``); a limit that is hit makes the verdict INCONCLUSIVE.
    """
    progress = progress or NullProgress()
    limits = limits or Limits()
    started = time.monotonic()
    sha = hash_file(path)["sha256"].hex()
    state = ScanState(limits=limits)
    budget = limits.decompression_budget()
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
        resolver = PathResolver()  # the kernel unpacks every ramdisk into one root
        view = KernelView()
        unpacked_from: dict[str, str] = {}  # path -> where its current member came from
        for i, section in enumerate(reader.ramdisks):
            label = f"ramdisk[{i}]"
            blob = SliceBlob(reader.path, section.data_offset, section.size, label)
            progress.start(f"auditing {label}", total=section.size)
            hidden: list[Unpacked] = []
            renamed: list[Unpacked] = []
            archives = 0
            try:
                with blob.open() as stream:
                    for item in iter_initramfs(
                        stream, where=label, budget=budget, resolver=resolver
                    ):
                        archives = max(archives, item.archive + 1)
                        where = f"{label} archive #{item.archive + 1}"
                        earlier = unpacked_from.get(item.path)
                        if earlier is not None and not item.member.is_dir:
                            state.findings.append(_shadow_finding(label, item, earlier))
                        unpacked_from[item.path] = where
                        if item.hidden:
                            hidden.append(item)
                        if item.renamed and item.path:
                            renamed.append(item)
                        view.apply(item, label)
                        _scan_member(label, item, state)
                        progress.advance(item.member.size)
            except LimitExceeded as exc:
                state.limits_reached.append(exc.message)
            except (CpioError, OSError, EOFError) as exc:
                message = exc.message if isinstance(exc, CpioError) else str(exc)
                state.not_run.append(f"{label}: unreadable: {message}")
            state.findings.extend(_hidden_findings(label, hidden, archives))
            state.findings.extend(_renamed_findings(label, renamed))
            progress.done()
        _final_findings(view, state)
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
    applied = policy.apply([*state.findings, *update_findings])
    findings = applied.findings
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
        waived=applied.waived,
        unused_waivers=applied.unused_waivers,
        suppressed=applied.suppressed,
        kernel_version=kernel_version,
        build_time=str(build_time) if build_time else None,
        cmdline=cmdline,
        files=state.files,
        binaries=sorted(state.binaries, key=lambda b: b.path),
        packages=sorted(
            (
                p.model_copy(update={"distro": state.distro})
                if p.ecosystem is Ecosystem.DEBIAN and state.distro
                else p
                for p in state.packages
            ),
            key=lambda p: p.key,
        ),
    )


_CHECK_RULES = {
    "elf-hardening": ("elf-",),
    "file-permissions": ("setuid", "setgid", "world-writable"),
    "tools-present": ("shell-present", "debug-tool", "network-tool"),
    "embedded-secrets": ("private-key", "credential-", "aws-access-key-id"),
    "kernel-cmdline": ("cmdline-",),
    "initramfs-layout": ("initramfs-",),
}


def _checks(state: ScanState, findings: list[Finding], policy: AuditPolicy) -> list[Check]:
    checks: list[Check] = []
    # an ELF that could not be analysed leaves the check unfinished, unless the policy
    # explicitly switched the rule off or allowed that path
    unparsed = [f.path for f in findings if f.rule == "elf-unparsed"]
    for name, prefixes in _CHECK_RULES.items():
        mine = [f for f in findings if f.rule.startswith(prefixes)]
        failing = [f for f in mine if policy.fails(f)]
        incomplete = [*state.not_run, *dict.fromkeys(state.limits_reached)]
        if name == "kernel-cmdline":
            incomplete = []  # read from its own section, whatever the ramdisks hold
        if failing:
            outcome = CheckOutcome.FAIL
            detail = f"{len(failing)} finding(s) at or above {policy.fail_on.value}: " + ", ".join(
                sorted({f.rule for f in failing})
            )
            if incomplete:
                detail += "; and not everything was read: " + "; ".join(incomplete)
        elif incomplete:
            outcome, detail = CheckOutcome.NOT_RUN, "; ".join(incomplete)
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
