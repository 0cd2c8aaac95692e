"""The diffoscope-like comparison engine for enclave images.

``COMPARATORS`` is the ordered registry, most specific first; the last entry (bytes)
recognizes everything.  Adding a format = one module here + one entry below + one test
module under ``tests/verifier/compare/``.
"""

from __future__ import annotations

from verifier.compare.archive import GzipComparator, TarComparator, XzComparator, ZipComparator
from verifier.compare.base import Comparator
from verifier.compare.binary import BinaryComparator
from verifier.compare.cpio import CpioComparator
from verifier.compare.eif import EifComparator
from verifier.compare.elf import ElfComparator
from verifier.compare.engine import Engine, compare_paths
from verifier.compare.kernel import KernelComparator
from verifier.compare.pyc import PycComparator
from verifier.compare.text import TextComparator

COMPARATORS: tuple[Comparator, ...] = (
    EifComparator(),
    CpioComparator(),
    KernelComparator(),
    ElfComparator(),
    PycComparator(),
    GzipComparator(),
    XzComparator(),
    ZipComparator(),
    TarComparator(),
    TextComparator(),
    BinaryComparator(),
)

__all__ = ["COMPARATORS", "Engine", "compare_paths"]
