"""EIF images: header fields, then each section, labelled with the PCRs its data feeds.

Sections are paired by role (kernel, cmdline, ramdisk[i], signature, metadata) and
compared through the engine as slices of the files, so nothing loads a whole image.
Ramdisk sections are read as the kernel reads an initramfs (every archive, compressed
segments) whatever their first bytes.  The cmdline is security-relevant by role; the
signature is explained only by what it signs and who signed it.  Each side's
``BuildTime`` is recorded as evidence (the build's plausible window).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from builder.eif import EifReader, EifSection, SectionType, section_pcrs
from builder.eif.signature import SignatureInfo, parse_signature_section
from enclave_audit.errors import EifError, EnclaveAuditError, InvalidInput
from enclave_audit.model.difference import (
    Cause,
    CauseHint,
    Change,
    Confidence,
    DiffNode,
    NodeKind,
    Side,
)
from enclave_runtime import strictjson
from verifier.compare.base import CHUNK, Blob, EngineApi, SliceBlob, cheap_side
from verifier.compare.binary import byte_node
from verifier.compare.cpio import CpioComparator
from verifier.compare.evidence import SideEvidence
from verifier.compare.nodes import field_node, importance, with_pcrs

EIF_MAGIC = b".eif"
MAX_METADATA = 1 << 20
MAX_SIGNATURE = 64 << 10
_RAMDISKS = CpioComparator()


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


def _local(blob: Blob, engine: EngineApi) -> Path:
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

    def compare(
        self, a: Blob, b: Blob, path: tuple[str, ...], engine: EngineApi, depth: int
    ) -> DiffNode | None:
        pa, pb = _local(a, engine), _local(b, engine)
        try:
            ra, rb = EifReader.open(pa), EifReader.open(pb)
        except EifError as exc:
            raise InvalidInput(exc.message) from None
        with ra, rb:
            _record_build_time(ra, engine.ctx.evidence.left)
            _record_build_time(rb, engine.ctx.evidence.right)
            signatures: list[tuple[int, EifSection, EifSection]] = []
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
                    if sa.type is SectionType.RAMDISK and sb.type is SectionType.RAMDISK:
                        node = engine.compare_with(_RAMDISKS, ba, bb, spath, depth + 1)
                    else:
                        node = engine.compare(ba, bb, spath, depth + 1)
                    engine.ctx.progress.done()
                    if node is not None and node.kind not in (NodeKind.KERNEL, NodeKind.ARCHIVE):
                        node = node.model_copy(
                            update={"notes": (*node.notes, f"EIF section {label}")}
                        )
                if node is None:
                    continue
                if sa is not None and sa.type is SectionType.CMDLINE:
                    node = node.model_copy(update={"causes": (*node.causes, _CMDLINE_HINT)})
                if is_signature and sa is not None and sb is not None:
                    signatures.append((len(children), sa, sb))
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
            for at, sa, sb in signatures:
                children[at] = _explain_signature(children[at], ra, rb, sa, sb, moved)
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


_CMDLINE_HINT = CauseHint(
    cause=Cause.SECURITY,
    evidence="the kernel command line (init, security options, debug switches) changed",
    matched="the EIF cmdline section",
    against="its role: the kernel reads its command line from it (PCR1)",
    confidence=Confidence.HIGH,
)


def _record_build_time(reader: EifReader, side: SideEvidence) -> None:
    try:
        meta = reader.metadata().get("BuildMetadata")
    except EnclaveAuditError:
        return
    value = meta.get("BuildTime") if isinstance(meta, dict) else None
    if not isinstance(value, str):
        return
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return
    if when.tzinfo is not None:
        side.add_time(when.timestamp(), "EIF BuildTime")


def _signature_info(reader: EifReader, section: EifSection) -> SignatureInfo | None:
    try:
        return parse_signature_section(reader.read(section, limit=MAX_SIGNATURE))
    except EnclaveAuditError:
        return None


def _fingerprint(info: SignatureInfo) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    der = info.certificate.public_bytes(Encoding.DER)
    subject = info.certificate.subject.rfc4514_string()
    return f"sha256:{hashlib.sha256(der).hexdigest()} ({subject})"


def _explain_signature(
    node: DiffNode,
    ra: EifReader,
    rb: EifReader,
    sa: EifSection,
    sb: EifSection,
    moved: set[int],
) -> DiffNode:
    """What differs in the signature: the certificate (PCR8), the signed PCR0, or only
    the randomized ECDSA value."""
    ia, ib = _signature_info(ra, sa), _signature_info(rb, sb)
    if ia is None or ib is None:
        return node
    fields: list[DiffNode] = []
    hints: list[CauseHint] = []
    fa, fb = _fingerprint(ia), _fingerprint(ib)
    if fa != fb:
        cert = field_node(node.path, "signing certificate", fa, fb).model_copy(
            update={
                "causes": (
                    CauseHint(
                        cause=Cause.SECURITY,
                        evidence="another signing certificate: PCR8 changes",
                        matched=f"{fa} vs {fb}",
                        against="the certificates in both signature sections",
                        confidence=Confidence.HIGH,
                    ),
                ),
                "pcrs": (8,),
            }
        )
        fields.append(cert)
    pcr0_a = ia.signed_pcr0.hex() if ia.signed_pcr0 else None
    pcr0_b = ib.signed_pcr0.hex() if ib.signed_pcr0 else None
    if pcr0_a != pcr0_b:
        signed = field_node(node.path, "signed PCR0", pcr0_a, pcr0_b)
        if 0 in moved:
            hint = CauseHint(
                cause=Cause.DERIVED,
                evidence="the signature covers PCR0, and measured sections differ",
                matched=f"signed PCR0 {pcr0_a} vs {pcr0_b}",
                against="the measured sections compared above (PCR0 moves)",
                confidence=Confidence.HIGH,
            )
        else:
            hint = CauseHint(
                cause=Cause.SECURITY,
                evidence="the signed PCR0 differs although no measured section does",
                matched=f"signed PCR0 {pcr0_a} vs {pcr0_b}",
                against="the measured sections (all equal)",
                confidence=Confidence.HIGH,
            )
        fields.append(signed.model_copy(update={"causes": (hint,)}))
    elif fa == fb and ia.cose_valid and ib.cose_valid:
        hints.append(
            CauseHint(
                cause=Cause.RANDOM,
                evidence="same certificate and same signed PCR0; both signatures verify:"
                " ECDSA signatures differ by their random nonce",
                matched="signature bytes",
                against="the certificate and signed PCR0 of both sides, and each"
                " signature's verification",
                confidence=Confidence.HIGH,
            )
        )
    if not fields and not hints:
        return node
    return node.model_copy(
        update={
            "children": (*fields,),
            "causes": (*node.causes, *hints),
            "left": (node.left or Side()).model_copy(update={"value": None}),
            "right": (node.right or Side()).model_copy(update={"value": None}),
        }
    )
