"""Classifiers over a finished difference tree: causes with evidence, and what they mean.

A benign cause (timestamp, build path, file order, toolchain, owner, locale...) is
claimed only with positive evidence, and every claim says what it matched, what it was
checked against and how confident it is (:class:`CauseHint`):

* a clock value against the build's plausible window, which each side records (EIF
  ``BuildTime``, manifests' ``SOURCE_DATE_EPOCH``, file modification times), or a field
  the format defines as a time (cpio/tar ``mtime``, zip ``date_time``, pyc source mtime);
* a path against the build directories both sides record (DWARF ``DW_AT_comp_dir``);
* an order change that is a permutation with equal contents;
* a toolchain string whose changed part is a version string, where the format keeps the
  toolchain's identification (``.comment``, ``DW_AT_producer``, a line naming the tool);
* an owner or permission change applied the same way to every member of an archive.

The explaining span must cover every changed character or byte; what a classifier
explains only in part, or with LOW confidence, does not explain the difference away.
A changed host, URL, IP address, e-mail address, key, certificate, digest or machine
instruction is never benign (:data:`Cause.REAL`).  Security-relevant changes (privilege
bits, capabilities, added or removed executables and libraries, loader configuration,
``/init``, the image's cmd and env, certificates and keys, accounts, the kernel cmdline)
are a class of their own (:data:`Cause.SECURITY`).

Each node gets a :class:`Significance` (security-relevant, unexplained, benign, derived:
the most important of its own and its children's), and children are sorted by it, so
security-relevant changes come first and unexplained ones next, in every output.
Nothing here knows a particular test case: the detectors work on the shape and the
location of the difference.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from enclave_audit.model.difference import (
    BENIGN_CAUSES,
    DERIVED_CAUSES,
    Cause,
    CauseHint,
    Change,
    Confidence,
    DiffNode,
    NodeKind,
    Significance,
)
from verifier.compare.evidence import TS_MAX, TS_MIN, Evidence, SideEvidence, utc

HIGH, MEDIUM, LOW = Confidence.HIGH, Confidence.MEDIUM, Confidence.LOW
MAX_CLOCK_SKEW = 10 * 366 * 86400  # two builds' clocks differ by less than this
#: notes the ELF comparator puts on sections (kept in sync with verifier.compare.elf)
CODE_NOTE = "machine code (executable section)"
ADDRESS_NOTE = "addresses (relocations or pointers)"
CODE_SECTIONS = frozenset({".text", ".init", ".fini", ".plt", ".plt.got", ".plt.sec", ".iplt"})
DEBUG_SECTION = re.compile(r"^\.(z?debug_\w+|symtab|strtab)$")


def hint(
    cause: Cause,
    evidence: str,
    *,
    matched: str = "",
    against: str = "",
    confidence: Confidence = MEDIUM,
) -> CauseHint:
    return CauseHint(
        cause=cause, evidence=evidence, matched=matched, against=against, confidence=confidence
    )


@dataclass
class Env:
    """What the classifiers check claims against."""

    evidence: Evidence
    now: float
    #: (container path, field) -> Counter of (left, right) changes, for consistency checks
    owners: dict[tuple[tuple[str, ...], str], Counter[tuple[str, str]]] = field(
        default_factory=dict
    )

    def window(self, side: SideEvidence, value: float) -> str | None:
        source = side.window_for(value, self.now)
        if source is None:
            return None
        return f"{source.what} {utc(source.value)}"


def _clip(text: str, n: int = 100) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n - 1] + "…"


def _delta(a: float, b: float) -> str:
    d = abs(int(b - a))
    days, rem = divmod(d, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    if days:
        return f"{days}d {hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}"


# --- spans --------------------------------------------------------------------------------


Ranges = list[tuple[int, int]]


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


def changed_ranges(a: str, b: str) -> tuple[Ranges, Ranges]:
    """The changed character ranges of each side (an insertion is an empty range)."""
    p, ea, eb = _diff_span(a, b)
    if max(ea - p, eb - p) > 2000:
        return [(p, ea)], [(p, eb)]
    matcher = difflib.SequenceMatcher(None, a[p:ea], b[p:eb], autojunk=False)
    ra: Ranges = []
    rb: Ranges = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            ra.append((p + i1, p + i2))
            rb.append((p + j1, p + j2))
    return ra, rb


def _touches(m: re.Match[str], start: int, end: int) -> bool:
    if end > start:
        return m.start() < end and m.end() > start
    return m.start() <= start <= m.end()


def _matches(pattern: re.Pattern[str], text: str, ranges: Ranges) -> list[re.Match[str]]:
    """Matches that overlap a changed range (or touch an insertion point)."""
    return [m for m in pattern.finditer(text) if any(_touches(m, s, e) for s, e in ranges)]


def _covers(matches: Sequence[re.Match[str]], ranges: Ranges) -> bool:
    """Every changed range lies inside one match (insertion points touch one)."""
    for start, end in ranges:
        if end > start:
            if not any(m.start() <= start and end <= m.end() for m in matches):
                return False
        elif not any(m.start() <= start <= m.end() for m in matches):
            return False
    return True


# --- never benign -------------------------------------------------------------------------

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,15}://[^\s\"'<>]+")
_EMAIL = re.compile(r"\b[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\b")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{0,4}(?![\w:])")
#: a host name: not a path component (a '/' before it only as in ``//host``)
_HOST = re.compile(
    r"(?<![\w.-])(?<!(?<!/)/)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}(?![\w.-])"
)
_PEM = re.compile(r"-----(?:BEGIN|END) [A-Z0-9 ]+-----")
_DIGEST = re.compile(
    r"(?:(?:sha1|sha224|sha256|sha384|sha512|md5|blake2b?)[:=-])?(?<![0-9a-fA-F])"
    r"[0-9a-fA-F]{32,128}(?![0-9a-fA-F])"
)
_KEYLIKE = re.compile(r"(?<![A-Za-z0-9+/_.-])[A-Za-z0-9+/_-]{40,}={0,2}(?![A-Za-z0-9+/=_.-])")
_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_FILE_SUFFIX = re.compile(
    r"\.(?:c|h|cc|cpp|hpp|py|pyc|so|o|a|rs|go|js|ts|json|toml|yaml|yml|txt|md|conf|cfg|ini|"
    r"sh|pl|rb|lua|java|class|jar|whl|tar|gz|xz|zst|bz2|zip|deb|log|pem|crt|key|service)$"
)

_VETOES: tuple[tuple[re.Pattern[str], str], ...] = (
    (_PEM, "key or certificate (PEM) material"),
    (_URL, "URL"),
    (_EMAIL, "e-mail address"),
    (_IPV4, "IP address"),
    (_IPV6, "IP address"),
    (_DIGEST, "digest or key (hex)"),
    (_UUID, "identifier (UUID)"),
    (_KEYLIKE, "key or token (base64)"),
    (_HOST, "host name"),
)


def _plausible(pattern: re.Pattern[str], text: str) -> bool:
    """Filters for the looser patterns (a path is not a key, a time is not an address)."""
    if pattern is _HOST:
        return not _FILE_SUFFIX.search(text)
    if pattern is _IPV4:
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            return False
        return True
    if pattern is _IPV6:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
        return "::" in text or text.count(":") >= 5
    if pattern is _KEYLIKE:
        body = text.rstrip("=")
        return (
            not body.startswith("/")
            and body.count("/") * 10 <= len(body)
            and any(c.isupper() for c in body)
            and any(c.islower() for c in body)
            and any(c.isdigit() for c in body)
        )
    return True


def real_change(a: str, b: str) -> CauseHint | None:
    """A REAL hint when the changed characters touch a host, URL, address, key or digest."""
    ra, rb = changed_ranges(a, b)
    for pattern, what in _VETOES:
        ma = [m for m in _matches(pattern, a, ra) if _plausible(pattern, m.group(0))]
        mb = [m for m in _matches(pattern, b, rb) if _plausible(pattern, m.group(0))]
        if ma or mb:
            va = ma[0].group(0) if ma else "(none)"
            vb = mb[0].group(0) if mb else "(none)"
            return hint(
                Cause.REAL,
                f"{what} changed: {_clip(va, 80)!r} -> {_clip(vb, 80)!r} (never benign)",
                matched=f"{_clip(va, 80)!r} -> {_clip(vb, 80)!r}",
                against=f"the changed characters lie in a {what}",
                confidence=HIGH,
            )
    return None


# --- dates -----------------------------------------------------------------------------

_MON = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_DAY = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_DATETIME = re.compile(
    r"(?:"
    r"\b(?:19|20)\d\d-[01]\d-[0-3]\d(?:[T ][0-2]\d:[0-5]\d(?::[0-6]\d(?:\.\d+)?)?"
    r"(?:Z|[+-]\d\d:?\d\d)?)?"  # ISO 8601
    r"|\b(?:19|20)\d\d/[01]\d/[0-3]\d(?: [0-2]\d:[0-5]\d(?::[0-6]\d)?)?"
    rf"|\b(?:(?:{_DAY}),? )?(?:{_MON}) +[0-3]?\d(?: [0-2]\d:[0-5]\d:[0-6]\d)?"
    r"(?: [A-Z]{2,5})? (?:19|20)\d\d(?: [0-2]\d:[0-5]\d:[0-6]\d)?"  # ctime, __DATE__ __TIME__
    rf"|\b[0-3]?\d (?:{_MON}) (?:19|20)\d\d(?: [0-2]\d:[0-5]\d:[0-6]\d)?(?: [+-]\d{{4}})?"
    r")"
)
_UNIX = re.compile(r"(?<![\w.])\d{9,13}(?:\.\d+)?(?![\w.])")
_TZ = re.compile(r"\s(?:UTC|GMT|[A-Z]{3,5})\b")
_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f%z",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%a %b %d %H:%M:%S %Y",
    "%a, %b %d %H:%M:%S %Y",
    "%b %d %Y %H:%M:%S",
    "%b %d %H:%M:%S %Y",
    "%b %d %Y",
    "%d %b %Y %H:%M:%S %z",
    "%d %b %Y %H:%M:%S",
    "%d %b %Y",
)


def parse_time(text: str) -> float | None:
    """A date/time string or a unix clock (seconds or milliseconds) -> seconds (UTC)."""
    raw = text.strip()
    if _UNIX.fullmatch(raw):
        value = float(raw)
        for scale in (1, 1000):
            if TS_MIN <= value / scale < TS_MAX:
                return value / scale
        return None
    cleaned = " ".join(_TZ.sub("", " " + raw).split())
    cleaned = cleaned.replace("Z", "+0000") if cleaned.endswith("Z") else cleaned
    for fmt in _FORMATS:
        try:
            when = datetime.strptime(cleaned, fmt)
        except ValueError:
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    return None


def _time_hint(
    ta: str, tb: str, va: float, vb: float, env: Env, *, defined_by: str | None = None
) -> CauseHint:
    """A TIMESTAMP hint for two clock values, with the window they were checked against."""
    wa, wb = env.window(env.evidence.left, va), env.window(env.evidence.right, vb)
    matched = f"{ta!r} vs {tb!r} = {utc(va)} vs {utc(vb)} (Δ {_delta(va, vb)})"
    if defined_by is not None:
        inside = f"; inside the build window ({wa} / {wb})" if wa and wb else ""
        return hint(
            Cause.TIMESTAMP,
            f"{defined_by}: {matched}{inside}",
            matched=matched,
            against=f"{defined_by} (a time by definition){inside}",
            confidence=HIGH,
        )
    if wa and wb and abs(va - vb) < MAX_CLOCK_SKEW:
        return hint(
            Cause.TIMESTAMP,
            f"clock {matched}, each inside its side's build window ({wa} / {wb})",
            matched=matched,
            against=f"build window: left {wa}, right {wb}",
            confidence=MEDIUM,
        )
    why = (
        "no build time recorded to check it against"
        if not (env.evidence.left.times and env.evidence.right.times)
        else "outside the build window"
    )
    return hint(
        Cause.TIMESTAMP,
        f"looks like a clock ({matched}), but {why}",
        matched=matched,
        against=why,
        confidence=LOW,
    )


# --- strings ------------------------------------------------------------------------------

_PATH = re.compile(r"(?:/[\w.+@~%=-]+){2,}/?|(?:/[\w.+@~%=-]+)+/")
_TOOL = re.compile(
    r"\b(GCC|gcc|g\+\+|clang|LLVM|rustc|cargo|GNU (?:C\+\+|C|AS|ld|Fortran)\w*|GNU assembler|"
    r"ld\.(?:bfd|lld|gold)|binutils|Python|CPython|cpython|go\d[\w.]*|OpenJDK|javac|nasm|yasm|"
    r"Linker)\b"
)
_VERSION = re.compile(r"(?<![\w.])\d+(?:\.\d+)+(?:[-+~][0-9A-Za-z.+~]*)?(?![\w.])")
_LOCALE = re.compile(
    r"\b(?:[a-z]{2}_[A-Z]{2}(?:\.[\w-]+)?|C\.UTF-8|POSIX|UTF-8|utf8|ANSI_X3\.4-1968|"
    r"ISO-8859-\d+)\b"
)
_TOKEN = re.compile(r"\S+")


def _dates(a: str, b: str, ra: Ranges, rb: Ranges, env: Env) -> CauseHint | None:
    ma, mb = _matches(_DATETIME, a, ra), _matches(_DATETIME, b, rb)
    if not (ma and mb) or not (_covers(ma, ra) and _covers(mb, rb)):
        ua, ub = _matches(_UNIX, a, ra), _matches(_UNIX, b, rb)
        if not (ua and ub) or not (_covers(ua, ra) and _covers(ub, rb)):
            return None
        ma, mb = ua, ub
    ta, tb = ma[0].group(0), mb[0].group(0)
    va, vb = parse_time(ta), parse_time(tb)
    if va is None or vb is None or va == vb:
        return None
    return _time_hint(ta, tb, va, vb, env)


def _paths(a: str, b: str, ra: Ranges, rb: Ranges, env: Env) -> CauseHint | None:
    ma, mb = _matches(_PATH, a, ra), _matches(_PATH, b, rb)
    if not (ma and mb) or not (_covers(ma, ra) and _covers(mb, rb)):
        return None
    pa, pb = ma[0].group(0), mb[0].group(0)
    da = env.evidence.left.build_dir_of(pa.rstrip("/"))
    db = env.evidence.right.build_dir_of(pb.rstrip("/"))
    if da and db and da != db and pa[len(da) :] == pb[len(db) :]:
        where = env.evidence.left.build_dirs[da]
        return hint(
            Cause.BUILD_PATH,
            f"path {pa!r} vs {pb!r}: the same file under the build directories"
            f" {da!r} / {db!r} ({where})",
            matched=f"{pa!r} vs {pb!r}",
            against=f"build directories recorded by each side: {da!r} / {db!r} ({where})",
            confidence=HIGH,
        )
    return hint(
        Cause.BUILD_PATH,
        f"path {pa!r} vs {pb!r}, but neither side records it as a build directory",
        matched=f"{pa!r} vs {pb!r}",
        against="no build directory recorded (DW_AT_comp_dir, manifest) covers both",
        confidence=LOW,
    )


def _versions(
    a: str, b: str, ra: Ranges, rb: Ranges, toolchain_place: str | None
) -> CauseHint | None:
    ma, mb = _matches(_VERSION, a, ra), _matches(_VERSION, b, rb)
    if not (ma and mb) or not (_covers(ma, ra) and _covers(mb, rb)):
        return None
    ta, tb = _TOOL.search(a), _TOOL.search(b)
    va, vb = ma[0].group(0), mb[0].group(0)
    if toolchain_place is not None or (ta and tb and ta.group(0) == tb.group(0)):
        where = toolchain_place or f"a line naming the tool {ta.group(0) if ta else ''}"
        return hint(
            Cause.TOOLCHAIN,
            f"toolchain version {va} vs {vb}: {_clip(a, 80)!r} vs {_clip(b, 80)!r}",
            matched=f"version {va!r} vs {vb!r}",
            against=f"the changed part is a version string, in {where}",
            confidence=HIGH if toolchain_place else MEDIUM,
        )
    return hint(
        Cause.TOOLCHAIN,
        f"a version number changed ({va} vs {vb}), not in a toolchain identification",
        matched=f"version {va!r} vs {vb!r}",
        against="no toolchain named: a dependency's version is a real change",
        confidence=LOW,
    )


def _locale(a: str, b: str, ra: Ranges, rb: Ranges) -> CauseHint | None:
    ta, tb = _matches(_TOKEN, a, ra), _matches(_TOKEN, b, rb)
    if len(ta) == 1 and len(tb) == 1 and _covers(ta, ra) and _covers(tb, rb):
        sa, sb = ta[0].group(0), tb[0].group(0)
        if re.search(r"\d[.,]\d", sa) and sa.replace(",", ".") == sb.replace(",", "."):
            return hint(
                Cause.LOCALE,
                f"decimal separator: {sa!r} vs {sb!r}",
                matched=f"{sa!r} vs {sb!r}",
                against="equal once ',' and '.' are exchanged",
                confidence=MEDIUM,
            )
    la, lb = _matches(_LOCALE, a, ra), _matches(_LOCALE, b, rb)
    if la and lb and _covers(la, ra) and _covers(lb, rb):
        return hint(
            Cause.LOCALE,
            f"locale/charset {la[0].group(0)!r} vs {lb[0].group(0)!r}",
            matched=f"{la[0].group(0)!r} vs {lb[0].group(0)!r}",
            against="the changed part is a locale or charset name",
            confidence=MEDIUM,
        )
    return None


def detect_strings(
    a: str, b: str, env: Env | None = None, *, toolchain_place: str | None = None
) -> list[CauseHint]:
    """Causes for two differing strings (lines, field values, printable byte runs).

    A REAL hint (never benign) when the change touches a host, URL, key or digest; else
    the benign hints whose match covers the whole change; LOW when the evidence is
    missing.
    """
    env = env or Env(Evidence(), now=TS_MAX)
    veto = real_change(a, b)
    if veto is not None:
        return [veto]
    ra, rb = changed_ranges(a, b)
    hints: list[CauseHint] = []
    for found in (
        _dates(a, b, ra, rb, env),
        _paths(a, b, ra, rb, env),
        _versions(a, b, ra, rb, toolchain_place),
        _locale(a, b, ra, rb),
    ):
        if found is not None:
            hints.append(found)
    hints.sort(key=lambda h: h.confidence is LOW)
    return hints


# --- unified diffs -----------------------------------------------------------------------


def diff_pairs(diff: str) -> tuple[list[tuple[str, str]], list[str], list[str], int]:
    """(i-th removed line paired with i-th added line of each hunk, all removed, all added,
    lines removed or added without a partner)."""
    pairs: list[tuple[str, str]] = []
    removed_all: list[str] = []
    added_all: list[str] = []
    removed: list[str] = []
    added: list[str] = []
    unpaired = 0

    def flush() -> None:
        nonlocal unpaired
        pairs.extend(zip(removed, added, strict=False))
        unpaired += abs(len(removed) - len(added))
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
    return pairs, removed_all, added_all, unpaired


_TRUNCATED = re.compile(r"^\[… \d+ more diff lines left out\]$", re.MULTILINE)
_DYNAMIC_SECURITY = re.compile(r"^DT_(NEEDED|RPATH|RUNPATH|AUDIT|DEPAUDIT|PREINIT_ARRAY)\b")


def classify_text(node: DiffNode, env: Env, toolchain_place: str | None = None) -> list[CauseHint]:
    collation = [n for n in node.notes if n.startswith("collation:")]
    if collation:
        return [
            hint(
                Cause.LOCALE,
                f"same lines, sorted differently; {collation[0]}",
                matched="a permutation of the same lines",
                against="byte order on one side, a locale's collation order on the other",
                confidence=HIGH,
            )
        ]
    if "same lines in a different order" in node.notes:
        return [
            hint(
                Cause.FILE_ORDER,
                "same lines in a different order, none changed",
                matched="a permutation of the same lines",
                against="the sorted lines of both sides are equal",
                confidence=HIGH,
            )
        ]
    diff = node.unified_diff or ""
    if node.name == "dynamic":
        changed = [
            line[1:]
            for line in diff.splitlines()
            if line[:1] in "+-" and not line.startswith(("---", "+++"))
        ]
        hits = [x for x in changed if _DYNAMIC_SECURITY.match(x)]
        if hits:
            return [
                hint(
                    Cause.SECURITY,
                    f"libraries this binary loads changed: {_clip(hits[0], 80)}",
                    matched=hits[0],
                    against="dynamic entries that name libraries or search paths",
                    confidence=HIGH,
                )
            ]
    pairs, removed, added, unpaired = diff_pairs(diff)
    complete = not _TRUNCATED.search(diff)
    if removed and sorted(removed) == sorted(added) and complete:
        return [
            hint(
                Cause.FILE_ORDER,
                f"{len(removed)} lines moved, none changed",
                matched=f"{len(removed)} moved lines",
                against="the removed and added lines are the same lines",
                confidence=HIGH,
            )
        ]
    explained: dict[Cause, CauseHint] = {}
    all_explained = complete and unpaired == 0 and bool(pairs)
    for a, b in pairs[:200]:
        found = detect_strings(a, b, env, toolchain_place=toolchain_place)
        veto = next((h for h in found if h.cause is Cause.REAL), None)
        if veto is not None:
            return [veto]
        good = [h for h in found if h.explains]
        if not good:
            all_explained = False
        for h in found:
            explained.setdefault(h.cause, h)
    if len(pairs) > 200:
        all_explained = False
    for a in removed + added:
        veto = _one_sided_real(a)
        if veto is not None:
            return [veto]
    hints = list(explained.values())
    if not all_explained:
        hints = [_partial(h) for h in hints]
    return hints


def _one_sided_real(line: str) -> CauseHint | None:
    """An added or removed line that holds a host, URL, key... (never benign)."""
    for pattern, what in _VETOES:
        m = next((x for x in pattern.finditer(line) if _plausible(pattern, x.group(0))), None)
        if m:
            return hint(
                Cause.REAL,
                f"a line with a {what} was added or removed: {_clip(m.group(0), 80)!r}",
                matched=_clip(line, 80),
                against=f"the line holds a {what}",
                confidence=HIGH,
            )
    return None


def _partial(h: CauseHint) -> CauseHint:
    if h.confidence is LOW:
        return h
    return h.model_copy(
        update={
            "confidence": LOW,
            "evidence": f"explains only part of the change: {h.evidence}",
            "against": f"{h.against}; other changed lines are not explained",
        }
    )


# --- byte windows ---------------------------------------------------------------------------

_WINDOW = re.compile(r"^@0x([0-9a-f]+) ([0-9a-f]*)$")
_DIFFERING = re.compile(r"\(~?(\d+) differing byte")


def _window(value: str | None) -> tuple[int, bytes] | None:
    if not value:
        return None
    m = _WINDOW.match(value)
    if not m:
        return None
    return int(m.group(1), 16), bytes.fromhex(m.group(2))


def _total_differing(node: DiffNode) -> int | None:
    m = _DIFFERING.search(node.summary)
    return int(m.group(1)) if m else None


def classify_bytes(node: DiffNode, env: Env, role: str | None) -> list[CauseHint]:
    """Causes for a byte window (``@0x<offset> <hex>`` on both sides)."""
    wa = _window(node.left.value if node.left else None)
    wb = _window(node.right.value if node.right else None)
    if wa is None or wb is None or wa[0] != wb[0]:
        return []
    base, a = wa
    b = wb[1]
    n = min(len(a), len(b))
    diffs = [i for i in range(n) if a[i] != b[i]]
    if role == CODE_NOTE:
        where = node.name
        return [
            hint(
                Cause.REAL,
                f"machine code changed in {where} (an instruction is never benign)",
                matched=f"{len(diffs) or 'some'} byte(s) from"
                f" 0x{base + (diffs[0] if diffs else 0):x}",
                against="an executable section (SHF_EXECINSTR)",
                confidence=HIGH,
            )
        ]
    if not diffs:
        return []
    total = _total_differing(node)
    sizes_differ = "sizes" in node.summary
    whole = (total is None or total <= len(diffs)) and not sizes_differ
    hints: list[CauseHint] = []
    if role != ADDRESS_NOTE:
        clock = _clock_in_bytes(a, b, diffs, base, env)
        if clock is not None:
            hints.append(clock)
        run = _printable_runs(a, b, diffs)
        if run is not None:
            ra, rb = run
            for h in detect_strings(ra, rb, env, toolchain_place=_toolchain_place(node)):
                if h.cause is Cause.REAL:
                    return [h]
                if h.cause not in {x.cause for x in hints}:
                    hints.append(h)
    if not whole:
        hints = [_partial(h) for h in hints]
    return hints


def _clock_in_bytes(a: bytes, b: bytes, diffs: list[int], base: int, env: Env) -> CauseHint | None:
    """A 4- or 8-byte integer that covers every differing byte and reads as a clock inside
    each side's build window (aligned readings preferred)."""
    first, last = diffs[0], diffs[-1]
    found: list[tuple[int, CauseHint]] = []
    for width, fmt, label in (
        (4, "<I", "little-endian u32"),
        (4, ">I", "big-endian u32"),
        (8, "<Q", "little-endian u64"),
        (8, ">Q", "big-endian u64"),
    ):
        if last - first >= width:
            continue
        for start in range(max(0, last - width + 1), first + 1):
            end = start + width
            if end > min(len(a), len(b)):
                continue
            va = struct.unpack(fmt, a[start:end])[0]
            vb = struct.unpack(fmt, b[start:end])[0]
            if va == vb or not (TS_MIN <= va < TS_MAX and TS_MIN <= vb < TS_MAX):
                continue
            h = _time_hint(
                f"{a[start:end].hex()}", f"{b[start:end].hex()}", float(va), float(vb), env
            )
            h = h.model_copy(
                update={"evidence": f"bytes at 0x{base + start:x} read as {label}: {h.evidence}"}
            )
            if h.explains:  # a clock-shaped value outside any window is no evidence
                found.append((0 if (base + start) % width == 0 else 1, h))
    if not found:
        return None
    return min(found, key=lambda x: x[0])[1]


def _printable_runs(a: bytes, b: bytes, diffs: list[int]) -> tuple[str, str] | None:
    """The printable strings around the differences, when one run on each side holds
    every differing byte."""

    def run(data: bytes, first: int, last: int) -> tuple[int, int] | None:
        def printable(c: int) -> bool:
            return 32 <= c < 127

        lo = first
        if lo >= len(data) or not printable(data[lo]):
            if lo > 0 and printable(data[lo - 1]):
                lo -= 1  # a changed terminator right after a string
            else:
                return None
        while lo > 0 and printable(data[lo - 1]):
            lo -= 1
        hi = lo
        while hi < len(data) and printable(data[hi]):
            hi += 1
        if hi <= last and not (hi == last and last < len(data) and data[last] == 0):
            return None
        return lo, hi

    ra, rb = run(a, diffs[0], diffs[-1]), run(b, diffs[0], diffs[-1])
    if ra is None or rb is None:
        return None
    sa, sb = a[ra[0] : ra[1]].decode("ascii"), b[rb[0] : rb[1]].decode("ascii")
    if len(sa) < 4 or len(sb) < 4:
        return None
    return sa, sb


def _toolchain_place(node: DiffNode) -> str | None:
    if node.name == ".comment" or (len(node.path) > 1 and node.path[-2] == ".comment"):
        return ".comment (the compiler and linker identification)"
    if node.name in ("DW_AT_producer", "version: compiler"):
        return f"{node.name} (the compiler identification)"
    return None


# --- fields ------------------------------------------------------------------------------

#: fields the formats define as times
FORMAT_TIME_FIELDS = {
    "mtime": "the archive format's member modification time",
    "date_time": "the zip member's modification time",
    "source_mtime": "the .pyc header's source modification time",
    "BuildMetadata.BuildTime": "the EIF metadata's BuildTime",
    "version: build time": "the kernel's build timestamp (UTS_VERSION, KBUILD_BUILD_TIMESTAMP)",
}
OWNER_FIELDS = frozenset({"uid", "gid", "uname", "gname", "owner", "group"})
DERIVED_SIZES = frozenset({"sh_size", "sh_addr", "sh_offset", "size", "payload_length", "syssize"})
COMPRESSOR_FIELDS = frozenset({"xfl", "os", "compress_type", "create_system"})
CAPABILITY_FIELDS = ("xattr security.capability", "pax:SCHILY.xattr.security.capability")
_PRIVILEGE_BITS = 0o7000 | 0o111 | 0o002  # setuid/setgid/sticky, execute, world-write


def _mode(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.split()[0], 8)
    except (ValueError, IndexError):
        return None


def _bits(delta: int, after: int) -> str:
    names = []
    for bit, name in (
        (0o4000, "setuid"),
        (0o2000, "setgid"),
        (0o1000, "sticky"),
        (0o100, "owner execute"),
        (0o010, "group execute"),
        (0o001, "others execute"),
        (0o002, "world-write"),
    ):
        if delta & bit:
            names.append(f"{name} {'added' if after & bit else 'removed'}")
    return ", ".join(names)


def _member_meta(parent: DiffNode | None, side: str) -> dict[str, str]:
    if parent is None:
        return {}
    s = parent.left if side == "left" else parent.right
    return dict(s.meta) if s is not None and s.meta else {}


def classify_field(node: DiffNode, parent: DiffNode | None, env: Env) -> list[CauseHint]:
    name = node.name
    a = node.left.value if node.left else None
    b = node.right.value if node.right else None
    key = name.lower()
    meta_a, meta_b = _member_meta(parent, "left"), _member_meta(parent, "right")
    ftype = meta_b.get("type") or meta_a.get("type") or "file"
    # --- security-relevant fields
    if key == "mode":
        ma, mb = _mode(a), _mode(b)
        if ma is not None and mb is not None:
            privilege = _PRIVILEGE_BITS if ftype == "file" else (0o7000 | 0o002)
            delta = (ma ^ mb) & privilege
            if delta:
                return [
                    hint(
                        Cause.SECURITY,
                        f"privilege bits changed: {_bits(delta, mb)} (mode {a} -> {b})",
                        matched=f"mode {a} -> {b}",
                        against="setuid/setgid/sticky, execute and world-write bits",
                        confidence=HIGH,
                    )
                ]
            return _consistent(node, parent, env, "mode", f"{ma ^ mb:04o}")
    if name in CAPABILITY_FIELDS:
        return [
            hint(
                Cause.SECURITY,
                "file capabilities (security.capability) changed",
                matched=f"{_clip(a or '(none)', 40)} -> {_clip(b or '(none)', 40)}",
                against="the security.capability extended attribute",
                confidence=HIGH,
            )
        ]
    if key == "rdev" or (key == "type" and {a, b} & {"char", "block"}):
        return [
            hint(
                Cause.SECURITY,
                f"device node changed ({name}: {a} -> {b})",
                matched=f"{name} {a} -> {b}",
                against="device nodes give access to hardware",
                confidence=HIGH,
            )
        ]
    if key == "hard link to":
        mode = _mode(meta_b.get("mode") or meta_a.get("mode")) or 0
        if mode & 0o6111:
            return [
                hint(
                    Cause.SECURITY,
                    f"hard link to {b or a!r}, a file with mode {mode:04o}"
                    " (another name for a privileged or executable file)",
                    matched=f"hard link {a} -> {b}",
                    against="the linked inode's mode",
                    confidence=HIGH,
                )
            ]
        return [_real(f"hard link changed: {a} -> {b}", "the member's inode")]
    if key in OWNER_FIELDS:
        mode = (_mode(meta_a.get("mode")) or 0) | (_mode(meta_b.get("mode")) or 0)
        if mode & 0o6000:
            return [
                hint(
                    Cause.SECURITY,
                    f"owner of a setuid/setgid file changed ({name} {a} -> {b})",
                    matched=f"{name} {a} -> {b}",
                    against=f"the file's mode {mode:04o}: it runs as its owner",
                    confidence=HIGH,
                )
            ]
        return _consistent(node, parent, env, key, f"{a} -> {b}")
    # --- format-defined meanings
    if name in FORMAT_TIME_FIELDS and a is not None and b is not None:
        va = 0.0 if a.split()[0] == "0" else parse_time(a.split()[0]) or parse_time(a)
        vb = 0.0 if b.split()[0] == "0" else parse_time(b.split()[0]) or parse_time(b)
        if va is not None and vb is not None:
            return [_time_hint(a, b, va, vb, env, defined_by=FORMAT_TIME_FIELDS[name])]
    if key == "crc32":
        return []  # decided with its siblings (see _classify_tree)
    if key in DERIVED_SIZES:
        return []  # decided with its siblings
    if key == "nlink":
        return [
            hint(
                Cause.DERIVED,
                f"link count {a} -> {b} follows the hard links and subdirectories,"
                " which are compared as members",
                matched=f"nlink {a} -> {b}",
                against="members sharing the inode or directory",
                confidence=MEDIUM,
            )
        ]
    if key == "build-id":
        return []  # decided with the rest of its ELF (see _classify_elf)
    if a is None or b is None:
        return []
    if key in COMPRESSOR_FIELDS:
        return [
            hint(
                Cause.TOOLCHAIN,
                f"compressor setting {name}: {a} vs {b}",
                matched=f"{name} {a} vs {b}",
                against="a compressor identification field of the format's header",
                confidence=MEDIUM,
            )
        ]
    if key == "dw_at_comp_dir":
        return [
            hint(
                Cause.BUILD_PATH,
                f"compilation directory {a!r} vs {b!r}",
                matched=f"{a!r} vs {b!r}",
                against="DW_AT_comp_dir: DWARF records the build directory here",
                confidence=HIGH,
            )
        ]
    if key == "magic" and "Python" in a:
        return [
            hint(
                Cause.TOOLCHAIN,
                f"bytecode magic {a} vs {b}",
                matched=f"{a} vs {b}",
                against="the .pyc magic number names the Python version",
                confidence=HIGH,
            )
        ]
    if key in ("version: build user@host", "version: build number"):
        return [
            hint(
                Cause.BUILD_ENVIRONMENT,
                f"{name}: {a!r} vs {b!r}",
                matched=f"{a!r} vs {b!r}",
                against="the kernel version line's KBUILD_BUILD_USER@HOST / build counter",
                confidence=HIGH,
            )
        ]
    if key in ("source_size", "source_hash"):
        return [_real(f"the .py source differs ({name} {a} -> {b})", "the .pyc header")]
    return detect_strings(a, b, env, toolchain_place=_toolchain_place(node))


def _real(evidence: str, against: str) -> CauseHint:
    return hint(Cause.REAL, evidence, matched=evidence, against=against, confidence=HIGH)


def _consistent(
    node: DiffNode, parent: DiffNode | None, env: Env, key: str, change: str
) -> list[CauseHint]:
    """OWNERSHIP when the same change applies to every member of the archive that has one."""
    container = node.path[:-2]
    counts = env.owners.get((container, key))
    if not counts:
        return []
    total = sum(counts.values())
    if len(counts) == 1 and total >= 2:
        what = "mode bits" if key == "mode" else key
        return [
            hint(
                Cause.OWNERSHIP,
                f"the same {what} change ({change}) on all {total} members of"
                f" {container[-1] if container else 'the archive'} whose {what} differs"
                " (the build ran as another user or with another umask)",
                matched=f"{key} {change} on {total} members",
                against=f"every {key} change in the archive",
                confidence=HIGH if total >= 3 else MEDIUM,
            )
        ]
    return []


def _collect_owners(root: DiffNode, env: Env) -> None:
    for node in root.walk():
        if node.kind is not NodeKind.FIELD or len(node.path) < 3:
            continue
        key = node.name.lower()
        a = node.left.value if node.left else None
        b = node.right.value if node.right else None
        if key in OWNER_FIELDS:
            change = f"{a} -> {b}"
        elif key == "mode":
            ma, mb = _mode(a), _mode(b)
            if ma is None or mb is None:
                continue
            change = f"{ma ^ mb:04o}"
        else:
            continue
        counter = env.owners.setdefault((node.path[:-2], key), Counter())
        counter[(change, "")] += 1


# --- security rules on paths --------------------------------------------------------------

_LOADER = re.compile(r"^etc/ld\.so\.(?:preload|conf|cache)$|^etc/ld\.so\.conf\.d/")
_INIT = {
    "init": "/init: the first program the kernel runs",
    "linuxrc": "/linuxrc: run by the kernel at boot",
    "cmd": "cmd: the image's command",
    "env": "env: the image's environment",
}
_INIT_IN_ROOTFS = {"sbin/init": "/sbin/init: the init of the root filesystem"}
_ACCOUNTS = re.compile(
    r"^etc/(?:passwd|shadow|group|gshadow|sudoers|sudoers\.d/.*|pam\.d/.*|security/.*)$"
)
_KEYS_DIR = re.compile(
    r"^(?:etc/ssl/|etc/pki/|etc/ssh/|usr/share/ca-certificates/|usr/local/share/ca-certificates/"
    r"|etc/ca-certificates)|(?:^|/)\.ssh/|(?:^|/)(?:certifi|certs?)/"
)
_KEYS_NAME = re.compile(
    r"(?:\.(?:pem|crt|cer|der|key|p12|pfx|jks|keystore|p7b|p8|gpg|asc|pub)$)"
    r"|^(?:ca-certificates\.crt|ca-bundle\.crt|cacert\.pem|authorized_keys|known_hosts"
    r"|id_(?:rsa|dsa|ecdsa|ed25519)|trusted\.gpg|trustdb\.gpg)$"
)
_LIBRARY = re.compile(r"\.so(?:\.\d+)*$")


def security_rules(node: DiffNode) -> list[CauseHint]:
    """Security hints for a filesystem member, from its kernel path and what it holds.

    A metadata-only change of a sensitive path counts when some of it is not explained
    (a build-wide owner change or an mtime of the CA bundle is not a new certificate).
    """
    path = node.fs_path
    if path is None:
        return []
    if node.change is Change.METADATA and all(
        any(h.explains for h in c.causes) for c in node.children
    ):
        return []
    candidates = [path]
    if path.startswith("rootfs/"):
        candidates.append(path[len("rootfs/") :])
    base = path.rsplit("/", 1)[-1]
    out: list[CauseHint] = []

    def add(why: str, against: str) -> None:
        out.append(
            hint(
                Cause.SECURITY,
                f"{why} ({node.change.value}: {path})",
                matched=path,
                against=against,
                confidence=HIGH,
            )
        )

    if any(_LOADER.search(c) for c in candidates):
        add("dynamic loader configuration (ld.so.preload / ld.so.conf)", "the loader's files")
    if path in _INIT:
        add(_INIT[path], "the ramdisk's root")
    for c in candidates:
        if c in _INIT_IN_ROOTFS:
            add(_INIT_IN_ROOTFS[c], "the root filesystem's init")
    if any(_ACCOUNTS.search(c) for c in candidates):
        add("accounts or privilege configuration", "/etc/passwd, shadow, sudoers, pam.d")
    meta = {**_member_meta(node, "left"), **_member_meta(node, "right")}
    content = meta.get("content", "")
    if (
        any(_KEYS_DIR.search(c) for c in candidates)
        or _KEYS_NAME.search(base)
        or content.startswith("PEM")
    ):
        add("certificates or keys", "certificate and key locations, names and PEM content")
    if node.change in (Change.ADDED, Change.REMOVED):
        ftype = meta.get("type", "")
        mode = _mode(meta.get("mode")) or 0
        verb = "added" if node.change is Change.ADDED else "removed"
        if ftype in ("char", "block"):
            add(f"device node {verb}", "device nodes give access to hardware")
        elif ftype == "file" and (content.startswith("ELF shared") or _LIBRARY.search(base)):
            add(f"library {verb}", "shared objects (ELF ET_DYN, *.so)")
        elif ftype == "file" and (content.startswith(("ELF", "script")) or mode & 0o111):
            add(f"executable {verb}", "ELF or script content, or an execute bit")
        if mode & 0o6000:
            add(f"setuid/setgid file {verb} (mode {mode:04o})", "the setuid/setgid bits")
        if meta.get("hard link to") and mode & 0o6111:
            add(
                f"hard link to {meta['hard link to']!r} {verb} (mode {mode:04o})",
                "the linked inode's mode",
            )
    return out


# --- the tree -------------------------------------------------------------------------------


def _role(node: DiffNode, parent_role: str | None) -> str | None:
    for note in node.notes:
        if note in (CODE_NOTE, ADDRESS_NOTE):
            return note
    if node.kind is NodeKind.ELF_SECTION and node.name in CODE_SECTIONS:
        return CODE_NOTE
    if node.kind is NodeKind.SYMBOL:
        return parent_role
    return None


def _own_evidence(node: DiffNode) -> bool:
    return (
        not node.children
        or node.unified_diff is not None
        or (node.left is not None and (node.left.value or "").startswith("@0x"))
    )


def classify_node(
    node: DiffNode, parent: DiffNode | None, env: Env, role: str | None
) -> list[CauseHint]:
    """Causes a node shows by itself (before looking at its neighbours)."""
    hints: list[CauseHint] = list(security_rules(node))
    if node.kind is NodeKind.ORDER:
        return [
            *hints,
            hint(
                Cause.FILE_ORDER,
                node.summary,
                matched=node.summary,
                against="a permutation of the same members; their contents are compared one by one",
                confidence=HIGH,
            ),
        ]
    if node.kind is NodeKind.FIELD:
        return [*hints, *classify_field(node, parent, env)]
    if node.kind is NodeKind.SECTION and node.change in (Change.ADDED, Change.REMOVED):
        return [
            *hints,
            hint(
                Cause.SECURITY,
                f"a whole EIF section ({node.name}) {node.change.value}: the kernel sees"
                " everything in it",
                matched=node.name,
                against="the image's section list",
                confidence=HIGH,
            ),
        ]
    if node.kind is NodeKind.ELF_SECTION and node.change in (Change.ADDED, Change.REMOVED):
        if DEBUG_SECTION.match(node.name) or node.name.startswith(".gnu_debug"):
            return hints  # decided in _classify_elf (stripping)
        return hints
    if node.kind is NodeKind.ELF_SECTION and node.name.startswith(".note.gnu.build-id"):
        return hints  # decided in _classify_elf
    if node.kind is NodeKind.ELF_SECTION and node.name == ".interp":
        hints.append(
            hint(
                Cause.SECURITY,
                "the program interpreter (dynamic loader) changed",
                matched=".interp",
                against="the ELF's PT_INTERP",
                confidence=HIGH,
            )
        )
    if node.unified_diff is not None or "same lines in a different order" in node.notes:
        hints += classify_text(node, env, _toolchain_place(node))
    elif _own_evidence(node):
        hints += classify_bytes(node, env, role)
    if node.name == ".comment" and not any(h.cause is Cause.TOOLCHAIN for h in hints):
        hints.append(
            hint(
                Cause.TOOLCHAIN,
                ".comment holds the compiler/linker identification, but the change is not"
                " only a version",
                matched=".comment",
                against="a version-only change",
                confidence=LOW,
            )
        )
    if any(n.startswith("compression level") for n in node.notes):
        hints.append(
            hint(
                Cause.TOOLCHAIN,
                "same decompressed content, compressed differently",
                matched="the compressed bytes",
                against="the decompressed contents, compared equal",
                confidence=HIGH,
            )
        )
    if "JSON equal after canonical formatting" in node.summary:
        hints.append(
            hint(
                Cause.FILE_ORDER,
                "same JSON value; key order or formatting differs",
                matched="the JSON documents",
                against="their canonical forms, compared equal",
                confidence=HIGH,
            )
        )
    if any(n.startswith("marshal FLAG_REF") for n in node.notes):
        hints.append(
            hint(
                Cause.RANDOM,
                "marshal reference flags depend on reference counts at compile time",
                matched="the marshal bytes",
                against="the code objects, compared equal",
                confidence=HIGH,
            )
        )
    return hints


def _dedupe(hints: Iterable[CauseHint]) -> tuple[CauseHint, ...]:
    """Every distinct security or real finding; one hint per benign cause (the best)."""
    out: list[CauseHint] = []
    for h in hints:
        if h.cause in (Cause.SECURITY, Cause.REAL):
            if all(h.evidence != x.evidence for x in out):
                out.append(h)
        elif all((h.cause, h.confidence) != (x.cause, x.confidence) for x in out) and all(
            not (x.cause is h.cause and x.explains) for x in out
        ):
            out.append(h)
    return tuple(out)


def _annotate(
    node: DiffNode, parent: DiffNode | None, env: Env, parent_role: str | None
) -> DiffNode:
    role = _role(node, parent_role)
    children = tuple(_annotate(c, node, env, role) for c in node.children)
    node = node.model_copy(update={"children": children})
    own = classify_node(node, parent, env, role)
    node = node.model_copy(update={"causes": _dedupe((*node.causes, *own))})
    if node.kind is NodeKind.ELF:
        node = _classify_elf(node)
    return _classify_siblings(node)


def _classify_siblings(node: DiffNode) -> DiffNode:
    """Sizes and checksums: derived when the content they measure differs next to them."""
    content_differs = _own_evidence(node) and node.kind is not NodeKind.FIELD
    siblings = [c for c in node.children if c.kind is not NodeKind.FIELD]
    changed: list[DiffNode] = []
    for child in node.children:
        key = child.name.lower()
        if child.kind is NodeKind.FIELD and key in DERIVED_SIZES and not child.causes:
            if content_differs or siblings:
                child = child.model_copy(
                    update={
                        "causes": (
                            hint(
                                Cause.DERIVED,
                                f"{child.name} follows the content that differs next to it",
                                matched=child.summary,
                                against="the content compared beside it",
                                confidence=HIGH,
                            ),
                        )
                    }
                )
        elif child.kind is NodeKind.FIELD and key == "crc32" and not child.causes and siblings:
            child = child.model_copy(
                update={
                    "causes": (
                        hint(
                            Cause.DERIVED,
                            "the image CRC covers every section, and sections differ",
                            matched=child.summary,
                            against=", ".join(s.name for s in siblings[:4]),
                            confidence=HIGH,
                        ),
                    )
                }
            )
        changed.append(child)
    return node.model_copy(update={"children": tuple(changed)})


def _classify_elf(elf: DiffNode) -> DiffNode:
    """Causes that depend on the rest of the ELF: stripping, build-ids, debug data."""
    notes_strip = [n for n in elf.notes if n.startswith("stripping differs")]
    others = [
        c
        for c in elf.children
        if not (
            c.name == "build-id"
            or c.name.startswith(".note.gnu.build-id")
            or c.name == ".gnu_debuglink"
        )
    ]
    causes_below = {h.cause for c in others for n in c.walk() for h in n.causes if h.explains}
    other_names = (
        ", ".join(dict.fromkeys(c.path[-1] for c in others if c.kind is not NodeKind.FIELD))
        or "fields"
    )
    build_ids = [c for c in elf.walk() if c.name == "build-id" and c.kind is NodeKind.FIELD]
    ids = (
        (build_ids[0].left.value or "", build_ids[0].right.value or "")
        if build_ids and build_ids[0].left and build_ids[0].right
        else ("", "")
    )

    one_sided = [
        c
        for c in elf.children
        if c.kind is NodeKind.ELF_SECTION and c.change in (Change.ADDED, Change.REMOVED)
    ]
    one_sided_names = {c.name for c in one_sided}
    stripped_only = bool(one_sided) and all(
        DEBUG_SECTION.match(n) or n.startswith(".gnu_debug") for n in one_sided_names
    )

    def fix(node: DiffNode) -> DiffNode:
        extra: list[CauseHint] = []
        name = node.name
        explained = any(h.explains or h.cause in (Cause.REAL, Cause.SECURITY) for h in node.causes)
        if not explained and name == "e_shnum" and node.left and node.right:
            try:
                delta = abs(int(node.left.value or "") - int(node.right.value or ""))
            except ValueError:
                delta = -1
            if delta == len(one_sided):
                node = node.model_copy(update={"causes": ()})
                extra.append(
                    hint(
                        Cause.DERIVED,
                        f"the section count follows the {delta} section(s) present on one"
                        " side only",
                        matched=f"e_shnum {node.left.value if node.left else None}"
                        f" -> {node.right.value if node.right else None}",
                        against=", ".join(sorted(one_sided_names)[:6]),
                        confidence=HIGH,
                    )
                )
        elif not explained and name == ".shstrtab" and stripped_only and notes_strip:
            changed = {
                line[1:]
                for line in (node.unified_diff or "").splitlines()
                if line[:1] in "+-" and not line.startswith(("---", "+++"))
            }
            if (
                changed
                and changed <= one_sided_names
                and not _TRUNCATED.search(node.unified_diff or "")
            ):
                node = node.model_copy(update={"causes": ()})
                extra.append(
                    hint(
                        Cause.DEBUG_SYMBOLS,
                        "the section-name table differs only by the debug sections of the"
                        " unstripped side",
                        matched=", ".join(sorted(changed)[:6]),
                        against=notes_strip[0],
                        confidence=HIGH,
                    )
                )
        elif (
            not explained
            and node.kind is NodeKind.FIELD
            and len(node.path) >= 3
            and node.path[-3] == "DWARF"
            and notes_strip
            and (node.left is None or node.right is None)
        ):
            node = node.model_copy(update={"causes": ()})
            extra.append(
                hint(
                    Cause.DEBUG_SYMBOLS,
                    f"{name} only on the {'left' if node.right is None else 'right'}: the"
                    " other side carries no DWARF (stripped)",
                    matched=name,
                    against=notes_strip[0],
                    confidence=HIGH,
                )
            )
        elif name == "build-id" or name.startswith(".note.gnu.build-id"):
            node = node.model_copy(update={"children": (), "causes": ()})
            if others:
                extra.append(
                    hint(
                        Cause.BUILD_ID,
                        "the build-id hashes the file; it follows the differences in"
                        f" {other_names}",
                        matched="the build-id",
                        against=f"the other differences of this ELF: {other_names}",
                        confidence=HIGH,
                    )
                )
            else:
                extra.append(
                    hint(
                        Cause.RANDOM,
                        "only the build-id differs: it was not derived from the contents"
                        " (--build-id=uuid or random)",
                        matched="the build-id",
                        against="every other part of the ELF, compared equal",
                        confidence=MEDIUM,
                    )
                )
        elif name == ".gnu_debuglink" and ids[0] and ids[1]:
            text_a = (node.left.value or "") if node.left else ""
            text_b = (node.right.value or "") if node.right else ""
            wa, wb = _window(text_a), _window(text_b)
            if wa and wb and ids[0][2:10].encode() in wa[1] and ids[1][2:10].encode() in wb[1]:
                node = node.model_copy(update={"causes": ()})
                extra.append(
                    hint(
                        Cause.DERIVED,
                        "the debug link names the separate debug file by build-id",
                        matched=".gnu_debuglink",
                        against="each side's build-id, found in its debug link",
                        confidence=HIGH,
                    )
                )
        elif (
            node.kind is NodeKind.ELF_SECTION
            and node.change
            in (
                Change.ADDED,
                Change.REMOVED,
            )
            and (DEBUG_SECTION.match(name) or name.startswith(".gnu_debug"))
        ):
            if notes_strip:
                side = "left" if node.change is Change.REMOVED else "right"
                extra.append(
                    hint(
                        Cause.DEBUG_SYMBOLS,
                        f"{name} only on the {side}: the other side is stripped",
                        matched=name,
                        against=notes_strip[0],
                        confidence=HIGH,
                    )
                )
        elif not any(h.explains or h.cause is Cause.REAL for h in node.causes) and node.kind in (
            NodeKind.ELF_SECTION,
            NodeKind.SYMBOL,
            NodeKind.BINARY,
            NodeKind.TEXT,
        ):
            section = node.path[-1] if node.kind is not NodeKind.SYMBOL else node.path[-2]
            if DEBUG_SECTION.match(section) or section == "symbols":
                if Cause.BUILD_PATH in causes_below and section.startswith(".debug"):
                    extra.append(
                        hint(
                            Cause.BUILD_PATH,
                            "debug data refers to changed path strings (offsets shift when"
                            " their lengths change)",
                            matched=section,
                            against="build-path differences with evidence in this ELF",
                            confidence=MEDIUM,
                        )
                    )
                elif notes_strip:
                    extra.append(
                        hint(
                            Cause.DEBUG_SYMBOLS,
                            "symbol/debug tables differ with stripping",
                            matched=section,
                            against=notes_strip[0],
                            confidence=HIGH,
                        )
                    )
        children = tuple(fix(c) for c in node.children)
        return node.model_copy(
            update={"children": children, "causes": _dedupe((*node.causes, *extra))}
        )

    children = tuple(fix(c) for c in elf.children)
    return elf.model_copy(update={"children": children})


def own_significance(hints: Sequence[CauseHint]) -> Significance:
    causes = {h.cause for h in hints}
    if Cause.SECURITY in causes:
        return Significance.SECURITY
    if causes & {Cause.REAL, Cause.UNEXPLAINED}:
        return Significance.UNEXPLAINED
    if any(h.explains and h.cause in BENIGN_CAUSES for h in hints):
        return Significance.BENIGN
    if any(h.explains and h.cause in DERIVED_CAUSES for h in hints):
        return Significance.DERIVED
    return Significance.UNEXPLAINED


def _settle(node: DiffNode) -> DiffNode:
    """Fill UNEXPLAINED where nothing explains a node's own evidence, then significance."""
    children = tuple(_settle(c) for c in node.children)
    causes = node.causes
    own: Significance | None = None
    if _own_evidence(node) or any(h.cause is Cause.SECURITY for h in causes):
        if not any(
            h.explains or h.cause in (Cause.SECURITY, Cause.REAL, Cause.UNEXPLAINED) for h in causes
        ):
            possible = "; possible: " + ", ".join(h.cause.value for h in causes) if causes else ""
            causes = (
                hint(
                    Cause.UNEXPLAINED,
                    f"no evidence of a benign cause{possible}: treat it as a real change",
                    matched=_clip(node.summary, 120),
                    against="every classifier (time window, build directories, order,"
                    " toolchain versions, owners, locale)",
                    confidence=HIGH,
                ),
                *causes,
            )
        own = own_significance(causes)
    ranks = [c.significance for c in children if c.significance is not None]
    if own is not None:
        ranks.append(own)
    significance = min(ranks, key=lambda s: s.rank) if ranks else Significance.UNEXPLAINED
    return node.model_copy(
        update={"children": children, "causes": causes, "significance": significance}
    )


def _roll_up(node: DiffNode) -> DiffNode:
    if not node.children:
        return node
    children = tuple(_roll_up(c) for c in node.children)
    found: dict[Cause, tuple[int, CauseHint, str]] = {}
    for child in children:
        for h in child.causes:
            count, first, where = found.get(h.cause, (0, h, ""))
            if not where:
                where = "/".join(child.path[len(node.path) :]) or child.name
            found[h.cause] = (count + 1, first, where)
    own = {h.cause for h in node.causes}
    rolled = [
        first.model_copy(
            update={
                "evidence": f"{where}: {first.evidence}"
                if n == 1
                else f"{n} places below, e.g. {where}: {first.evidence}",
                "matched": f"{BELOW}{where}",
            }
        )
        for c, (n, first, where) in found.items()
        if c not in own
    ]
    rolled.sort(key=lambda h: _CAUSE_ORDER.get(h.cause, 5))
    return node.model_copy(update={"children": children, "causes": (*node.causes, *rolled)})


#: ``matched`` of a hint rolled up from below (not the node's own evidence)
BELOW = "below: "

_CAUSE_ORDER = {
    Cause.SECURITY: 0,
    Cause.REAL: 1,
    Cause.UNEXPLAINED: 1,
    Cause.DERIVED: 9,
    Cause.BUILD_ID: 9,
}


def _change_rank(node: DiffNode) -> int:
    return {
        Change.CONTENT: 0,
        Change.ADDED: 1,
        Change.REMOVED: 1,
        Change.REORDERED: 2,
        Change.METADATA: 3,
    }[node.change] + (1 if node.kind is NodeKind.FIELD else 0)


def rank(node: DiffNode) -> tuple[int, int, int, int]:
    """Most important first: security-relevant, unexplained, benign, derived; within each,
    what moves a PCR before what does not; then content, presence, order, metadata."""
    significance = node.significance or Significance.UNEXPLAINED
    real = 0 if any(h.cause is Cause.REAL for h in node.causes) else 1
    return (significance.rank, real, 0 if node.pcrs else 1, _change_rank(node))


def _sort(node: DiffNode) -> DiffNode:
    children = sorted((_sort(c) for c in node.children), key=rank)
    return node.model_copy(update={"children": tuple(children)})


def classify(
    root: DiffNode, evidence: Evidence | None = None, *, now: float | None = None
) -> DiffNode:
    """Attach causes, significance and order to every node of a finished tree (pure).

    ``evidence`` is what each side recorded about its build; ``now`` bounds plausible
    build clocks (default: the current time).
    """
    import time

    env = Env(evidence or Evidence(), now=time.time() if now is None else now)
    _collect_owners(root, env)
    return _sort(_roll_up(_settle(_annotate(root, None, env, None))))


def reclassify(root: DiffNode) -> DiffNode:
    """Significance, rolled-up causes and order again after differences were left out
    (``diff --exclude``): each node keeps its own hints; what it said about the nodes
    below it is recomputed from what is still there."""

    def strip(node: DiffNode) -> DiffNode:
        return node.model_copy(
            update={
                "children": tuple(strip(c) for c in node.children),
                "causes": tuple(own_hints(node)),
            }
        )

    return _sort(_roll_up(_settle(strip(root))))


def own_hints(node: DiffNode) -> list[CauseHint]:
    """The node's own hints (not those summarised from below)."""
    return [h for h in node.causes if not h.matched.startswith(BELOW)]


def is_item(node: DiffNode) -> bool:
    """A difference counted on its own: a node with its own evidence, or a filesystem
    member that is security-relevant by itself (its path, its privilege bits)."""
    return _own_evidence(node) or (
        node.fs_path is not None and any(h.cause is Cause.SECURITY for h in own_hints(node))
    )


def items(root: DiffNode) -> list[DiffNode]:
    """Every difference counted on its own, in display order (a security-relevant member
    stands for the differences inside it)."""
    out: list[DiffNode] = []

    def visit(node: DiffNode) -> None:
        if is_item(node):
            out.append(node)
            if node.fs_path is not None and own_significance(own_hints(node)) is (
                Significance.SECURITY
            ):
                return
        for child in node.children:
            visit(child)

    visit(root)
    return out


def significance_counts(root: DiffNode) -> dict[str, int]:
    counts: Counter[Significance] = Counter()
    for node in items(root):
        counts[own_significance(own_hints(node))] += 1
    return {s.value: counts[s] for s in sorted(counts, key=lambda s: s.rank)}
