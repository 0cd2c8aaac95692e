"""ELF: header, sections, segments, symbols, dynamic entries, notes, ``.comment`` and DWARF.

A content difference inside a code or data section is located down to the symbol that
holds it (``.text`` -> ``main``), so a one-byte change names its section and function.
String sections (``.comment``, ``.debug_str``, ``.strtab``...) are diffed as lists of
strings, which is what the build-path and toolchain classifiers read.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection, SymbolTableSection

from enclave_audit.errors import InvalidInput
from enclave_audit.limits import memory_limit
from enclave_audit.model.difference import Change, DiffNode, NodeKind, Side
from verifier.compare.base import Blob, EngineApi
from verifier.compare.binary import byte_node, count_differing, differing_runs, window
from verifier.compare.nodes import describe_children, field_node
from verifier.compare.text import text_node

ELF_MAGIC = b"\x7fELF"
#: sections whose content is a table of NUL-terminated strings
STRING_SECTIONS = frozenset(
    {
        ".comment",
        ".debug_str",
        ".debug_line_str",
        ".strtab",
        ".dynstr",
        ".shstrtab",
        ".interp",
        ".debug_str_offsets",
        ".GCC.command.line",
    }
)
#: at most this many differing regions of one section are located by symbol
MAX_REGIONS = 8
#: regions closer than this are one region
REGION_GAP = 32
MAX_CUS = 500
SHF_EXECINSTR = 0x4
#: sections of addresses: a change there follows code or data layout, it is not content
ADDRESS_SECTIONS = frozenset(
    {".got", ".got.plt", ".data.rel.ro", ".init_array", ".fini_array", ".dynamic", ".plt.got"}
)
CODE_NOTE = "machine code (executable section)"
ADDRESS_NOTE = "addresses (relocations or pointers)"


@dataclass
class Symbol:
    name: str
    value: int
    size: int
    kind: str


@dataclass
class SectionInfo:
    name: str
    type: str
    flags: int
    addr: int
    size: int
    data: bytes | None  # None for NOBITS


@dataclass
class ElfInfo:
    header: dict[str, str]
    sections: dict[str, SectionInfo]
    segments: list[str]
    symbols: list[Symbol]  # sized function/object symbols sorted by address
    symbol_lines: list[str]
    dynamic: list[str]
    notes: dict[str, str]
    dwarf: dict[str, dict[str, str]] = field(default_factory=dict)
    has_symtab: bool = False
    debug_sections: tuple[str, ...] = ()

    def symbol_at(self, addr: int) -> tuple[str, int] | None:
        starts = [s.value for s in self.symbols]
        i = bisect.bisect_right(starts, addr) - 1
        while i >= 0:
            sym = self.symbols[i]
            if sym.value <= addr < sym.value + max(sym.size, 1):
                return sym.name, addr - sym.value
            if sym.value < addr - (1 << 20):
                break
            i -= 1
        return None


def _str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def load_elf(stream: IO[bytes], name: str) -> ElfInfo:
    try:
        elf = ELFFile(stream)
        return _collect(elf)
    except (ELFError, ValueError, KeyError, IndexError, AssertionError, EOFError, TypeError) as exc:
        raise InvalidInput(f"{name}: malformed ELF: {exc}") from None
    except Exception as exc:  # construct.ConstructError and friends from pyelftools
        raise InvalidInput(f"{name}: malformed ELF: {type(exc).__name__}: {exc}") from None


def _collect(elf: ELFFile) -> ElfInfo:
    h = elf.header
    header = {
        "class": f"ELF{elf.elfclass}",
        "endianness": "little" if elf.little_endian else "big",
        "e_type": _str(h["e_type"]),
        "e_machine": _str(h["e_machine"]),
        "e_entry": hex(h["e_entry"]),
        "e_flags": hex(h["e_flags"]),
        "e_phnum": str(h["e_phnum"]),
        "e_shnum": str(h["e_shnum"]),
        "osabi": _str(h["e_ident"]["EI_OSABI"]),
    }
    sections: dict[str, SectionInfo] = {}
    counts: dict[str, int] = {}
    symbols: list[Symbol] = []
    symbol_lines: list[str] = []
    dynamic: list[str] = []
    notes: dict[str, str] = {}
    has_symtab = False
    for sec in elf.iter_sections():
        name = sec.name or f"[{sec.header['sh_type']}]"
        if name in counts:
            counts[name] += 1
            name = f"{name}#{counts[name]}"
        else:
            counts[name] = 0
        nobits = sec.header["sh_type"] == "SHT_NOBITS"
        sections[name] = SectionInfo(
            name=name,
            type=_str(sec.header["sh_type"]),
            flags=int(sec.header["sh_flags"]),
            addr=int(sec.header["sh_addr"]),
            size=int(sec.header["sh_size"]),
            data=None if nobits else sec.data(),
        )
        stype = sec.header["sh_type"]
        if isinstance(sec, SymbolTableSection):
            if stype == "SHT_SYMTAB":
                has_symtab = True
            for sym in sec.iter_symbols():
                st_type = sym["st_info"]["type"]
                if (
                    sym.name
                    and st_type in ("STT_FUNC", "STT_OBJECT")
                    and sym["st_shndx"] != "SHN_UNDEF"
                ):
                    symbols.append(
                        Symbol(sym.name, int(sym["st_value"]), int(sym["st_size"]), st_type)
                    )
                if sym.name and stype == "SHT_SYMTAB":
                    symbol_lines.append(
                        f"{sym.name} {st_type[4:]} {sym['st_info']['bind'][4:]}"
                        f" size={sym['st_size']}"
                    )
        elif isinstance(sec, DynamicSection):
            for tag in sec.iter_tags():
                t = _str(tag.entry.d_tag)
                for attr in ("needed", "rpath", "runpath", "soname"):
                    if hasattr(tag, attr):
                        dynamic.append(f"{t} {_str(getattr(tag, attr))}")
                        break
                else:
                    if t in ("DT_FLAGS", "DT_FLAGS_1", "DT_BIND_NOW", "DT_TEXTREL", "DT_DEBUG"):
                        dynamic.append(f"{t} {tag.entry.d_val:#x}")
        elif isinstance(sec, NoteSection):
            for note in sec.iter_notes():
                ntype = _str(note["n_type"])
                if ntype == "NT_GNU_BUILD_ID":
                    notes["build-id"] = _str(note["n_desc"])
                else:
                    desc = note["n_desc"]
                    notes[f"{_str(note['n_name'])}/{ntype}"] = (
                        desc.hex() if isinstance(desc, bytes) else _str(desc)
                    )
    segments = [
        f"{_str(seg['p_type'])} off={seg['p_offset']:#x} vaddr={seg['p_vaddr']:#x}"
        f" filesz={seg['p_filesz']:#x} memsz={seg['p_memsz']:#x} flags={seg['p_flags']:#x}"
        for seg in elf.iter_segments()
    ]
    symbols.sort(key=lambda s: (s.value, -s.size))
    info = ElfInfo(
        header=header,
        sections=sections,
        segments=segments,
        symbols=symbols,
        symbol_lines=sorted(symbol_lines),
        dynamic=dynamic,
        notes=notes,
        has_symtab=has_symtab,
        debug_sections=tuple(n for n in sections if n.startswith((".debug_", ".zdebug_"))),
    )
    if elf.has_dwarf_info() and ".debug_info" in sections:
        info.dwarf = _dwarf(elf)
    return info


def _dwarf(elf: ELFFile) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    try:
        dwarf = elf.get_dwarf_info(relocate_dwarf_sections=False)
        for i, cu in enumerate(dwarf.iter_CUs()):
            if i >= MAX_CUS:
                break
            top = cu.get_top_DIE()
            attrs: dict[str, str] = {}
            for key in ("DW_AT_producer", "DW_AT_comp_dir", "DW_AT_name", "DW_AT_language"):
                if key in top.attributes:
                    attrs[key] = _str(top.attributes[key].value)
            label = f"CU#{i}"
            out[label] = attrs
    except Exception as exc:  # DWARF in the wild is messy; say so instead of failing
        out["(unreadable)"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def strings_of(data: bytes) -> list[str]:
    return [s.decode("utf-8", "replace") for s in data.split(b"\x00") if s]


class ElfComparator:
    name = "elf"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return head.startswith(ELF_MAGIC)

    def _load(self, blob: Blob, engine: EngineApi) -> ElfInfo:
        """Parse in memory, up to the in-memory limit (the parser reads every section)."""
        bound = engine.ctx.memory_bound
        size = blob.known_size()
        if size is not None and size > bound:
            raise memory_limit(f"{blob.name} (ELF)", size, bound)
        return load_elf(io.BytesIO(blob.read_all(bound)), blob.name)

    def compare(
        self, a: Blob, b: Blob, path: tuple[str, ...], engine: EngineApi, depth: int
    ) -> DiffNode | None:
        la, lb = self._load(a, engine), self._load(b, engine)
        where = "/".join(path)
        for info, side in ((la, engine.ctx.evidence.left), (lb, engine.ctx.evidence.right)):
            for attrs in info.dwarf.values():
                comp_dir = attrs.get("DW_AT_comp_dir")
                if comp_dir:
                    side.add_build_dir(comp_dir, f"DW_AT_comp_dir in {where}")
        children = list(self._children(la, lb, path, engine))
        notes: list[str] = []
        if la.has_symtab != lb.has_symtab or bool(la.debug_sections) != bool(lb.debug_sections):

            def state(x: ElfInfo) -> str:
                parts = []
                parts.append("has .symtab" if x.has_symtab else "no .symtab")
                parts.append(
                    f"debug sections {', '.join(x.debug_sections[:4])}"
                    if x.debug_sections
                    else "no debug sections"
                )
                return "; ".join(parts)

            notes.append(f"stripping differs: left {state(la)}; right {state(lb)}")
        if not children and not notes:
            return None
        sections = [c.name for c in children if c.kind is NodeKind.ELF_SECTION]
        summary = "ELF differs"
        if sections:
            summary += " in " + ", ".join(sections[:6]) + (" ..." if len(sections) > 6 else "")
        else:
            summary = describe_children(children, "ELF")
        return DiffNode(
            path=path,
            kind=NodeKind.ELF,
            change=Change.CONTENT,
            left=Side.of(digest=a.digest(), size=a.known_size()),
            right=Side.of(digest=b.digest(), size=b.known_size()),
            summary=summary,
            notes=tuple(notes),
            children=engine.cap(children, path),
        )

    def _children(
        self, la: ElfInfo, lb: ElfInfo, path: tuple[str, ...], engine: EngineApi
    ) -> Iterator[DiffNode]:
        limit = engine.ctx.diff_lines
        for key, value in la.header.items():
            if lb.header.get(key) != value:
                yield field_node((*path, "ELF header"), key, value, lb.header.get(key))
        # sections present on one side only
        for name, sec in la.sections.items():
            if name not in lb.sections:
                yield _presence(path, sec, left=True)
        for name, sec in lb.sections.items():
            if name not in la.sections:
                yield _presence(path, sec, left=False)
        for name, sa in la.sections.items():
            sb = lb.sections.get(name)
            if sb is None:
                continue
            node = self._section(la, lb, sa, sb, (*path, name), limit)
            if node is not None:
                yield node
        symbols = la.has_symtab and lb.has_symtab
        listings = (
            ("program headers", "program headers", la.segments, lb.segments, NodeKind.ELF_SECTION),
            (
                "symbols",
                "symbol table",
                la.symbol_lines if symbols else [],
                lb.symbol_lines if symbols else [],
                NodeKind.TEXT,
            ),
            ("dynamic", "dynamic entries", la.dynamic, lb.dynamic, NodeKind.TEXT),
        )
        for name, what, left, right, kind in listings:
            if left == right:
                continue
            node = text_node(
                (*path, name), "\n".join(left), "\n".join(right), limit=limit, what=what, kind=kind
            )
            if node is not None:
                yield node
        for key in sorted(set(la.notes) | set(lb.notes)):
            if la.notes.get(key) != lb.notes.get(key):
                yield field_node((*path, "notes"), key, la.notes.get(key), lb.notes.get(key))
        for cu in sorted(set(la.dwarf) | set(lb.dwarf)):
            ca, cb = la.dwarf.get(cu, {}), lb.dwarf.get(cu, {})
            label = ca.get("DW_AT_name") or cb.get("DW_AT_name") or cu
            for key in sorted(set(ca) | set(cb)):
                if ca.get(key) != cb.get(key):
                    yield field_node((*path, "DWARF", label), key, ca.get(key), cb.get(key))

    def _section(
        self,
        la: ElfInfo,
        lb: ElfInfo,
        sa: SectionInfo,
        sb: SectionInfo,
        path: tuple[str, ...],
        limit: int,
    ) -> DiffNode | None:
        header_fields = []
        for key in ("type", "flags", "addr", "size"):
            va, vb = getattr(sa, key), getattr(sb, key)
            if va != vb:
                header_fields.append(
                    field_node(
                        path,
                        f"sh_{key}",
                        hex(va) if isinstance(va, int) else va,
                        hex(vb) if isinstance(vb, int) else vb,
                    )
                )
        if sa.data is None or sb.data is None or sa.data == sb.data:
            if not header_fields:
                return None
            return DiffNode(
                path=path,
                kind=NodeKind.ELF_SECTION,
                change=Change.METADATA,
                left=Side.of(size=sa.size),
                right=Side.of(size=sb.size),
                summary="section header differs: " + ", ".join(f.name for f in header_fields),
                children=tuple(header_fields),
            )
        name = sa.name.split("#")[0]
        if name in STRING_SECTIONS:
            node = text_node(
                path,
                "\n".join(strings_of(sa.data)),
                "\n".join(strings_of(sb.data)),
                limit=limit,
                what="strings",
                kind=NodeKind.ELF_SECTION,
                left_side=Side.of(size=sa.size),
                right_side=Side.of(size=sb.size),
            )
            if node is None:  # same strings, different bytes (padding, order of duplicates)
                node = byte_node(
                    path, sa.data, sb.data, kind=NodeKind.ELF_SECTION, what="section bytes"
                )
        else:
            node = byte_node(
                path, sa.data, sb.data, kind=NodeKind.ELF_SECTION, what="section bytes"
            )
            if node is not None and (la.symbols or lb.symbols):
                regions = _symbol_regions(la, lb, sa, sb, path)
                if regions:
                    where = ", ".join(r.name for r in regions[:4])
                    node = node.model_copy(
                        update={"children": tuple(regions), "summary": f"{node.summary} in {where}"}
                    )
        if node is None:
            return None
        if header_fields:
            node = node.model_copy(update={"children": (*node.children, *header_fields)})
        role = _role(sa)
        if role is not None:
            node = node.model_copy(update={"notes": (*node.notes, role)})
        return node


def _role(sec: SectionInfo) -> str | None:
    """What a section's bytes are, for the classifier: code, addresses, or neither."""
    if sec.flags & SHF_EXECINSTR:
        return CODE_NOTE
    base = sec.name.split("#")[0]
    if sec.type in ("SHT_RELA", "SHT_REL", "SHT_RELR", "SHT_DYNAMIC") or base in ADDRESS_SECTIONS:
        return ADDRESS_NOTE
    return None


def _presence(path: tuple[str, ...], sec: SectionInfo, *, left: bool) -> DiffNode:
    side = Side.of(size=sec.size, value=sec.type)
    return DiffNode(
        path=(*path, sec.name),
        kind=NodeKind.ELF_SECTION,
        change=Change.REMOVED if left else Change.ADDED,
        left=side if left else None,
        right=None if left else side,
        summary=f"section only on the {'left' if left else 'right'} ({sec.size} bytes, {sec.type})",
    )


def _symbol_regions(
    la: ElfInfo, lb: ElfInfo, sa: SectionInfo, sb: SectionInfo, path: tuple[str, ...]
) -> list[DiffNode]:
    """Differing regions of a section, each named by the symbol that holds it."""
    a, b = sa.data or b"", sb.data or b""
    n = min(len(a), len(b))
    regions: list[tuple[int, int]] = []
    for start, end in differing_runs(a, b, 4096):
        if regions and start - regions[-1][1] <= REGION_GAP:
            regions[-1] = (regions[-1][0], end)
        else:
            if len(regions) >= MAX_REGIONS:
                break
            regions.append((start, end))
    if not regions and len(a) != len(b):
        regions.append((n, n))
    nodes: list[DiffNode] = []
    seen: set[str] = set()
    if not (sa.flags & 2) or not any(
        la.symbol_at(sa.addr + s) or lb.symbol_at(sb.addr + s) for s, _ in regions
    ):
        return []  # not loaded or no symbol covers it: the section node says where
    for start, end in regions:
        sym = la.symbol_at(sa.addr + start) or lb.symbol_at(sb.addr + start)
        if sym is not None:
            label, rel = sym[0], f"{sym[0]}+0x{sym[1]:x}"
        else:
            label = rel = f"0x{sa.addr + start:x}"
        if label in seen:
            continue
        seen.add(label)
        count = count_differing(a[start : end + 1], b[start : end + 1]) if end < n else 0
        nodes.append(
            DiffNode(
                path=(*path, label),
                kind=NodeKind.SYMBOL,
                change=Change.CONTENT,
                left=Side.of(value=window(a, start)),
                right=Side.of(value=window(b, start)),
                summary=f"{count} byte(s) differ at {rel} (address 0x{sa.addr + start:x})",
            )
        )
    return nodes
