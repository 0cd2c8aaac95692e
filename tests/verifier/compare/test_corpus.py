"""Injected nondeterminism on real images: each case is reported at the right path,
with the right cause and the right PCRs.

A case is one row: a change to the base image spec, the path (suffix) where the
difference must be reported, the cause expected there, and the PCRs it must name.
Add a row to add a case.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from compare_corpus import Artefacts, FileSpec, ImageSpec

from enclave_audit.model.difference import Cause, DiffNode, NodeKind
from verifier.compare import compare_paths


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


CASES = [
    Case(
        "mtime",
        _file("etc/config.txt", mtime=1_700_003_600),
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
        "owner",
        _file("etc/config.txt", uid=1000),
        ("ramdisk[1]", "etc/config.txt", "uid"),
        Cause.OWNERSHIP,
        (0, 2),
    ),
    Case(
        "mode",
        _file("usr/bin/hello", perm=0o4755),
        ("ramdisk[1]", "usr/bin/hello", "mode"),
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
        "one-byte-in-function",
        _file("usr/bin/hello", data=lambda a: a.elf_one_byte),
        ("ramdisk[1]", "usr/bin/hello", ".text", "compute"),
        Cause.UNKNOWN,
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
        "random-bytes",
        _file("usr/lib/app/seed.bin", data=bytes.fromhex("9f" * 4) + bytes(range(97, 125))),
        ("ramdisk[1]", "usr/lib/app/seed.bin"),
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
        "text-timestamp",
        _file("etc/config.txt", data=b"mode=production\nthreads=4\n# built 2026-11-23 02:35:56\n"),
        ("ramdisk[1]", "etc/config.txt"),
        Cause.UNKNOWN,
        (0, 2),
    ),
    Case(
        "boot-ramdisk",
        lambda s, a: s.with_boot("init", FileSpec(b"#!/bin/sh\nexec /usr/bin/tool\n", perm=0o755)),
        ("ramdisk[0]", "init"),
        Cause.UNKNOWN,
        (0, 1),
    ),
    Case(
        "cmdline",
        lambda s, a: s.replace(cmdline=s.cmdline + " debug"),
        ("cmdline",),
        Cause.UNKNOWN,
        (0, 1),
    ),
    Case(
        "build-time-metadata",
        lambda s, a: s.replace(build_time="2026-11-24T09:30:00Z"),
        ("metadata", "BuildMetadata.BuildTime"),
        Cause.TIMESTAMP,
        (),
    ),
]


def _gz_case() -> Case:
    def change(spec: ImageSpec, art: Artefacts) -> ImageSpec:
        return spec.with_file("usr/share/changelog.gz", FileSpec(_gz(1_700_007_200)))

    return Case(
        "gzip-header-mtime", change, ("usr/share/changelog.gz", "mtime"), Cause.TIMESTAMP, (0, 2)
    )


CASES.append(_gz_case())


def _base_for(case: Case, base_spec: ImageSpec) -> ImageSpec:
    if case.id == "gzip-header-mtime":
        return base_spec.with_file("usr/share/changelog.gz", FileSpec(_gz(1_700_000_000)))
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
    causes = [h.cause for h in node.causes]
    if case.cause is Cause.UNKNOWN and case.id == "text-timestamp":
        # an added line is a content change; its date is named as a timestamp when it replaces one
        assert node.unified_diff and "+# built 2026-11-23 02:35:56" in node.unified_diff
    else:
        assert case.cause in causes, (case.id, node.path, node.causes)
        assert causes[0] is case.cause or case.cause in causes[:2], (case.id, node.causes)
    assert node.pcrs == case.pcrs, (case.id, node.pcrs)
    assert root.pcrs == tuple(p for p in case.pcrs if p != 8), (case.id, root.pcrs)
    for hint in node.causes:
        assert hint.evidence  # evidence is always shown


def test_identical_images_short_circuit(
    base_image: Path, artefacts: Artefacts, base_spec: ImageSpec
) -> None:
    again = artefacts.image(base_spec, "again.eif")
    report = compare_paths(base_image, again)
    assert report.identical and report.root is None


def test_one_byte_change_names_section_and_symbol(reports: dict[str, DiffNode]) -> None:
    root = reports["one-byte-in-function"]
    text = _find(root, ("usr/bin/hello", ".text"))
    assert text.kind is NodeKind.ELF_SECTION and "compute" in text.summary
    sym = _find(root, (".text", "compute"))
    assert sym.kind is NodeKind.SYMBOL and "compute+0x3" in sym.summary
    # nothing else in the ELF changed: the build-id was computed before the patch
    elf = _find(root, ("ramdisk[1]", "usr/bin/hello"))
    assert [c.name for c in elf.children] == [".text"]


def test_build_id_follows_other_changes(reports: dict[str, DiffNode]) -> None:
    build_id = _find(reports["build-path-in-debug-info"], ("usr/bin/hello", "notes", "build-id"))
    assert build_id.causes[0].cause is Cause.BUILD_ID


def test_timestamp_evidence_decodes_the_clock(reports: dict[str, DiffNode]) -> None:
    node = _find(reports["mtime"], ("etc/config.txt", "mtime"))
    assert "2023-11-14T22:13:20Z" in node.causes[0].evidence
    assert "2023-11-14T23:13:20Z" in node.causes[0].evidence


def test_toolchain_evidence_names_versions(reports: dict[str, DiffNode]) -> None:
    node = _find(reports["compiler-comment"], ("usr/bin/hello", ".comment"))
    assert "99.1.0" in node.causes[0].evidence


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


def test_measured_difference_comes_before_metadata(
    artefacts: Artefacts, base_spec: ImageSpec, base_image: Path
) -> None:
    from verifier.compare.render import headlines

    changed = base_spec.with_file(
        "usr/bin/hello", FileSpec(artefacts.elf_one_byte, perm=0o755)
    ).replace(build_time="2027-01-01T00:00:00Z")
    root = compare_paths(base_image, artefacts.image(changed, "meta-and-file.eif")).root
    assert root is not None
    first = headlines(root, 1)[0]
    assert first.path[1:] == ("ramdisk[1]", "usr/bin/hello", ".text", "compute"), first.path
    assert [c.name for c in root.children][-2:] == ["metadata", "crc32"]
