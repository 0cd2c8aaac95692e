"""Python bytecode (.pyc, PEP 552 header): magic, flags, source mtime/size or hash, code objects."""

from __future__ import annotations

import importlib.util
import marshal
import struct
import types
from datetime import UTC, datetime

from enclave_audit.model.difference import Change, DiffNode, NodeKind, Side
from verifier.compare.base import Blob, EngineApi
from verifier.compare.binary import byte_node
from verifier.compare.nodes import field_node
from verifier.compare.text import text_node

#: bytecode magic number -> Python version (the ones a Debian image plausibly ships)
MAGIC_VERSIONS = {
    3413: "3.8",
    3425: "3.9",
    3439: "3.10",
    3495: "3.11",
    3531: "3.12",
    3571: "3.13",
}
MAX_PYC = 16 << 20


def magic_number(head: bytes) -> int | None:
    if len(head) < 16 or head[2:4] != b"\r\n":
        return None
    return int(struct.unpack_from("<H", head, 0)[0])


def header_fields(data: bytes) -> dict[str, str]:
    magic = magic_number(data)
    assert magic is not None
    flags = struct.unpack_from("<I", data, 4)[0]
    version = MAGIC_VERSIONS.get(magic, "unknown Python")
    out = {"magic": f"{magic} (Python {version})", "flags": str(flags)}
    if flags & 1:
        out["invalidation"] = "checked-hash" if flags & 2 else "unchecked-hash"
        out["source_hash"] = data[8:16].hex()
    else:
        out["invalidation"] = "timestamp"
        mtime = struct.unpack_from("<I", data, 8)[0]
        stamp = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out["source_mtime"] = f"{mtime} ({stamp})"
        out["source_size"] = str(struct.unpack_from("<I", data, 12)[0])
    return out


def code_lines(code: types.CodeType, out: list[str], depth: int = 0) -> None:
    if depth > 50 or len(out) > 20000:
        return
    name = getattr(code, "co_qualname", code.co_name)
    consts = [c for c in code.co_consts if not isinstance(c, types.CodeType)]
    out.append(f"{name}: co_filename={code.co_filename}")
    out.append(f"{name}: co_firstlineno={code.co_firstlineno}")
    out.append(f"{name}: co_names={code.co_names!r}")
    out.append(f"{name}: co_consts={consts!r}"[:2000])
    out.append(f"{name}: co_code={code.co_code.hex()}"[:2000])
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            code_lines(const, out, depth + 1)


class PycComparator:
    name = "pyc"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        magic = magic_number(head)
        return magic is not None and (magic in MAGIC_VERSIONS or blob.name.endswith(".pyc"))

    def compare(
        self, a: Blob, b: Blob, path: tuple[str, ...], engine: EngineApi, depth: int
    ) -> DiffNode | None:
        bound = min(MAX_PYC, engine.ctx.memory_bound)
        da, db = a.read_all(bound), b.read_all(bound)
        ha, hb = header_fields(da), header_fields(db)
        children: list[DiffNode] = []
        for key in dict.fromkeys([*ha, *hb]):
            if ha.get(key) != hb.get(key):
                children.append(field_node(path, key, ha.get(key), hb.get(key)))
        notes: list[str] = []
        current = importlib.util.MAGIC_NUMBER
        body_a, body_b = da[16:], db[16:]
        if body_a != body_b:
            if da[:4] == current and db[:4] == current:
                la: list[str] = []
                lb: list[str] = []
                try:
                    ca, cb = marshal.loads(body_a), marshal.loads(body_b)  # noqa: S302 - no code runs
                except (ValueError, EOFError, TypeError) as exc:
                    notes.append(f"code objects unreadable: {exc}")
                else:
                    if isinstance(ca, types.CodeType) and isinstance(cb, types.CodeType):
                        code_lines(ca, la)
                        code_lines(cb, lb)
                if la or lb:
                    node = text_node(
                        (*path, "code"),
                        "\n".join(la),
                        "\n".join(lb),
                        limit=engine.ctx.diff_lines,
                        what="code objects",
                    )
                    if node is None:
                        notes.append(
                            "code objects equal; the marshal bytes differ only in reference"
                            " flags (interning/refcount nondeterminism)"
                        )
                        node = DiffNode(
                            path=(*path, "code"),
                            kind=NodeKind.BINARY,
                            change=Change.CONTENT,
                            left=Side.of(size=len(body_a)),
                            right=Side.of(size=len(body_b)),
                            summary="marshal bytes differ, code objects equal",
                            notes=(
                                "marshal FLAG_REF bits differ: depends on object reference counts",
                            ),
                        )
                    children.append(node)
            else:
                notes.append("bytecode of another Python version: code objects compared as bytes")
                node = byte_node((*path, "code"), body_a, body_b, base=16, what="marshalled code")
                if node is not None:
                    children.append(node)
        if not children:
            return None
        return DiffNode(
            path=path,
            kind=NodeKind.PYC,
            change=Change.CONTENT,
            left=Side.of(digest=a.digest(), size=len(da)),
            right=Side.of(digest=b.digest(), size=len(db)),
            summary="pyc differs: " + ", ".join(c.name for c in children),
            notes=tuple(notes),
            children=engine.cap(children, path),
        )
