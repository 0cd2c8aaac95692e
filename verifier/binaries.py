"""ELF hardening: PIE, NX, RELRO/BIND_NOW, stack protector, FORTIFY, symbols, RPATH/RUNPATH.

:func:`analyze_elf` parses one ELF with lief (bytes in, :class:`BinaryInfo` out) and
:func:`hardening_findings` turns it into findings with default severities; the audit
policy may change those severities or exempt paths.
"""

from __future__ import annotations

import re
from enum import StrEnum

import lief
from pydantic import BaseModel, ConfigDict

from enclave_audit.errors import InvalidInput
from enclave_audit.model.findings import Finding, Severity

ELF_MAGIC = b"\x7fELF"
#: a ``*_chk`` import is what -D_FORTIFY_SOURCE leaves behind
_FORTIFIED = re.compile(r"^__\w+_chk(@.*)?$")
_STACK_CHK = ("__stack_chk_fail", "__stack_chk_guard", "__intel_security_cookie")


class ElfKind(StrEnum):
    EXECUTABLE = "executable"
    SHARED_LIBRARY = "shared-library"
    RELOCATABLE = "relocatable"
    CORE = "core"
    OTHER = "other"


class Relro(StrEnum):
    NONE = "none"
    PARTIAL = "partial"
    FULL = "full"


class BinaryInfo(BaseModel):
    """The hardening properties of one ELF file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    kind: ElfKind
    machine: str
    pie: bool
    nx: bool
    executable_stack: bool
    relro: Relro
    bind_now: bool
    stack_protector: bool
    fortify: bool
    fortified_functions: int
    stripped: bool
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()
    interpreter: str | None = None


def _silence_lief() -> None:
    logging = getattr(lief, "logging", None)
    if logging is not None and hasattr(logging, "disable"):
        logging.disable()


def analyze_elf(data: bytes, path: str) -> BinaryInfo:
    """Hardening properties of an ELF given as bytes; :class:`InvalidInput` when unparsable."""
    if not data.startswith(ELF_MAGIC):
        raise InvalidInput(f"{path}: not an ELF file")
    _silence_lief()
    try:
        elf = lief.ELF.parse(data)
    except Exception as exc:  # lief raises its own exception types and RuntimeError
        raise InvalidInput(f"{path}: lief cannot parse this ELF: {exc}") from None
    if elf is None:
        raise InvalidInput(f"{path}: lief cannot parse this ELF")
    try:
        return _info(elf, path)
    except Exception as exc:  # a malformed binary can break any accessor
        raise InvalidInput(f"{path}: malformed ELF: {type(exc).__name__}: {exc}") from None


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _info(elf: lief.ELF.Binary, path: str) -> BinaryInfo:
    ft = lief.ELF.Header.FILE_TYPE
    st = lief.ELF.Segment.TYPE
    tag = lief.ELF.DynamicEntry.TAG
    file_type = elf.header.file_type
    interp = elf.interpreter if elf.has_interpreter else None
    has_entry_main = any(s.name == "main" for s in elf.exported_functions) if not interp else False
    if file_type == ft.EXEC:
        kind = ElfKind.EXECUTABLE
    elif file_type == ft.DYN:
        kind = ElfKind.EXECUTABLE if interp or has_entry_main else ElfKind.SHARED_LIBRARY
    elif file_type == ft.REL:
        kind = ElfKind.RELOCATABLE
    elif file_type == ft.CORE:
        kind = ElfKind.CORE
    else:
        kind = ElfKind.OTHER
    stack = next((s for s in elf.segments if s.type == st.GNU_STACK), None)
    executable_stack = stack is not None and bool(int(stack.flags) & 1)
    has_relro = any(s.type == st.GNU_RELRO for s in elf.segments)
    bind_now = False
    rpath: list[str] = []
    runpath: list[str] = []
    for entry in elf.dynamic_entries:
        if entry.tag == tag.BIND_NOW:
            bind_now = True
        elif entry.tag == tag.FLAGS and int(entry.value) & 0x8:  # DF_BIND_NOW
            bind_now = True
        elif entry.tag == tag.FLAGS_1 and int(entry.value) & 0x1:  # DF_1_NOW
            bind_now = True
        elif isinstance(entry, lief.ELF.DynamicEntryRpath):
            rpath.extend(_text(entry.rpath).split(":"))
        elif isinstance(entry, lief.ELF.DynamicEntryRunPath):
            runpath.extend(_text(entry.runpath).split(":"))
    imported = {_text(f.name).split("@")[0] for f in elf.imported_functions}
    imported |= {_text(s.name).split("@")[0] for s in elf.imported_symbols}
    local = {_text(s.name) for s in elf.symbols if s.name}
    names = imported | local
    fortified = sum(1 for n in names if _FORTIFIED.match(n))
    relro = Relro.NONE if not has_relro else (Relro.FULL if bind_now else Relro.PARTIAL)
    stripped = (
        not elf.has_section(".symtab")
        if hasattr(elf, "has_section")
        else elf.get_section(".symtab") is None
    )
    return BinaryInfo(
        path=path,
        kind=kind,
        machine=str(elf.header.machine_type).split(".")[-1],
        pie=file_type == ft.DYN and kind is ElfKind.EXECUTABLE,
        nx=stack is not None and not executable_stack,
        executable_stack=executable_stack or (stack is None and kind is not ElfKind.RELOCATABLE),
        relro=relro,
        bind_now=bind_now,
        stack_protector=any(n in names for n in _STACK_CHK),
        fortify=fortified > 0,
        fortified_functions=fortified,
        stripped=stripped,
        rpath=tuple(rpath),
        runpath=tuple(runpath),
        interpreter=interp,
    )


def _risky_search_path(entry: str) -> bool:
    """Relative, empty or world-writable-looking directories in RPATH/RUNPATH."""
    if entry == "" or entry == ".":
        return True
    if entry.startswith("$ORIGIN") or entry.startswith("${ORIGIN}"):
        return False
    writable = ("/tmp", "/var/tmp", "/dev/shm", "/home")  # noqa: S108 - names we flag, not use
    return not entry.startswith("/") or entry.startswith(writable)


def hardening_findings(info: BinaryInfo) -> list[Finding]:
    """Findings for one ELF with default severities (the policy adjusts them)."""
    out: list[Finding] = []
    path = info.path

    def add(rule: str, severity: Severity, message: str, evidence: str = "") -> None:
        out.append(
            Finding(rule=rule, severity=severity, path=path, message=message, evidence=evidence)
        )

    if info.kind in (ElfKind.RELOCATABLE, ElfKind.CORE, ElfKind.OTHER):
        return out
    if info.executable_stack:
        add("elf-exec-stack", Severity.HIGH, "executable stack (PT_GNU_STACK missing or RWX)")
    if info.kind is ElfKind.EXECUTABLE and not info.pie:
        add("elf-no-pie", Severity.MEDIUM, "executable is not position independent (no ASLR)")
    if info.relro is Relro.NONE:
        add("elf-no-relro", Severity.MEDIUM, "no RELRO: GOT and other tables stay writable")
    elif info.relro is Relro.PARTIAL:
        add(
            "elf-partial-relro",
            Severity.INFO,
            "partial RELRO (no BIND_NOW): the GOT stays writable",
        )
    if not info.stack_protector:
        add("elf-no-stack-protector", Severity.INFO, "no stack protector symbol (__stack_chk_fail)")
    if not info.fortify:
        add("elf-no-fortify", Severity.INFO, "no FORTIFY_SOURCE checked functions (__*_chk)")
    if not info.stripped:
        add("elf-not-stripped", Severity.LOW, "symbol table present (.symtab not stripped)")
    for what, entries in (("rpath", info.rpath), ("runpath", info.runpath)):
        if not entries:
            continue
        risky = [e for e in entries if _risky_search_path(e)]
        if risky:
            add(
                f"elf-{what}",
                Severity.HIGH,
                f"{what.upper()} has a relative or writable directory",
                ":".join(entries),
            )
        else:
            add(f"elf-{what}", Severity.LOW, f"{what.upper()} set", ":".join(entries))
    return out
