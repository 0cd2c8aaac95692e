"""Debian archives read directly: sources lines, Release files, Packages indices, pool paths.

No host apt configuration is consulted: an index is fetched from the mirror a spec
names (``dists/SUITE/InRelease`` -> ``COMPONENT/binary-ARCH/Packages.xz`` -> pool
path), each file checked against the digest the level above lists.  The InRelease
signature is checked with ``gpgv`` against a keyring when one is given; a locked
build does not depend on it (every .deb is pinned by sha256 in the lock), while
``lock update``, which trusts the index to tell it what to pin, requires it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from debian import deb822
from debian.debian_support import Version

from builder.inputs.fetch import FetchFailed, fetch_bytes
from enclave_audit.errors import EnvironmentProblem, SpecInvalid, TrustError
from enclave_audit.tools import require

#: the keyring Debian's own tools trust for the official archives
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
#: bounds on what an index may inflate to (bookworm main amd64 is about 50 MB)
RELEASE_LIMIT = 4 << 20
PACKAGES_LIMIT = 512 << 20
_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$")
_URI = re.compile(r"^(https?)://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%+/-]*)?$")
_OPTION = re.compile(r"^[a-z][a-z-]*=[A-Za-z0-9._,/:+-]+$")


@dataclass(frozen=True)
class AptSource:
    """One ``deb [opts] URI SUITE COMPONENT...`` line of a spec's ``mirrors``."""

    uri: str
    suite: str
    components: tuple[str, ...]
    options: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        opts = f" [{' '.join(self.options)}]" if self.options else ""
        return f"deb{opts} {self.uri} {self.suite} {' '.join(self.components)}"

    @property
    def archive(self) -> str:
        """The archive's name, as snapshot.debian.org names it (``debian``, ``debian-security``)."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


def parse_source_line(line: str) -> AptSource:
    """Parse one one-line sources entry; anything outside the grammar is :class:`SpecInvalid`.

    Accepted: ``deb``, optional ``[key=value ...]``, an http(s) URI, a suite and one or
    more components, each a plain word.  Nothing can start with ``-``, so no value can
    become an option of a tool it is passed to.
    """
    words = line.split()
    if not words or words[0] != "deb":
        raise SpecInvalid(f"mirror {line!r}: must start with 'deb' (deb URI SUITE COMPONENT...)")
    words = words[1:]
    options: list[str] = []
    if words and words[0].startswith("["):
        text = " ".join(words)
        end = text.find("]")
        if end < 0:
            raise SpecInvalid(f"mirror {line!r}: unterminated [options]")
        options = text[1:end].split()
        words = text[end + 1 :].split()
        for opt in options:
            if not _OPTION.match(opt):
                raise SpecInvalid(f"mirror {line!r}: option {opt!r} is not key=value")
    if len(words) < 3:
        raise SpecInvalid(f"mirror {line!r}: expected deb URI SUITE COMPONENT...")
    uri, suite, *components = words
    if not _URI.match(uri):
        raise SpecInvalid(f"mirror {line!r}: {uri!r} is not a plain http(s) URI")
    for word in (suite, *components):
        if not _WORD.match(word):
            raise SpecInvalid(f"mirror {line!r}: {word!r} is not a suite or component name")
    return AptSource(uri.rstrip("/"), suite, tuple(components), tuple(options))


@dataclass(frozen=True)
class PackageRecord:
    """What an index says about one package version."""

    name: str
    version: str
    arch: str
    filename: str
    sha256: str
    size: int
    #: the suite whose index listed it (``bookworm-security``...)
    suite: str = ""
    source: str = ""


@dataclass
class ReleaseFile:
    suite: str
    codename: str
    date: datetime | None
    files: dict[str, tuple[str, int]]  # path -> (sha256, size)
    signed: bool


def _strip_clearsign(text: str) -> str:
    """The signed body of a clearsigned message (without checking the signature)."""
    if not text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        return text
    body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    body = body.split("\n-----BEGIN PGP SIGNATURE-----", 1)[0]
    return "\n".join(ln[2:] if ln.startswith("- ") else ln for ln in body.split("\n")) + "\n"


def _gpgv(keyring: Path, signed: bytes, *, detached: bytes | None = None) -> bytes:
    """The verified content of ``signed`` (clearsigned, or data with a detached signature)."""
    gpgv = require("gpgv")
    with tempfile.TemporaryDirectory(prefix="gpgv-") as tmp:
        data = Path(tmp) / "data"
        data.write_bytes(signed)
        out = Path(tmp) / "out"
        argv = [gpgv, "--quiet", "--keyring", str(keyring)]
        if detached is None:
            argv += ["--output", str(out), "--", str(data)]
        else:
            sig = Path(tmp) / "sig"
            sig.write_bytes(detached)
            argv += ["--", str(sig), str(data)]
        done = subprocess.run(argv, capture_output=True, check=False, timeout=60)
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise TrustError(
                f"Release signature does not verify against {keyring}"
                f" ({detail[-1] if detail else 'gpgv failed'})"
            )
        return signed if detached is not None else out.read_bytes()


def parse_release(text: str, *, signed: bool) -> ReleaseFile:
    para = deb822.Release(text)
    files: dict[str, tuple[str, int]] = {}
    for entry in para.get("SHA256", []):
        files[entry["name"]] = (entry["sha256"], int(entry["size"]))
    date: datetime | None = None
    if "Date" in para:
        try:
            date = datetime.strptime(para["Date"], "%a, %d %b %Y %H:%M:%S %Z").replace(tzinfo=UTC)
        except ValueError:
            date = None
    return ReleaseFile(
        suite=para.get("Suite", ""),
        codename=para.get("Codename", ""),
        date=date,
        files=files,
        signed=signed,
    )


def fetch_release(base: str, suite: str, *, keyring: Path | None) -> ReleaseFile:
    """``dists/SUITE/InRelease`` (or ``Release`` + ``Release.gpg``), verified when keyring."""
    url = f"{base}/dists/{suite}"
    try:
        raw = fetch_bytes(f"{url}/InRelease", limit=RELEASE_LIMIT)
        text = (_gpgv(keyring, raw) if keyring else raw).decode("utf-8", "replace")
        return parse_release(_strip_clearsign(text), signed=keyring is not None)
    except FetchFailed:
        pass
    raw = fetch_bytes(f"{url}/Release", limit=RELEASE_LIMIT)
    if keyring:
        _gpgv(keyring, raw, detached=fetch_bytes(f"{url}/Release.gpg", limit=1 << 16))
    return parse_release(raw.decode("utf-8", "replace"), signed=keyring is not None)


def _inflate(name: str, data: bytes) -> bytes:
    if name.endswith(".xz"):
        dec = lzma.LZMADecompressor()
        out = dec.decompress(data, max_length=PACKAGES_LIMIT + 1)
    elif name.endswith(".gz"):
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            out = gz.read(PACKAGES_LIMIT + 1)
    else:
        out = data
    if len(out) > PACKAGES_LIMIT:
        raise FetchFailed(name, f"index inflates beyond {PACKAGES_LIMIT} bytes")
    return out


def iter_packages(text: bytes, suite: str = "") -> Iterator[PackageRecord]:
    """Records of a Packages file (only the fields a pin needs)."""
    wanted = ["Package", "Version", "Architecture", "Filename", "SHA256", "Size", "Source"]
    for para in deb822.Packages.iter_paragraphs(io.BytesIO(text), use_apt_pkg=False, fields=wanted):
        try:
            yield PackageRecord(
                name=para["Package"],
                version=para["Version"],
                arch=para["Architecture"],
                filename=para["Filename"],
                sha256=para["SHA256"],
                size=int(para["Size"]),
                suite=suite,
                source=para.get("Source", "").split(" ", 1)[0] or para["Package"],
            )
        except (KeyError, ValueError):
            continue


@dataclass
class SuiteIndex:
    """The package records of one suite's components for one architecture."""

    source: AptSource
    base: str
    release: ReleaseFile
    records: dict[tuple[str, str], list[PackageRecord]] = field(default_factory=dict)
    by_name: dict[str, list[PackageRecord]] = field(default_factory=dict)

    def add(self, rec: PackageRecord) -> None:
        self.records.setdefault((rec.name, rec.version), []).append(rec)
        self.by_name.setdefault(rec.name, []).append(rec)

    def lookup(self, name: str, version: str, arch: str | None = None) -> PackageRecord | None:
        for rec in self.records.get((name, version), ()):
            if arch is None or rec.arch == arch:
                return rec
        return None

    def newest(self, name: str) -> PackageRecord | None:
        best: PackageRecord | None = None
        for rec in self.by_name.get(name, ()):
            if best is None or Version(rec.version) > Version(best.version):
                best = rec
        return best

    def all_records(self) -> Iterable[PackageRecord]:
        for recs in self.records.values():
            yield from recs

    def url(self, record: PackageRecord) -> str:
        return f"{self.base}/{record.filename}"


def load_suite(
    source: AptSource,
    *,
    base: str | None = None,
    arch: str = "amd64",
    keyring: Path | None = None,
) -> SuiteIndex:
    """Fetch and parse the index of ``source`` (at ``base``, default its own URI).

    Raises :class:`FetchFailed` when the archive cannot be reached or lacks the index.
    """
    base = (base or source.uri).rstrip("/")
    release = fetch_release(base, source.suite, keyring=keyring)
    index = SuiteIndex(source=source, base=base, release=release)
    for component in source.components:
        stem = f"{component}/binary-{arch}/Packages"
        for suffix in (".xz", ".gz", ""):
            listed = release.files.get(stem + suffix)
            if listed is None:
                continue
            sha256, size = listed
            url = f"{base}/dists/{source.suite}/{stem}{suffix}"
            data = fetch_bytes(url, limit=size)
            if hashlib.sha256(data).hexdigest() != sha256:
                raise FetchFailed(url, "index does not match the sha256 its Release lists")
            for rec in iter_packages(_inflate(stem + suffix, data), source.suite):
                index.add(rec)
            break
        else:
            raise FetchFailed(f"{base}/dists/{source.suite}", f"Release lists no {stem}")
    return index


def archive_keyring() -> Path:
    """``ENCLAVE_AUDIT_ARCHIVE_KEYRING``, else the keyring Debian's tools trust."""
    import os

    return Path(os.environ.get("ENCLAVE_AUDIT_ARCHIVE_KEYRING") or DEBIAN_KEYRING)


def require_keyring(path: Path | None) -> Path:
    keyring = path or archive_keyring()
    if not keyring.is_file():
        raise EnvironmentProblem(
            f"archive keyring {keyring} not found: install debian-archive-keyring"
            " (apt-get install debian-archive-keyring) or pass --keyring"
        )
    return keyring
