"""Linux bzImage kernels: version string, setup header, embedded config, the vmlinux inside.

The version string lies at ``0x200 + kernel_version`` (setup header field at 0x20E).
The compressed payload (``payload_offset``/``payload_length`` at 0x248/0x24C, from the
protected-mode start) is decompressed when it is gzip, xz or lzma (zstd through the
``zstd`` tool when installed) and searched for the ``IKCFG_ST`` config block
(CONFIG_IKCONFIG); the decompressed vmlinux is compared as an ELF.
"""

from __future__ import annotations

import gzip
import lzma
import struct
import zlib
from typing import TYPE_CHECKING

from enclave_audit import tools
from enclave_audit.errors import BuildStepFailed, EnvironmentProblem
from enclave_audit.model.difference import Change, DiffNode, NodeKind, Side
from verifier.compare.base import Blob, BytesBlob
from verifier.compare.text import text_node

if TYPE_CHECKING:
    from verifier.compare.engine import Engine

MAX_KERNEL = 256 << 20
MAX_VMLINUX = 512 << 20


def is_bzimage(head: bytes) -> bool:
    return len(head) > 0x210 and head[0x202:0x206] == b"HdrS"


def version_string(data: bytes) -> str | None:
    if not is_bzimage(data):
        return None
    (offset,) = struct.unpack_from("<H", data, 0x20E)
    if offset == 0:
        return None
    start = 0x200 + offset
    end = data.find(b"\x00", start, start + 512)
    if end < 0:
        return None
    return data[start:end].decode("utf-8", "replace")


def setup_fields(data: bytes) -> dict[str, str]:
    (proto,) = struct.unpack_from("<H", data, 0x206)
    out = {
        "boot protocol": f"{proto >> 8}.{proto & 0xFF:02d}",
        "setup_sects": str(data[0x1F1]),
        "syssize": str(struct.unpack_from("<I", data, 0x1F4)[0]),
    }
    if proto >= 0x0208 and len(data) > 0x250:
        out["payload_length"] = str(struct.unpack_from("<I", data, 0x24C)[0])
    return out


def payload(data: bytes) -> tuple[str, bytes | None, str]:
    """(compression, decompressed vmlinux or None, note)."""
    (proto,) = struct.unpack_from("<H", data, 0x206)
    if proto < 0x0208:
        return "unknown", None, "boot protocol before 2.08: no payload fields"
    setup_sects = data[0x1F1] or 4
    pm_start = (setup_sects + 1) * 512
    off, length = struct.unpack_from("<II", data, 0x248)
    blob = data[pm_start + off : pm_start + off + length]
    try:
        if blob.startswith(b"\x1f\x8b"):
            return "gzip", _bounded_gzip(blob), ""
        if blob.startswith(b"\xfd7zXZ\x00"):
            return "xz", lzma.LZMADecompressor().decompress(blob, MAX_VMLINUX), ""
        if blob.startswith(b"\x5d\x00\x00"):
            return (
                "lzma",
                lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(blob, MAX_VMLINUX),
                "",
            )
        if blob.startswith(b"\x28\xb5\x2f\xfd"):
            if tools.which("zstd") is None:
                return (
                    "zstd",
                    None,
                    "payload is zstd: install the Debian package 'zstd' to inspect it",
                )
            done = tools.run(["zstd", "-d", "-c", "-q"], input=blob, what="zstd -d", check=False)
            if done.returncode not in (0, 1) or not done.stdout:
                return "zstd", None, "zstd could not decompress the payload"
            return "zstd", done.stdout, ""
        if blob.startswith(b"\x02\x21\x4c\x18"):
            return "lz4", None, "payload is lz4: not inspected"
        if blob.startswith(b"BZh"):
            return "bzip2", None, "payload is bzip2: not inspected"
    except (
        lzma.LZMAError,
        zlib.error,
        EOFError,
        OSError,
        BuildStepFailed,
        EnvironmentProblem,
    ) as exc:
        return "unknown", None, f"payload unreadable: {exc}"
    return "unknown", None, "payload compression not recognized"


def _bounded_gzip(blob: bytes) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(blob, MAX_VMLINUX)
    return out


def ikconfig(vmlinux: bytes) -> str | None:
    start = vmlinux.find(b"IKCFG_ST")
    if start < 0:
        return None
    end = vmlinux.find(b"IKCFG_ED", start)
    raw = vmlinux[start + 8 : end if end > 0 else start + 8 + (1 << 20)]
    try:
        return gzip.decompress(raw).decode("utf-8", "replace")
    except (OSError, EOFError, zlib.error):
        return None


class KernelComparator:
    name = "bzImage"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return is_bzimage(head)

    def compare(self, a: Blob, b: Blob, path: tuple[str, ...], engine: Engine) -> DiffNode | None:
        from verifier.compare.engine import field_node, importance

        da, db = a.read_all(MAX_KERNEL), b.read_all(MAX_KERNEL)
        children: list[DiffNode] = []
        notes: list[str] = []
        va, vb = version_string(da), version_string(db)
        if va != vb:
            children.append(field_node(path, "version", va, vb))
        fa, fb = setup_fields(da), setup_fields(db)
        for key in dict.fromkeys([*fa, *fb]):
            if fa.get(key) != fb.get(key):
                children.append(field_node((*path, "setup header"), key, fa.get(key), fb.get(key)))
        ca, vml_a, note_a = payload(da)
        cb, vml_b, note_b = payload(db)
        if ca != cb:
            children.append(field_node(path, "payload compression", ca, cb))
        for note in dict.fromkeys([note_a, note_b]):
            if note:
                notes.append(note)
        if vml_a is not None and vml_b is not None:
            cfg_a, cfg_b = ikconfig(vml_a), ikconfig(vml_b)
            if cfg_a is None and cfg_b is None:
                notes.append(
                    "no embedded config on either side (CONFIG_IKCONFIG not set):"
                    " configs not compared"
                )
            else:
                node = text_node(
                    (*path, "config"),
                    cfg_a or "",
                    cfg_b or "",
                    limit=engine.ctx.diff_lines,
                    what="kernel config",
                )
                if node is not None:
                    if cfg_a is None or cfg_b is None:
                        node = node.model_copy(
                            update={"notes": ("embedded config on one side only",)}
                        )
                    children.append(node)
            inner = engine.compare_nested(
                BytesBlob("vmlinux", vml_a), BytesBlob("vmlinux", vml_b), (*path, "vmlinux")
            )
            if inner is not None:
                children.append(inner)
        elif vml_a is None or vml_b is None:
            notes.append("the decompressed kernels were not compared (see above)")
        if not children:
            from verifier.compare.binary import BinaryComparator

            raw = BinaryComparator().compare(a, b, (*path, "bytes"), engine)
            if raw is None:
                return None
            children.append(raw)
        summary = "kernel differs"
        if va != vb:
            summary += f": version {va!r} vs {vb!r}"
        elif va:
            summary += f" (same version string {va!r})"
        return DiffNode(
            path=path,
            kind=NodeKind.KERNEL,
            change=Change.CONTENT,
            left=Side.of(digest=a.digest(), size=len(da), value=va),
            right=Side.of(digest=b.digest(), size=len(db), value=vb),
            summary=summary,
            notes=tuple(notes),
            children=tuple(sorted(children, key=importance)),
        )
