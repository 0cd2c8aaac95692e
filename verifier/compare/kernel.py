"""Linux bzImage kernels: version string, setup header, embedded config, the vmlinux inside.

The version string lies at ``0x200 + kernel_version`` (setup header field at 0x20E).
The compressed payload (``payload_offset``/``payload_length`` at 0x248/0x24C, from the
protected-mode start) is decompressed when it is gzip, xz or lzma (zstd through the
``zstd`` tool when installed) and searched for the ``IKCFG_ST`` config block
(CONFIG_IKCONFIG); the decompressed vmlinux is compared as an ELF.
"""

from __future__ import annotations

import lzma
import re
import struct
import subprocess
import threading
import zlib

from enclave_audit import tools
from enclave_audit.errors import BuildStepFailed, EnvironmentProblem
from enclave_audit.limits import ByteBudget, memory_limit
from enclave_audit.model.difference import Change, DiffNode, NodeKind, Side
from verifier.compare.base import Blob, BytesBlob, EngineApi
from verifier.compare.nodes import field_node, importance
from verifier.compare.text import text_node

MAX_IKCONFIG = 4 << 20

#: ``release (user@host) (compiler) #N flags date``: Linux's UTS version line
_UTS = re.compile(
    r"^(?P<release>\S+) \((?P<builder>[^()]*@[^()]*)\)(?: \((?P<compiler>.*)\))?"
    r" #(?P<number>\S+)(?P<rest>.*)$"
)
_UTS_DATE = re.compile(
    r"^(?P<flags>.*?)\s*(?P<date>(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]?\d"
    r" \d\d:\d\d:\d\d(?: [A-Z]{2,5})? \d{4})$"
)
#: the parts of a kernel version line, as comparator field names
VERSION_FIELDS = (
    "version: release",
    "version: build user@host",
    "version: compiler",
    "version: build number",
    "version: flags",
    "version: build time",
)


def version_parts(version: str | None) -> dict[str, str]:
    """A kernel version line split into release, builder, compiler, counter, flags, time."""
    if version is None:
        return {}
    m = _UTS.match(version)
    if not m:
        return {"version": version}
    parts = {
        "version: release": m.group("release"),
        "version: build user@host": m.group("builder"),
        "version: build number": m.group("number"),
    }
    if m.group("compiler"):
        parts["version: compiler"] = m.group("compiler")
    rest = m.group("rest").strip()
    d = _UTS_DATE.match(rest)
    if d:
        parts["version: flags"] = d.group("flags").strip()
        parts["version: build time"] = d.group("date")
    else:
        parts["version: flags"] = rest
    return parts


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


def payload(
    data: bytes, limit: int = 512 << 20, budget: ByteBudget | None = None
) -> tuple[str, bytes | None, str]:
    """(compression, decompressed vmlinux or None, note).

    At most ``limit`` bytes are decompressed (in memory); what is decompressed is charged
    to ``budget``.  Past ``limit``, :class:`~enclave_audit.limits.LimitExceeded`.
    """
    (proto,) = struct.unpack_from("<H", data, 0x206)
    if proto < 0x0208:
        return "unknown", None, "boot protocol before 2.08: no payload fields"
    setup_sects = data[0x1F1] or 4
    pm_start = (setup_sects + 1) * 512
    off, length = struct.unpack_from("<II", data, 0x248)
    blob = data[pm_start + off : pm_start + off + length]

    def bounded(method: str, out: bytes, done: bool) -> tuple[str, bytes | None, str]:
        if budget is not None:
            budget.charge(len(out), "kernel payload")
        if not done and len(out) > limit:
            raise memory_limit("kernel payload (vmlinux)", len(out), limit)
        return method, out, ""

    try:
        if blob.startswith(b"\x1f\x8b"):
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = d.decompress(blob, limit + 1)
            return bounded("gzip", out, d.eof)
        if blob.startswith(b"\xfd7zXZ\x00"):
            x = lzma.LZMADecompressor()
            out = x.decompress(blob, limit + 1)
            return bounded("xz", out, x.eof)
        if blob.startswith(b"\x5d\x00\x00"):
            x = lzma.LZMADecompressor(lzma.FORMAT_ALONE)
            out = x.decompress(blob, limit + 1)
            return bounded("lzma", out, x.eof)
        if blob.startswith(b"\x28\xb5\x2f\xfd"):
            if tools.which("zstd") is None:
                return (
                    "zstd",
                    None,
                    "payload is zstd: install the Debian package 'zstd' to inspect it",
                )
            out, ok = _zstd(blob, limit)
            if not ok and len(out) <= limit:
                return "zstd", None, "zstd could not decompress the payload"
            return bounded("zstd", out, len(out) <= limit)
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


def _zstd(blob: bytes, limit: int) -> tuple[bytes, bool]:
    """Decompress with the zstd tool, reading at most ``limit + 1`` bytes of its output."""
    zstd = tools.which("zstd")
    assert zstd is not None
    proc = subprocess.Popen(
        [zstd, "-d", "-c", "-q"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def feed() -> None:
        try:
            assert proc.stdin is not None
            proc.stdin.write(blob)
            proc.stdin.close()
        except OSError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = bytearray()
    while len(out) <= limit:
        chunk = proc.stdout.read(1 << 20)
        if not chunk:
            break
        out += chunk
    if len(out) > limit:
        proc.kill()
    proc.stdout.close()
    code = proc.wait()
    writer.join(timeout=5)
    return bytes(out), code == 0


def ikconfig(vmlinux: bytes) -> str | None:
    start = vmlinux.find(b"IKCFG_ST")
    if start < 0:
        return None
    end = vmlinux.find(b"IKCFG_ED", start)
    raw = vmlinux[start + 8 : end if end > 0 else start + 8 + (1 << 20)]
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return d.decompress(raw, MAX_IKCONFIG).decode("utf-8", "replace")
    except (OSError, EOFError, zlib.error):
        return None


class KernelComparator:
    name = "bzImage"

    def recognizes(self, blob: Blob, head: bytes) -> bool:
        return is_bzimage(head)

    def compare(
        self, a: Blob, b: Blob, path: tuple[str, ...], engine: EngineApi, depth: int
    ) -> DiffNode | None:
        limit = engine.ctx.memory_bound
        da, db = a.read_all(limit), b.read_all(limit)
        children: list[DiffNode] = []
        notes: list[str] = []
        va, vb = version_string(da), version_string(db)
        if va != vb:
            pa, pb = version_parts(va), version_parts(vb)
            for key in dict.fromkeys([*pa, *pb]):
                if pa.get(key) != pb.get(key):
                    children.append(field_node(path, key, pa.get(key), pb.get(key)))
        fa, fb = setup_fields(da), setup_fields(db)
        for key in dict.fromkeys([*fa, *fb]):
            if fa.get(key) != fb.get(key):
                children.append(field_node((*path, "setup header"), key, fa.get(key), fb.get(key)))
        ca, vml_a, note_a = payload(da, limit, engine.ctx.decompression)
        cb, vml_b, note_b = payload(db, limit, engine.ctx.decompression)
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
            inner = engine.compare(
                BytesBlob("vmlinux", vml_a),
                BytesBlob("vmlinux", vml_b),
                (*path, "vmlinux"),
                depth + 1,
            )
            if inner is not None:
                children.append(inner)
        elif vml_a is None or vml_b is None:
            notes.append("the decompressed kernels were not compared (see above)")
        if not children:
            raw = engine.bytes_node(a, b, (*path, "bytes"))
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
