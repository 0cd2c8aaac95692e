"""Pure classifiers over a finished difference tree: likely causes, with the evidence shown.

Each classifier looks at what a node carries (field values, byte windows, unified
diffs, its place in an ELF or an EIF) and returns :class:`CauseHint` s.  Nothing here
knows a particular test case: the detectors work on the shape of the difference
(a token that parses as a clock, a path prefix that changed, a version after a tool
name, a line permutation, bytes that look random).  Leaves no classifier explains
get ``unknown``; every parent summarizes the causes found below it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from datetime import UTC, datetime

from enclave_audit.model.difference import Cause, CauseHint, Change, DiffNode, NodeKind

# --- clocks -------------------------------------------------------------------------------

TS_MIN = 946684800  # 2000-01-01
#: clocks after "now" are not build times (set per classification, see classify())
TS_MAX = 4102444800  # 2100-01-01, refined to now + 1 day by classify()
MAX_CLOCK_SKEW = 10 * 366 * 86400  # two builds' clocks differ by less than this

_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_DATE_PATTERNS = [
    re.compile(
        r"\b(19|20)\d\d-[01]\d-[0-3]\d"
        r"(?:[T ][0-2]\d:[0-5]\d(?::[0-6]\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)?"
    ),
    re.compile(r"\b(19|20)\d\d/[01]\d/[0-3]\d\b"),
    re.compile(
        rf"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)?,? ?(?:{_MONTHS}) +[0-3]?\d"
        r"(?: [0-2]\d:[0-5]\d:[0-6]\d)?(?: [A-Z]{3,4})? (19|20)\d\d\b"
    ),
    re.compile(rf"\b[0-3]?\d (?:{_MONTHS}) (19|20)\d\d\b"),
    re.compile(r"\b[0-2]\d:[0-5]\d:[0-6]\d\b"),
]
_UNIX = re.compile(r"(?<![\w.])\d{9,13}(?:\.\d+)?(?![\w.])")

# --- paths, tools, locales, random tokens ---------------------------------------------------

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.+@~%=-]+){2,}/?|(?:/[\w.+@~%=-]+){1,}/")
_TOOL = re.compile(
    r"(GCC|gcc|g\+\+|clang|LLVM|rustc|cargo|GNU (?:C\+\+|C|AS|ld|Fortran)\w*|GNU assembler|"
    r"Linker|ld\.(?:bfd|lld|gold)|"
    r"binutils|Python|cpython|CPython|go\d|Go |OpenJDK|javac|nasm|yasm|dpkg|debhelper|Debian)",
)
_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)*")
_LOCALE = re.compile(
    r"\b(?:[a-z]{2}_[A-Z]{2}(?:\.[\w-]+)?|C\.UTF-8|POSIX|UTF-8|utf8|ANSI_X3\.4-1968|ISO-8859-\d+|LANG=\S*|LC_\w+=\S*)"
)
_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_HEXTOKEN = re.compile(r"\b[0-9a-fA-F]{16,}\b")
_B64TOKEN = re.compile(r"[A-Za-z0-9+/_-]{22,}={0,2}")

OWNER_FIELDS = frozenset(
    {"uid", "gid", "uname", "gname", "owner", "group", "mode", "perm", "external_attr"}
)
TIME_FIELD = re.compile(r"(time|date|mtime|ctime|atime|epoch|stamp)", re.IGNORECASE)
DEBUG_SECTION = re.compile(r"^\.(z?debug_\w+|symtab|strtab)$")


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _delta(a: float, b: float) -> str:
    d = abs(int(b - a))
    days, rem = divmod(d, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    return (
        f"{days}d {hours:02d}:{minutes:02d}:{seconds:02d}"
        if days
        else f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    )


def _as_unix(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    for scale in (1, 1000):
        v = value / scale
        if TS_MIN <= v < TS_MAX:
            return v
    return None


# --- string detectors -----------------------------------------------------------------------


def _diff_span(a: str, b: str) -> tuple[int, int, int]:
    """(common prefix length, end of the differing part in a, end in b)."""
    p = 0
    n = min(len(a), len(b))
    while p < n and a[p] == b[p]:
        p += 1
    s = 0
    while s < n - p and a[len(a) - 1 - s] == b[len(b) - 1 - s]:
        s += 1
    return p, len(a) - s, len(b) - s


def _overlapping(pattern: re.Pattern[str], text: str, start: int, end: int) -> str | None:
    """The first match that covers part of [start, end) (or touches ``start`` if empty)."""
    for m in pattern.finditer(text):
        if end > start and m.start() < end and m.end() > start:
            return m.group(0)
        if end <= start and m.start() <= start <= m.end():
            return m.group(0)
    return None


def detect_strings(a: str, b: str) -> list[CauseHint]:
    """Causes for two differing strings (lines, field values, printable byte runs)."""
    hints: list[CauseHint] = []
    p, ea, eb = _diff_span(a, b)
    # timestamps: a date/time, or a unix clock, where the strings differ
    for pattern in _DATE_PATTERNS:
        da, db = _overlapping(pattern, a, p, ea), _overlapping(pattern, b, p, eb)
        if da and db and da != db:
            hints.append(
                CauseHint(
                    cause=Cause.TIMESTAMP, evidence=f"date/time {da.strip()!r} vs {db.strip()!r}"
                )
            )
            break
    else:
        ua, ub = _overlapping(_UNIX, a, p, ea), _overlapping(_UNIX, b, p, eb)
        if ua and ub and ua != ub:
            va, vb = _as_unix(ua), _as_unix(ub)
            if va is not None and vb is not None and abs(va - vb) < MAX_CLOCK_SKEW:
                hints.append(
                    CauseHint(
                        cause=Cause.TIMESTAMP,
                        evidence=f"{ua} vs {ub} read as unix time:"
                        f" {_utc(va)} vs {_utc(vb)} (Δ {_delta(va, vb)})",
                    )
                )
    # build paths: the difference lies inside a path on both sides
    pa, pb = _overlapping(_PATH, a, p, ea), _overlapping(_PATH, b, p, eb)
    if pa and pb and pa != pb and looks_like_build_path(pa, pb):
        hints.append(CauseHint(cause=Cause.BUILD_PATH, evidence=f"path {pa!r} vs {pb!r}"))
    # toolchain: a tool name and a version (or flags) that differ
    ta, tb = _TOOL.search(a), _TOOL.search(b)
    if ta and tb:
        ver_a = _overlapping(_VERSION, a, p, ea)
        ver_b = _overlapping(_VERSION, b, p, eb)
        if ver_a and ver_b and ver_a != ver_b:
            hints.append(
                CauseHint(
                    cause=Cause.TOOLCHAIN,
                    evidence=f"{ta.group(0)} {ver_a} vs {tb.group(0)} {ver_b}:"
                    f" {_clip(a)!r} vs {_clip(b)!r}",
                )
            )
        elif not any(h.cause is Cause.BUILD_PATH for h in hints) and (
            ta.start() <= 2 and tb.start() <= 2
        ):  # an identification string (.comment, DW_AT_producer): vendor suffix or flags
            hints.append(
                CauseHint(
                    cause=Cause.TOOLCHAIN,
                    evidence=f"tool string differs: {_clip(a)!r} vs {_clip(b)!r}",
                )
            )
    # locale: decimal separators, locale or charset names
    seg_a, seg_b = _token(a, p, ea), _token(b, p, eb)
    if (
        seg_a != seg_b
        and re.search(r"\d[.,]\d", seg_a)
        and seg_a.replace(",", ".") == seg_b.replace(",", ".")
    ):
        hints.append(
            CauseHint(cause=Cause.LOCALE, evidence=f"decimal separator: {seg_a!r} vs {seg_b!r}")
        )
    la, lb = _overlapping(_LOCALE, a, p, ea), _overlapping(_LOCALE, b, p, eb)
    if la and lb and la != lb:
        hints.append(CauseHint(cause=Cause.LOCALE, evidence=f"locale/charset {la!r} vs {lb!r}"))
    # random tokens: UUIDs, long hex or base64 strings that differ
    if not hints:
        for pattern, what in (
            (_UUID, "UUID"),
            (_HEXTOKEN, "hex token"),
            (_B64TOKEN, "base64-like token"),
        ):
            ra, rb = _overlapping(pattern, a, p, ea), _overlapping(pattern, b, p, eb)
            if ra and rb and ra != rb and _mostly_different(ra, rb):
                hints.append(
                    CauseHint(
                        cause=Cause.RANDOM,
                        evidence=f"{what} {_clip(ra, 48)!r} vs {_clip(rb, 48)!r}"
                        " (random, or a digest of other changes)",
                    )
                )
                break
    return hints


_BUILD_DIR = re.compile(
    r"(?:^|/)(?:tmp|build\w*|home|root|work\w*|_work|src|source|sources|runner|workspace|"
    r"builddir|obj\w*|\.cache|nix/store|usr/src|var/tmp|pytest-\w+|tmp\w+)(?:/|$)"
)


def looks_like_build_path(a: str, b: str) -> bool:
    """Two differing paths that look like the same file under different build directories.

    Either the paths end the same way (the prefix differs: ``/tmp/a/src/x.c`` vs
    ``/tmp/b/src/x.c``) or the part that differs sits under a directory that builds use
    (tmp, build, home, a CI runner's work dir, the nix store...).  A path that simply names
    another file (``/usr/bin/a`` vs ``/usr/bin/b``) is not a build path.
    """
    pa, pb = a.rstrip("/").split("/"), b.rstrip("/").split("/")
    tail = 0
    while tail < min(len(pa), len(pb)) - 1 and pa[-1 - tail] == pb[-1 - tail]:
        tail += 1
    head = 0
    while head < min(len(pa), len(pb)) and pa[head] == pb[head]:
        head += 1
    if tail >= 1 and head < min(len(pa), len(pb)) - tail:
        return True  # a directory in the middle or at the front changed; the file is the same
    prefix = "/".join(pa[: head + 1])
    other = "/".join(pb[: head + 1])
    return bool(_BUILD_DIR.search(prefix) and _BUILD_DIR.search(other))


def _token(text: str, start: int, end: int) -> str:
    lo, hi = start, max(end, start)
    while lo > 0 and not text[lo - 1].isspace():
        lo -= 1
    while hi < len(text) and not text[hi].isspace():
        hi += 1
    return text[lo:hi]


def _mostly_different(a: str, b: str) -> bool:
    n = min(len(a), len(b))
    same = sum(1 for x, y in zip(a, b, strict=False) if x == y)
    return n > 0 and same / n < 0.5


def _clip(text: str, n: int = 100) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n - 1] + "…"


# --- unified diffs -----------------------------------------------------------------------


def diff_pairs(diff: str) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """Pair the i-th removed with the i-th added line of each hunk; also all removed/added."""
    pairs: list[tuple[str, str]] = []
    removed_all: list[str] = []
    added_all: list[str] = []
    removed: list[str] = []
    added: list[str] = []

    def flush() -> None:
        pairs.extend(zip(removed, added, strict=False))
        removed.clear()
        added.clear()

    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            if added:
                flush()
            removed.append(line[1:])
            removed_all.append(line[1:])
        elif line.startswith("+"):
            added.append(line[1:])
            added_all.append(line[1:])
        else:
            flush()
    flush()
    return pairs, removed_all, added_all


def _c_sorted(lines: list[str]) -> bool:
    return lines == sorted(lines)


def _folded_sorted(lines: list[str]) -> bool:
    key = [re.sub(r"[^0-9a-z]", "", x.casefold()) for x in lines]
    return key == sorted(key)


def classify_text(node: DiffNode) -> list[CauseHint]:
    if not node.unified_diff and not node.notes:
        return []
    collation = [n for n in node.notes if n.startswith("collation:")]
    if collation:
        return [
            CauseHint(
                cause=Cause.LOCALE, evidence=f"same lines, sorted differently; {collation[0]}"
            )
        ]
    if "same lines in a different order" in node.notes:
        return [_order_hint(node)]
    pairs, removed, added = diff_pairs(node.unified_diff or "")
    if removed and sorted(removed) == sorted(added):
        return [
            CauseHint(cause=Cause.FILE_ORDER, evidence=f"{len(removed)} lines moved, none changed")
        ]
    hints: list[CauseHint] = []
    for a, b in pairs[:50]:
        for hint in detect_strings(a, b):
            if hint.cause not in {h.cause for h in hints}:
                hints.append(hint)
    return hints


def _order_hint(node: DiffNode) -> CauseHint:
    _, removed, added = diff_pairs(node.unified_diff or "")
    if removed and added:
        a_c, b_c = _c_sorted(removed), _c_sorted(added)
        a_f, b_f = _folded_sorted(removed), _folded_sorted(added)
        if (a_c and b_f and not b_c) or (b_c and a_f and not a_c):
            return CauseHint(
                cause=Cause.LOCALE,
                evidence="same lines; one side in byte (C locale) order, the other in a"
                " locale's collation order (case/punctuation-insensitive)",
            )
    return CauseHint(cause=Cause.FILE_ORDER, evidence="same lines in a different order")


# --- byte windows ---------------------------------------------------------------------------

_WINDOW = re.compile(r"^@0x([0-9a-f]+) ([0-9a-f]*)$")


def _window(value: str | None) -> tuple[int, bytes] | None:
    if not value:
        return None
    m = _WINDOW.match(value)
    if not m:
        return None
    return int(m.group(1), 16), bytes.fromhex(m.group(2))


#: machine code: an instruction's bytes read as a number mean nothing
CODE_SECTIONS = frozenset({".text", ".init", ".fini", ".plt", ".plt.got", ".plt.sec", ".iplt"})


def classify_bytes(node: DiffNode, ceiling: float = TS_MAX) -> list[CauseHint]:
    wa = _window(node.left.value if node.left else None)
    wb = _window(node.right.value if node.right else None)
    if wa is None or wb is None or wa[0] != wb[0]:
        return []
    base, a = wa
    b = wb[1]
    n = min(len(a), len(b))
    diffs = [i for i in range(n) if a[i] != b[i]]
    if not diffs:
        return []
    hints: list[CauseHint] = []
    in_code = any(seg in CODE_SECTIONS for seg in node.path[-2:])
    clock = None if in_code else _clock_in_bytes(a, b, diffs, base, ceiling)
    if clock is not None:
        hints.append(clock)
    run_a, run_b = _printable_run(a, diffs[0]), _printable_run(b, diffs[0])
    if len(run_a) >= 4 and len(run_b) >= 4:
        for hint in detect_strings(run_a, run_b):
            if hint.cause not in {h.cause for h in hints}:
                hints.append(hint)
    if not hints:
        block = [i for i in diffs if i < diffs[0] + 16]
        if len(block) >= 12 and n - diffs[0] >= 16:
            hints.append(
                CauseHint(
                    cause=Cause.RANDOM,
                    evidence=f"{len(block)} of 16 bytes from 0x{base + diffs[0]:x} differ:"
                    f" {a[diffs[0] : diffs[0] + 16].hex()} vs {b[diffs[0] : diffs[0] + 16].hex()}"
                    " (random bytes, or a digest of other changes)",
                )
            )
    return hints


def _clock_in_bytes(
    a: bytes, b: bytes, diffs: list[int], base: int, ceiling: float = TS_MAX
) -> CauseHint | None:
    first, last = diffs[0], diffs[-1]
    cluster = [i for i in diffs if i <= first + 7]
    for width, fmt, label in (
        (4, "<I", "little-endian u32"),
        (4, ">I", "big-endian u32"),
        (8, "<Q", "little-endian u64"),
        (8, ">Q", "big-endian u64"),
    ):
        for start in range(max(0, cluster[-1] - width + 1), first + 1):
            end = start + width
            if end > min(len(a), len(b)) or cluster[-1] >= end:
                continue
            va = struct.unpack(fmt, a[start:end])[0]
            vb = struct.unpack(fmt, b[start:end])[0]
            if va == vb or not (TS_MIN <= va < ceiling and TS_MIN <= vb < ceiling):
                continue
            if abs(va - vb) >= MAX_CLOCK_SKEW:
                continue
            return CauseHint(
                cause=Cause.TIMESTAMP,
                evidence=f"bytes at 0x{base + start:x} read as {label} unix time:"
                f" {_utc(va)} vs {_utc(vb)} (Δ {_delta(va, vb)})",
            )
    del last
    return None


def _printable_run(data: bytes, index: int) -> str:
    def printable(c: int) -> bool:
        return 32 <= c < 127

    if index >= len(data) or not printable(data[index]):
        # the difference may sit right after a string (a changed terminator)
        if index > 0 and printable(data[index - 1]):
            index -= 1
        else:
            return ""
    lo = hi = index
    while lo > 0 and printable(data[lo - 1]):
        lo -= 1
    while hi < len(data) and printable(data[hi]):
        hi += 1
    return data[lo:hi].decode("ascii")


# --- fields -----------------------------------------------------------------------------


def classify_field(node: DiffNode) -> list[CauseHint]:
    name = node.name
    a = node.left.value if node.left else None
    b = node.right.value if node.right else None
    key = name.lower()
    if key in OWNER_FIELDS:
        return [CauseHint(cause=Cause.OWNERSHIP, evidence=f"{name} {a} -> {b}")]
    if key == "crc32":
        return [CauseHint(cause=Cause.DERIVED, evidence="the image CRC covers all sections")]
    if key in (
        "sh_size",
        "sh_addr",
        "sh_offset",
        "size",
        "source_size",
        "payload_length",
        "syssize",
    ):
        return [CauseHint(cause=Cause.DERIVED, evidence=f"{name} follows the content: {a} -> {b}")]
    if key == "build-id":
        return []  # decided with the rest of its ELF (see classify_elf)
    if a is None or b is None:
        return []
    if key in ("xfl", "os", "compress_type", "create_system"):
        return [CauseHint(cause=Cause.TOOLCHAIN, evidence=f"compressor setting {name}: {a} vs {b}")]
    if key in ("dw_at_producer",):
        return [CauseHint(cause=Cause.TOOLCHAIN, evidence=f"compiler {_clip(a)!r} vs {_clip(b)!r}")]
    if key == "magic" and "Python" in a:
        return [CauseHint(cause=Cause.TOOLCHAIN, evidence=f"bytecode magic {a} vs {b}")]
    hints = detect_strings(a, b)
    if TIME_FIELD.search(name) and not any(h.cause is Cause.TIMESTAMP for h in hints):
        va, vb = (
            _as_unix(a.split()[0]) if a.split() else None,
            _as_unix(b.split()[0]) if b.split() else None,
        )
        if va is not None and vb is not None:
            evidence = f"{name}: {_utc(va)} vs {_utc(vb)} (Δ {_delta(va, vb)})"
        else:
            evidence = f"{name}: {a} vs {b}"
        hints.insert(0, CauseHint(cause=Cause.TIMESTAMP, evidence=evidence))
    return hints


# --- whole-tree passes ------------------------------------------------------------------------


def classify_node(node: DiffNode, ceiling: float = TS_MAX) -> list[CauseHint]:
    """Causes a node shows by itself (before looking at its neighbours)."""
    if node.kind is NodeKind.ORDER:
        return [CauseHint(cause=Cause.FILE_ORDER, evidence=node.summary)]
    if node.kind is NodeKind.FIELD:
        return classify_field(node)
    if node.kind is NodeKind.ELF_SECTION and node.change in (Change.ADDED, Change.REMOVED):
        if DEBUG_SECTION.match(node.name) or node.name.startswith(".gnu_debug"):
            side = "left" if node.change is Change.REMOVED else "right"
            return [
                CauseHint(
                    cause=Cause.DEBUG_SYMBOLS,
                    evidence=f"{node.name} only on the {side}: the other side is stripped",
                )
            ]
        return []
    if node.kind is NodeKind.ELF_SECTION and node.name.startswith(".note.gnu.build-id"):
        return []  # decided in classify_elf
    hints: list[CauseHint] = []
    if node.unified_diff or "same lines in a different order" in node.notes:
        hints += classify_text(node)
    if not hints:
        hints += classify_bytes(node, ceiling)
    if node.name == ".comment" and not any(h.cause is Cause.TOOLCHAIN for h in hints):
        hints.append(
            CauseHint(
                cause=Cause.TOOLCHAIN, evidence=".comment holds the compiler/linker identification"
            )
        )
    if node.name == "signature":
        hints.append(
            CauseHint(
                cause=Cause.DERIVED,
                evidence="the signature covers PCR0, which changes with the image",
            )
        )
    if any(n.startswith("compression level") for n in node.notes):
        hints.append(
            CauseHint(cause=Cause.TOOLCHAIN, evidence="same content, compressed differently")
        )
    if "JSON equal after canonical formatting" in node.summary:
        hints.append(
            CauseHint(
                cause=Cause.FILE_ORDER, evidence="same JSON value; key order or formatting differs"
            )
        )
    if any(n.startswith("marshal FLAG_REF") for n in node.notes):
        hints.append(
            CauseHint(
                cause=Cause.RANDOM,
                evidence="marshal reference flags depend on reference counts at compile time",
            )
        )
    return hints


def _dedupe(hints: Iterable[CauseHint]) -> tuple[CauseHint, ...]:
    out: list[CauseHint] = []
    for h in hints:
        if h.cause not in {x.cause for x in out}:
            out.append(h)
    return tuple(out)


def _annotate(node: DiffNode, ceiling: float) -> DiffNode:
    children = tuple(_annotate(c, ceiling) for c in node.children)
    own = classify_node(node, ceiling)
    node = node.model_copy(update={"children": children, "causes": _dedupe((*node.causes, *own))})
    if node.kind is NodeKind.ELF:
        node = classify_elf(node)
    return node


def classify_elf(elf: DiffNode) -> DiffNode:
    """Causes that depend on the rest of the ELF: stripping, build-ids, shifted debug data."""
    notes_strip = [n for n in elf.notes if n.startswith("stripping differs")]
    others = [
        c
        for c in elf.children
        if not (c.name == "build-id" or c.name.startswith(".note.gnu.build-id"))
    ]
    causes_below = {h.cause for c in others for n in c.walk() for h in n.causes}
    other_names = (
        ", ".join(dict.fromkeys(c.path[-1] for c in others if c.kind is not NodeKind.FIELD))
        or "fields"
    )

    def fix(node: DiffNode) -> DiffNode:
        extra: list[CauseHint] = []
        if node.name == "build-id" or node.name.startswith(".note.gnu.build-id"):
            node = node.model_copy(update={"children": (), "causes": ()})
            if others:
                extra.append(
                    CauseHint(
                        cause=Cause.BUILD_ID,
                        evidence="the build-id hashes the file; it follows the differences"
                        f" in {other_names}",
                    )
                )
            else:
                extra.append(
                    CauseHint(
                        cause=Cause.RANDOM,
                        evidence="only the build-id differs: it was not derived from the contents"
                        " (--build-id=uuid or random)",
                    )
                )
        elif (
            not node.causes
            and node.kind in (NodeKind.ELF_SECTION, NodeKind.SYMBOL, NodeKind.BINARY)
            and DEBUG_SECTION.match(
                node.path[-1]
                if node.kind is NodeKind.ELF_SECTION
                else node.path[-2]
                if len(node.path) > 1
                else ""
            )
        ):
            if Cause.BUILD_PATH in causes_below:
                extra.append(
                    CauseHint(
                        cause=Cause.BUILD_PATH,
                        evidence="debug data refers to changed path strings"
                        " (offsets shift when their lengths change)",
                    )
                )
            elif Cause.DEBUG_SYMBOLS in causes_below or notes_strip:
                extra.append(
                    CauseHint(
                        cause=Cause.DEBUG_SYMBOLS,
                        evidence="symbol/debug tables differ with stripping",
                    )
                )
        elif (
            not node.causes
            and node.kind in (NodeKind.ELF_SECTION, NodeKind.TEXT)
            and node.path[-1] in ("symbols", ".symtab", ".strtab")
            and (Cause.DEBUG_SYMBOLS in causes_below or notes_strip)
        ):
            extra.append(
                CauseHint(cause=Cause.DEBUG_SYMBOLS, evidence="symbol tables differ with stripping")
            )
        children = tuple(fix(c) for c in node.children)
        return node.model_copy(
            update={"children": children, "causes": _dedupe((*node.causes, *extra))}
        )

    children = tuple(fix(c) for c in elf.children)
    own: list[CauseHint] = []
    if notes_strip:
        own.append(CauseHint(cause=Cause.DEBUG_SYMBOLS, evidence=notes_strip[0]))
    return elf.model_copy(update={"children": children, "causes": _dedupe((*elf.causes, *own))})


def _fill_unknown(node: DiffNode) -> DiffNode:
    children = tuple(_fill_unknown(c) for c in node.children)
    causes = node.causes
    own_evidence = node.unified_diff is not None or (
        node.left is not None and (node.left.value or "").startswith("@0x")
    )
    if (not children or own_evidence) and not causes:
        causes = (
            CauseHint(cause=Cause.UNKNOWN, evidence=f"no classifier matched: {node.summary}"),
        )
    return node.model_copy(update={"children": children, "causes": causes})


def _roll_up(node: DiffNode) -> DiffNode:
    if not node.children:
        return node
    children = tuple(_roll_up(c) for c in node.children)
    found: dict[Cause, tuple[int, str]] = {}
    for child in children:
        for hint in child.causes:
            count, evidence = found.get(hint.cause, (0, ""))
            if not evidence:
                rel = "/".join(child.path[len(node.path) :]) or child.name
                evidence = f"{rel}: {hint.evidence}"
            found[hint.cause] = (count + 1, evidence)
    own = {h.cause for h in node.causes}
    rolled = [
        CauseHint(cause=c, evidence=ev if n == 1 else f"{n} places below, e.g. {ev}")
        for c, (n, ev) in found.items()
        if c not in own
    ]
    rolled.sort(key=lambda h: h.cause in _DERIVED_ONLY)  # what explains it first, echoes last
    return node.model_copy(update={"children": children, "causes": (*node.causes, *rolled)})


_DERIVED_ONLY = frozenset({Cause.DERIVED, Cause.BUILD_ID})


def _rank(node: DiffNode) -> tuple[int, int]:
    """Most important first: what moves a PCR before what does not (EIF metadata, CRC); then
    real content changes, other content, order, metadata, and derived values last."""
    return (0 if node.pcrs else 1, _change_rank(node))


def _change_rank(node: DiffNode) -> int:
    causes = {h.cause for h in node.causes}
    if causes and causes <= _DERIVED_ONLY:
        return 5
    if Cause.UNKNOWN in causes and node.change in (Change.CONTENT, Change.ADDED, Change.REMOVED):
        return 0
    return {
        Change.CONTENT: 1,
        Change.ADDED: 2,
        Change.REMOVED: 2,
        Change.REORDERED: 3,
        Change.METADATA: 4,
    }[node.change] + (1 if node.kind is NodeKind.FIELD else 0)


def _sort(node: DiffNode) -> DiffNode:
    children = sorted((_sort(c) for c in node.children), key=_rank)
    return node.model_copy(update={"children": tuple(children)})


def classify(root: DiffNode, *, now: float | None = None) -> DiffNode:
    """Attach causes to every node of a finished tree (pure: returns a new tree).

    ``now`` bounds plausible build clocks (default: the current time plus a day).
    """
    import time

    ceiling = (time.time() if now is None else now) + 86400
    return _sort(_roll_up(_fill_unknown(_annotate(root, min(ceiling, TS_MAX)))))
