"""EIF images: header fields, then each section, labelled with the PCRs its data feeds.

Sections are paired by role (kernel, cmdline, ramdisk[i], signature, metadata) and
compared through the engine as slices of the files, so nothing loads a whole image.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.eif import EifReader, EifSection, SectionType, section_pcrs
from enclave_audit import strictjson
from enclave_audit.errors import EifError, InvalidInput
from enclave_audit.model.difference import Change, DiffNode, NodeKind, Side
from verifier.compare.base import CHUNK, Blob, SliceBlob, cheap_side

if TYPE_CHECKING:
    from verifier.compare.engine import Engine

EIF_MAGIC = b".eif"
MAX_METADATA = 1 << 20


def section_labels(reader: EifReader) -> dict[str, EifSection]:
    out: dict[str, EifSection] = {}
    ramdisk = 0
    for s in reader.sections:
        if s.type is SectionType.RAMDISK:
            label = f"ramdisk[{ramdisk}]"
            ramdisk += 1
        else:
            label = s.type.label
            if label in out:
                label = f"{label}[{s.index}]"
        out[label] = s
    return out


def with_pcrs(node: DiffNode, pcrs: tuple[int, ...]) -> DiffNode:
    """Mark a node and everything below it as moving ``pcrs``."""
    return node.model_copy(
        update={"pcrs": pcrs, "children": tuple(with_pcrs(c, pcrs) for c in node.children)}
    )


def _local(blob: Blob, engine: Engine) -> Path:
    path = blob.local_path()
    if path is not None:
        return path
    fd_path = engine.ctx.workdir / f"eif-{id(blob)}.eif"
    with blob.open() as src, open(fd_path, "wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)
    return fd_path


def _flatten(data: Any, prefix: str = "", depth: int = 0) -> dict[str, str]:
    if isinstance(data, dict) and depth < 3:
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key), depth + 1))
        return out
    return {prefix or "(value)": json.dumps(data, sort_keys=True)}


class EifComparator:
    name = "eif"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return head.startswith(EIF_MAGIC)

    def compare(self, a: Blob, b: Blob, path: tuple[str, ...], engine: Engine) -> DiffNode | None:
        from verifier.compare.engine import field_node, importance

        pa, pb = _local(a, engine), _local(b, engine)
        try:
            ra, rb = EifReader.open(pa), EifReader.open(pb)
        except EifError as exc:
            raise InvalidInput(exc.message) from None
        with ra, rb:
            children: list[DiffNode] = []
            ha, hb = ra.header, rb.header
            for key in ("version", "arch", "default_mem", "default_cpus", "num_sections"):
                va, vb = getattr(ha, key), getattr(hb, key)
                if va != vb:
                    children.append(field_node((*path, "header"), key, va, vb))
            if ha.crc32 != hb.crc32:
                crc = field_node((*path, "header"), "crc32", f"{ha.crc32:08x}", f"{hb.crc32:08x}")
                children.append(
                    crc.model_copy(
                        update={"notes": ("the CRC covers every section: it follows any change",)}
                    )
                )
            la, lb = section_labels(ra), section_labels(rb)
            pcrs_a, pcrs_b = section_pcrs(ra), section_pcrs(rb)
            moved: set[int] = set()
            for label in dict.fromkeys([*la, *lb]):
                sa, sb = la.get(label), lb.get(label)
                pcrs = tuple(
                    sorted(
                        set(pcrs_a.get(sa.index, []) if sa else [])
                        | set(pcrs_b.get(sb.index, []) if sb else [])
                    )
                )
                if sa is not None and sb is not None and sa.type is SectionType.SIGNATURE:
                    pcrs = (8,)
                spath = (*path, label)
                is_signature = sa is not None and sa.type is SectionType.SIGNATURE
                node: DiffNode | None
                if sa is None or sb is None:
                    present = sa or sb
                    assert present is not None
                    side = Side.of(size=present.size, value=present.type.label)
                    node = DiffNode(
                        path=spath,
                        kind=NodeKind.SECTION,
                        change=Change.ADDED if sa is None else Change.REMOVED,
                        left=side if sa else None,
                        right=side if sb else None,
                        summary=f"{present.type.label} section only on the"
                        f" {'right' if sa is None else 'left'}",
                    )
                elif sa.type is SectionType.METADATA:
                    node = self._metadata(ra, rb, sa, sb, spath)
                else:
                    ba = SliceBlob(pa, sa.data_offset, sa.size, label)
                    bb = SliceBlob(pb, sb.data_offset, sb.size, label)
                    engine.ctx.progress.start(f"comparing {label}", total=max(sa.size, sb.size))
                    node = engine.compare_nested(ba, bb, spath)
                    engine.ctx.progress.done()
                    if node is not None and node.kind not in (NodeKind.KERNEL, NodeKind.ARCHIVE):
                        node = node.model_copy(
                            update={"notes": (*node.notes, f"EIF section {label}")}
                        )
                if node is None:
                    continue
                if is_signature:
                    node = node.model_copy(
                        update={
                            "notes": (
                                *node.notes,
                                "the signature covers PCR0: it changes with any measured change;"
                                " PCR8 changes only if the signing certificate differs",
                            )
                        }
                    )
                moved.update(p for p in pcrs if p != 8)
                children.append(with_pcrs(node, pcrs))
        if not children:
            return None
        sections = [c.name for c in children if c.kind is not NodeKind.FIELD]
        summary = f"EIF differs in {', '.join(sections)}" if sections else "EIF header differs"
        if moved:
            summary += f"; PCRs affected: {', '.join(f'PCR{p}' for p in sorted(moved))}"
        else:
            summary += "; no measured section differs (PCR0/1/2 equal)"
        return DiffNode(
            path=path,
            kind=NodeKind.IMAGE,
            change=Change.CONTENT,
            left=cheap_side(a, engine.ctx.memory_bound),
            right=cheap_side(b, engine.ctx.memory_bound),
            summary=summary,
            pcrs=tuple(sorted(moved)),
            children=tuple(sorted(children, key=importance)),
        )

    def _metadata(
        self, ra: EifReader, rb: EifReader, sa: EifSection, sb: EifSection, path: tuple[str, ...]
    ) -> DiffNode | None:
        from verifier.compare.binary import byte_node
        from verifier.compare.engine import field_node

        da, db = ra.read(sa, limit=MAX_METADATA), rb.read(sb, limit=MAX_METADATA)
        if da == db:
            return None
        try:  # strict: bounded numbers and nesting, no duplicate keys or lone surrogates
            ja = _flatten(strictjson.loads(da, what="metadata", error=EifError))
            jb = _flatten(strictjson.loads(db, what="metadata", error=EifError))
        except EifError:
            return byte_node(path, da, db, kind=NodeKind.SECTION, what="metadata bytes")
        fields = [
            field_node(path, k, ja.get(k), jb.get(k))
            for k in dict.fromkeys([*ja, *jb])
            if ja.get(k) != jb.get(k)
        ]
        summary = (
            "metadata differs: " + ", ".join(f.name for f in fields)
            if fields
            else "metadata bytes differ, same JSON values (key order or spacing)"
        )
        return DiffNode(
            path=path,
            kind=NodeKind.SECTION,
            change=Change.CONTENT,
            left=Side.of(size=len(da)),
            right=Side.of(size=len(db)),
            summary=summary,
            children=tuple(fields),
            notes=("metadata is not measured: it moves no PCR",),
        )
