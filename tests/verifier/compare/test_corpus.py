"""Injected nondeterminism on real images: each case is reported at the right path, with
the right cause, explained by evidence (benign), with the right PCRs.

A case is one row: a change to the base image spec, the path (suffix) where the
difference must be reported, the cause expected there, and the PCRs it must name.  Add a
row to add a case.  The real changes (never benign) are in ``test_real_changes.py``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from compare_corpus import T0, Artefacts, FileSpec, ImageSpec

from builder.initramfs.newc import EntryKind
from enclave_audit.model.difference import Cause, DiffNode, Significance
from verifier.compare import compare_paths
from verifier.compare.causes import own_hints


@dataclass(frozen=True)
class Case:
    id: str
    change: Callable[[ImageSpec, Artefacts], ImageSpec]
    where: tuple[str, ...]  # path suffix of the node that must report it
    cause: Cause
    pcrs: tuple[int, ...]


def _file(name: str, **changes: object) -> Callable[[ImageSpec, Artefacts], ImageSpec]:
    def change(spec: ImageSpec, art: Artefacts) -> ImageSpec:
        old = spec.files[name]
        values = {k: (v(art) if callable(v) else v) for k, v in changes.items()}
        return spec.with_file(name, FileSpec(**{**old.__dict__, **values}))

    return change


def _every_file(**changes: object) -> Callable[[ImageSpec, Artefacts], ImageSpec]:
    """The same change on every member (what a build as another user or umask does)."""

    def change(spec: ImageSpec, art: Artefacts) -> ImageSpec:
        files = {}
        for name, old in spec.files.items():
            values = {k: (v(old) if callable(v) else v) for k, v in changes.items()}
            files[name] = FileSpec(**{**old.__dict__, **values})
        return spec.replace(files=files)

    return change


def _reordered(spec: ImageSpec, art: Artefacts) -> ImageSpec:
    names = sorted(spec.files, key=lambda n: n.split("/"))
    # keep parents before children, but list the etc/ subtree last
    order = [n for n in names if not n.startswith("etc")] + [
        n for n in names if n.startswith("etc")
    ]
    return spec.replace(order=tuple(order))


def _json_reordered(spec: ImageSpec, art: Artefacts) -> ImageSpec:
    data = json.loads(spec.files["etc/settings.json"].data)
    text = json.dumps(dict(reversed(list(data.items())))) + "\n"
    return spec.with_file("etc/settings.json", FileSpec(text.encode()))


def _gz(mtime: int) -> bytes:
    return gzip.compress(b"changelog entry\n" * 20, mtime=mtime)


def _umask(old: FileSpec) -> int:
    return old.perm | 0o020 if old.kind is not EntryKind.SYMLINK else old.perm


CASES = [
    Case(
        "mtime",
        _file("etc/config.txt", mtime=T0 + 3600),
        ("ramdisk[1]", "etc/config.txt", "mtime"),
        Cause.TIMESTAMP,
        (0, 2),
    ),
    Case(
        "build-path-in-debug-info",
        _file("usr/bin/hello", data=lambda a: a.elf_other_dir),
        ("ramdisk[1]", "usr/bin/hello", "DW_AT_comp_dir"),
        Cause.BUILD_PATH,
        (0, 2),
    ),
    Case("reordered-cpio", _reordered, ("ramdisk[1]", "(member order)"), Cause.FILE_ORDER, (0, 2)),
    Case(
        "build-user",
        _every_file(uid=1000, gid=1000),
        ("ramdisk[1]", "etc/config.txt", "uid"),
        Cause.OWNERSHIP,
        (0, 2),
    ),
    Case(
        "umask",
        _every_file(perm=_umask),
        ("ramdisk[1]", "etc/config.txt", "mode"),
        Cause.OWNERSHIP,
        (0, 2),
    ),
    Case(
        "unstripped-binary",
        _file("usr/bin/tool", data=lambda a: a.elf),
        ("ramdisk[1]", "usr/bin/tool", ".symtab"),
        Cause.DEBUG_SYMBOLS,
        (0, 2),
    ),
    Case(
        "pyc-timestamp",
        _file("usr/lib/app/mod.pyc", data=lambda a: a.pyc_later),
        ("ramdisk[1]", "usr/lib/app/mod.pyc", "source_mtime"),
        Cause.TIMESTAMP,
        (0, 2),
    ),
    Case(
        "compiler-comment",
        _file("usr/bin/hello", data=lambda a: a.elf_comment),
        ("ramdisk[1]", "usr/bin/hello", ".comment"),
        Cause.TOOLCHAIN,
        (0, 2),
    ),
    Case(
        "build-stamp-in-rodata",
        _file("usr/bin/stamp", data=lambda a: a.stamped_later),
        ("ramdisk[1]", "usr/bin/stamp", ".rodata"),
        Cause.TIMESTAMP,
        (0, 2),
    ),
    Case(
        "uuid-build-id",
        _file("usr/bin/worker", data=lambda a: a.uuid_ids[1]),
        ("ramdisk[1]", "usr/bin/worker", "build-id"),
        Cause.RANDOM,
        (0, 2),
    ),
    Case(
        "locale-collation",
        _file("usr/share/words.txt", data=b"Apple\nCherry\nbanana\ndate\n"),
        ("ramdisk[1]", "usr/share/words.txt"),
        Cause.LOCALE,
        (0, 2),
    ),
    Case(
        "json-key-order",
        _json_reordered,
        ("ramdisk[1]", "etc/settings.json"),
        Cause.FILE_ORDER,
        (0, 2),
    ),
    Case(
        "config-timestamp",
        _file(
            "etc/config.txt",
            data=b"mode=production\nthreads=4\n",
            mtime=T0,
        ),
        ("ramdisk[1]", "etc/config.txt"),
        Cause.TIMESTAMP,
        (0, 2),
    ),
    Case(
        "build-time-metadata",
        lambda s, a: s.replace(build_time="2023-11-15T09:30:00Z"),
        ("metadata", "BuildMetadata.BuildTime"),
        Cause.TIMESTAMP,
        (),
    ),
]


def _gz_case() -> Case:
    def change(spec: ImageSpec, art: Artefacts) -> ImageSpec:
        return spec.with_file("usr/share/changelog.gz", FileSpec(_gz(T0 + 7200)))

    return Case(
        "gzip-header-mtime", change, ("usr/share/changelog.gz", "mtime"), Cause.TIMESTAMP, (0, 2)
    )


CASES.append(_gz_case())


def _base_for(case: Case, base_spec: ImageSpec) -> ImageSpec:
    if case.id == "gzip-header-mtime":
        return base_spec.with_file("usr/share/changelog.gz", FileSpec(_gz(T0)))
    if case.id == "config-timestamp":
        stamped = b"mode=production\nthreads=4\n# generated 2023-11-14 22:13:20\n"
        later = b"mode=production\nthreads=4\n# generated 2023-11-14 23:41:07\n"
        base_spec = base_spec.with_file("etc/config.txt", FileSpec(stamped))
        object.__setattr__(
            case, "change", lambda s, a: s.with_file("etc/config.txt", FileSpec(later))
        )
    return base_spec


@pytest.fixture(scope="module")
def reports(artefacts: Artefacts, base_spec: ImageSpec, base_image: Path) -> dict[str, DiffNode]:
    out: dict[str, DiffNode] = {}
    for case in CASES:
        base = _base_for(case, base_spec)
        left = base_image if base is base_spec else artefacts.image(base, f"{case.id}-a.eif")
        right = artefacts.image(case.change(base, artefacts), f"{case.id}.eif")
        report = compare_paths(left, right)
        assert report.root is not None, case.id
        out[case.id] = report.root
    return out


def _subsequence(want: tuple[str, ...], path: tuple[str, ...]) -> bool:
    it = iter(path)
    return all(any(seg == p for p in it) for seg in want)


def _find(root: DiffNode, suffix: tuple[str, ...]) -> DiffNode:
    """The first node whose path ends with suffix[-1] and contains all of suffix in order."""
    for node in root.walk():
        if node.path[-1] == suffix[-1] and _subsequence(suffix, node.path):
            return node
    paths = "\n".join("/".join(n.path) for n in root.walk())
    raise AssertionError(f"no node at .../{'/'.join(suffix)}; tree:\n{paths}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_reported_at_path_with_cause_and_pcrs(
    case: Case, reports: dict[str, DiffNode]
) -> None:
    root = reports[case.id]
    node = _find(root, case.where)
    explaining = [h for h in own_hints(node) if h.explains]
    assert explaining and explaining[0].cause is case.cause, (case.id, node.path, node.causes)
    assert node.significance is Significance.BENIGN, (case.id, node.causes)
    assert node.pcrs == case.pcrs, (case.id, node.pcrs)
    assert root.pcrs == tuple(p for p in case.pcrs if p != 8), (case.id, root.pcrs)
    for hint in node.causes:
        assert hint.evidence and hint.matched and hint.against  # evidence is always shown
    # nondeterminism only: nothing in the whole image is unexplained or security-relevant
    unexplained = [
        "/".join(n.path) + f" {n.causes[:1]}"
        for n in root.walk()
        if n.significance in (Significance.UNEXPLAINED, Significance.SECURITY)
    ]
    assert root.significance in (Significance.BENIGN, Significance.DERIVED), unexplained


def test_identical_images_short_circuit(
    base_image: Path, artefacts: Artefacts, base_spec: ImageSpec
) -> None:
    again = artefacts.image(base_spec, "again.eif")
    report = compare_paths(base_image, again)
    assert report.identical and report.root is None


def test_build_id_follows_other_changes(reports: dict[str, DiffNode]) -> None:
    build_id = _find(reports["build-path-in-debug-info"], ("usr/bin/hello", "notes", "build-id"))
    assert build_id.causes[0].cause is Cause.BUILD_ID


def test_timestamp_evidence_decodes_the_clock(reports: dict[str, DiffNode]) -> None:
    node = _find(reports["mtime"], ("etc/config.txt", "mtime"))
    assert "2023-11-14T22:13:20Z" in node.causes[0].evidence
    assert "2023-11-14T23:13:20Z" in node.causes[0].evidence


def test_toolchain_evidence_names_versions(reports: dict[str, DiffNode]) -> None:
    node = _find(reports["compiler-comment"], ("usr/bin/hello", ".comment"))
    toolchain = next(h for h in node.causes if h.cause is Cause.TOOLCHAIN)
    assert "99." in toolchain.evidence and ".comment" in toolchain.against


def test_parents_summarize_causes(reports: dict[str, DiffNode]) -> None:
    root = reports["pyc-timestamp"]
    assert Cause.TIMESTAMP in root.all_causes()
    assert any(h.cause is Cause.TIMESTAMP for h in root.causes)


def _signing_pair(root: Path, name: str) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA384())
    )
    cert_path, key_path = root / f"{name}.crt", root / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_signature_and_extra_ramdisk_sections(artefacts: Artefacts, base_image: Path) -> None:
    from builder.eif import EifReader, write_eif

    root = artefacts.root / "signed"
    root.mkdir(exist_ok=True)
    with EifReader.open(base_image) as r:
        parts = []
        for i, section in enumerate(r.ramdisks):
            parts.append(root / f"r{i}")
            r.copy_section(section, parts[-1])
        cmdline = r.cmdline_text()
    common = {
        "kernel": artefacts.kernel,
        "cmdline": cmdline,
        "name": "corpus",
        "version": "1.0",
        "build_time": "2026-11-23T00:00:00Z",
    }
    signed_a = root / "a.eif"
    signed_b = root / "b.eif"
    write_eif(signed_a, ramdisks=parts, signing=_signing_pair(root, "one"), **common)
    write_eif(signed_b, ramdisks=parts, signing=_signing_pair(root, "two"), **common)
    root_node = compare_paths(signed_a, signed_b).root
    assert root_node is not None
    signature = _find(root_node, ("signature",))
    assert signature.pcrs == (8,) and root_node.pcrs == ()
    assert "PCR0/1/2 equal" in root_node.summary
    unsigned_extra = root / "c.eif"
    write_eif(unsigned_extra, ramdisks=[*parts, parts[0]], **common)
    node = compare_paths(base_image, unsigned_extra).root
    assert node is not None
    extra = _find(node, ("ramdisk[2]",))
    assert extra.change.value == "added" and extra.pcrs == (0, 2)
