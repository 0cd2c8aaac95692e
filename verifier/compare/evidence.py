"""What each side of a comparison records about its own build: the evidence classifiers use.

A benign cause is claimed only against something recorded: a clock value against the
build's plausible window (from the build manifests' ``SOURCE_DATE_EPOCH``, the EIF's
``BuildTime``, the file's own modification time), a path against the build directories
the side recorded (DWARF ``DW_AT_comp_dir``).  Comparators add what they find while
they walk (``Evidence.left.add_time(...)``); :func:`verifier.compare.causes.classify`
reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

DAY = 86400
HOUR = 3600
#: dates outside this range are not build clocks
TS_MIN = 946684800  # 2000-01-01
TS_MAX = 4102444800  # 2100-01-01


def utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TimeSource:
    """A time one side recorded, and what it means for the window of plausible clocks."""

    value: float
    what: str  # "EIF BuildTime", "manifest SOURCE_DATE_EPOCH", "file modification time"
    #: an epoch (SOURCE_DATE_EPOCH, a build time): a leaked wall clock lies between it and
    #: now; a write time: a clock the build left lies shortly before it
    epoch: bool = True

    def interval(self, now: float) -> tuple[float, float]:
        if self.epoch:
            return (self.value - DAY, max(self.value, now) + DAY)
        return (self.value - DAY, self.value + HOUR)


@dataclass
class SideEvidence:
    times: list[TimeSource] = field(default_factory=list)
    #: build directory -> where it was recorded
    build_dirs: dict[str, str] = field(default_factory=dict)

    def add_time(self, value: float, what: str, *, epoch: bool = True) -> None:
        if TS_MIN <= value < TS_MAX and all(t.value != value or t.what != what for t in self.times):
            self.times.append(TimeSource(value, what, epoch))

    def add_build_dir(self, path: str, where: str) -> None:
        path = path.rstrip("/")
        if path.startswith("/") and path.count("/") >= 1 and len(path) > 1:
            self.build_dirs.setdefault(path, where)

    def window_for(self, value: float, now: float) -> TimeSource | None:
        """The recorded time whose window holds ``value``, if any."""
        for source in self.times:
            lo, hi = source.interval(now)
            if lo <= value <= hi:
                return source
        return None

    def build_dir_of(self, path: str) -> str | None:
        """The longest recorded build directory that ``path`` lies in (or is)."""
        best: str | None = None
        for d in self.build_dirs:
            if (path == d or path.startswith(d + "/")) and (best is None or len(d) > len(best)):
                best = d
        return best


@dataclass
class Evidence:
    left: SideEvidence = field(default_factory=SideEvidence)
    right: SideEvidence = field(default_factory=SideEvidence)

    def sides(self) -> tuple[SideEvidence, SideEvidence]:
        return self.left, self.right
