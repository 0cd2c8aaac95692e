"""Real changes on real images: each is located, classified as security-relevant or
unexplained (a real change), ranked before every benign difference, and never given a
nondeterminism cause.

The counterpart of ``test_corpus.py`` (nondeterminism, explained by evidence).  A case
is one row: a change to the base image (gcc-built ELFs, PEM certificates made with
cryptography, newc ramdisks from the builder's stream, EIFs from ``write_eif``), the
path where it must be reported, its significance, words its evidence must contain, and
the PCRs it moves.  Add a row to add a case; the README's verifier section counts them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from compare_corpus import KMS_HOST, OTHER_HOST, Artefacts, FileSpec, ImageSpec
from conftest import ROOT, run_cli

from builder.initramfs.newc import EntryKind
from enclave_audit.model.difference import BENIGN_CAUSES, Cause, DiffNode, Significance
from verifier.compare import compare_paths
from verifier.compare.causes import own_hints
from verifier.compare.render import headlines, item_significance

SECURITY, UNEXPLAINED = Significance.SECURITY, Significance.UNEXPLAINED


@dataclass(frozen=True)
class Real:
    id: str
    change: Callable[[ImageSpec, Artefacts], ImageSpec]
    where: tuple[str, ...]  # path suffix of the node that must report it
    significance: Significance
    says: str  # words the deciding evidence contains
    pcrs: tuple[int, ...]


def _file(name: str, **changes: object) -> Callable[[ImageSpec, Artefacts], ImageSpec]:
    def change(spec: ImageSpec, art: Artefacts) -> ImageSpec:
        old = spec.files[name]
        values = {k: (v(art) if callable(v) else v) for k, v in changes.items()}
        return spec.with_file(name, FileSpec(**{**old.__dict__, **values}))

    return change


def _add(
    name: str, spec_of: Callable[[Artefacts], FileSpec]
) -> Callable[[ImageSpec, Artefacts], ImageSpec]:
    return lambda spec, art: spec.with_file(name, spec_of(art))


def _remove(name: str) -> Callable[[ImageSpec, Artefacts], ImageSpec]:
    return lambda spec, art: spec.replace(files={k: v for k, v in spec.files.items() if k != name})


def _text(name: str, old: bytes, new: bytes) -> Callable[[ImageSpec, Artefacts], ImageSpec]:
    def change(spec: ImageSpec, art: Artefacts) -> ImageSpec:
        data = spec.files[name].data
        assert old in data
        return spec.with_file(
            name, FileSpec(**{**spec.files[name].__dict__, "data": data.replace(old, new)})
        )

    return change


REAL = [
    # --- the six kinds named by the issue
    Real(
        "data-string-host",
        _file("usr/bin/client", data=lambda a: a.client_other_host),
        ("ramdisk[1]", "usr/bin/client", ".rodata"),
        UNEXPLAINED,
        OTHER_HOST,
        (0, 2),
    ),
    Real(
        "code-byte-in-function",
        _file("usr/bin/hello", data=lambda a: a.elf_one_byte),
        ("ramdisk[1]", "usr/bin/hello", ".text", "compute"),
        UNEXPLAINED,
        "machine code",
        (0, 2),
    ),
    Real(
        "setuid-bit",
        _file("usr/bin/hello", perm=0o4755),
        ("ramdisk[1]", "usr/bin/hello", "mode"),
        SECURITY,
        "setuid added",
        (0, 2),
    ),
    Real(
        "added-preload-file",
        _add("etc/ld.so.preload", lambda a: FileSpec(b"/usr/lib/libhelper.so\n")),
        ("ramdisk[1]", "etc/ld.so.preload"),
        SECURITY,
        "ld.so.preload",
        (0, 2),
    ),
    Real(
        "changed-ca-bundle",
        _file("etc/ssl/certs/ca-certificates.crt", data=lambda a: a.ca_bundle_changed),
        ("ramdisk[1]", "etc/ssl/certs/ca-certificates.crt"),
        SECURITY,
        "certificates or keys",
        (0, 2),
    ),
    Real(
        "changed-cmdline",
        lambda s, a: s.replace(cmdline=s.cmdline + " init=/bin/sh"),
        ("cmdline",),
        SECURITY,
        "kernel command line",
        (0, 1),
    ),
    # --- more of each kind
    Real(
        "exec-bit",
        _file("etc/config.txt", perm=0o755),
        ("ramdisk[1]", "etc/config.txt", "mode"),
        SECURITY,
        "owner execute added",
        (0, 2),
    ),
    Real(
        "setgid-world-writable",
        _file("usr/bin/tool", perm=0o2757),
        ("ramdisk[1]", "usr/bin/tool", "mode"),
        SECURITY,
        "setgid added",
        (0, 2),
    ),
    Real(
        "init-changed",
        lambda s, a: s.with_boot("init", FileSpec(b"#!/bin/sh\nexec /bin/sh\n", perm=0o755)),
        ("ramdisk[0]", "init"),
        SECURITY,
        "/init",
        (0, 1),
    ),
    Real(
        "image-cmd",
        _text("cmd", b"/usr/bin/hello", b"/usr/bin/tool"),
        ("ramdisk[1]", "cmd"),
        SECURITY,
        "the image's command",
        (0, 2),
    ),
    Real(
        "image-env",
        _text("env", b"MODEL=m", b"LD_LIBRARY_PATH=/tmp"),
        ("ramdisk[1]", "env"),
        SECURITY,
        "environment",
        (0, 2),
    ),
    Real(
        "added-executable",
        _add("usr/bin/gdbserver", lambda a: FileSpec(a.elf_stripped, perm=0o755)),
        ("ramdisk[1]", "usr/bin/gdbserver"),
        SECURITY,
        "executable added",
        (0, 2),
    ),
    Real(
        "removed-library",
        _remove("usr/lib/libhelper.so"),
        ("ramdisk[1]", "usr/lib/libhelper.so"),
        SECURITY,
        "library removed",
        (0, 2),
    ),
    Real(
        "hard-link-to-setuid",
        lambda s, a: (
            s.with_file("usr/bin/hello", FileSpec(a.elf, perm=0o4755, ino=900, nlink=2))
            .with_file("var", FileSpec(kind=EntryKind.DIRECTORY, perm=0o755))
            .with_file("var/.h", FileSpec(b"", perm=0o4755, ino=900, nlink=2))
        ),
        ("ramdisk[1]", "var/.h"),
        SECURITY,
        "hard link",
        (0, 2),
    ),
    Real(
        "device-node",
        _add("dev/mem", lambda a: FileSpec(kind=EntryKind.CHAR_DEVICE, perm=0o666, rdev=(1, 1))),
        ("ramdisk[1]", "dev/mem"),
        SECURITY,
        "device node",
        (0, 2),
    ),
    Real(
        "new-needed-library",
        _file("usr/bin/tool", data=lambda a: a.needs_libm),
        ("ramdisk[1]", "usr/bin/tool", "dynamic"),
        SECURITY,
        "libraries this binary loads",
        (0, 2),
    ),
    Real(
        "kms-url-in-config",
        _text("etc/service.conf", KMS_HOST.encode(), OTHER_HOST.encode()),
        ("ramdisk[1]", "etc/service.conf"),
        UNEXPLAINED,
        "changed",
        (0, 2),
    ),
    Real(
        "model-digest",
        _text("etc/service.conf", b"3f" * 32, b"3f" * 31 + b"40"),
        ("ramdisk[1]", "etc/service.conf"),
        UNEXPLAINED,
        "digest",
        (0, 2),
    ),
    Real(
        "config-value",
        _text("etc/config.txt", b"threads=4", b"threads=1"),
        ("ramdisk[1]", "etc/config.txt"),
        UNEXPLAINED,
        "no evidence",
        (0, 2),
    ),
    Real(
        "random-bytes",
        _file("usr/lib/app/seed.bin", data=bytes.fromhex("9f" * 4) + bytes(range(97, 125))),
        ("ramdisk[1]", "usr/lib/app/seed.bin"),
        UNEXPLAINED,
        "no evidence",
        (0, 2),
    ),
    Real(
        "one-owner",
        _file("etc/config.txt", uid=1000),
        ("ramdisk[1]", "etc/config.txt", "uid"),
        UNEXPLAINED,
        "no evidence",
        (0, 2),
    ),
    Real(
        "added-data-file",
        _add("usr/share/extra.txt", lambda a: FileSpec(b"hello\n")),
        ("ramdisk[1]", "usr/share/extra.txt"),
        UNEXPLAINED,
        "no evidence",
        (0, 2),
    ),
]


@pytest.fixture(scope="module")
def real_reports(
    artefacts: Artefacts, base_spec: ImageSpec, base_image: Path
) -> dict[str, DiffNode]:
    out: dict[str, DiffNode] = {}
    for case in REAL:
        right = artefacts.image(case.change(base_spec, artefacts), f"real-{case.id}.eif")
        report = compare_paths(base_image, right)
        assert report.root is not None and report.complete, case.id
        out[case.id] = report.root
    return out


def _find(root: DiffNode, suffix: tuple[str, ...]) -> DiffNode:
    def subsequence(want: tuple[str, ...], path: tuple[str, ...]) -> bool:
        it = iter(path)
        return all(any(seg == p for p in it) for seg in want)

    for node in root.walk():
        if node.path[-1] == suffix[-1] and subsequence(suffix, node.path):
            return node
    paths = "\n".join("/".join(n.path) for n in root.walk())
    raise AssertionError(f"no node at .../{'/'.join(suffix)}; tree:\n{paths}")


@pytest.mark.parametrize("case", REAL, ids=[c.id for c in REAL])
def test_real_change_is_located_classified_and_ranked_first(
    case: Real, real_reports: dict[str, DiffNode]
) -> None:
    root = real_reports[case.id]
    node = _find(root, case.where)
    mine = own_hints(node)
    # classified: security-relevant or unexplained, with the evidence that decides it
    assert item_significance(node) is case.significance, (case.id, node.causes)
    deciding = [h for h in mine if h.cause in (Cause.SECURITY, Cause.REAL, Cause.UNEXPLAINED)]
    assert deciding and any(case.says in h.evidence for h in deciding), (case.id, deciding)
    # never given a nondeterminism cause
    assert not [h for h in mine if h.cause in BENIGN_CAUSES and h.explains], (case.id, mine)
    # the image is at least as serious, and the change comes first in the headlines
    assert root.significance is not None and root.significance.rank <= case.significance.rank
    shown = headlines(root, 50)
    assert item_significance(shown[0]).rank <= case.significance.rank

    def related(item: DiffNode) -> bool:
        n = min(len(item.path), len(node.path))
        return item.path[:n] == node.path[:n]

    at = next(i for i, item in enumerate(shown) if related(item))
    later = [item_significance(x).rank for x in shown[at:]]
    earlier = [item_significance(x).rank for x in shown[:at]]
    assert all(r <= case.significance.rank for r in earlier), (case.id, shown[:at])
    assert not any(r < case.significance.rank for r in later), case.id
    assert node.pcrs == case.pcrs, (case.id, node.pcrs)


def test_the_corpus_covers_each_kind_the_issue_names() -> None:
    ids = {c.id for c in REAL}
    assert {
        "data-string-host",
        "code-byte-in-function",
        "setuid-bit",
        "added-preload-file",
        "changed-ca-bundle",
        "changed-cmdline",
    } <= ids


def test_one_byte_change_names_section_and_symbol(real_reports: dict[str, DiffNode]) -> None:
    root = real_reports["code-byte-in-function"]
    text = _find(root, ("usr/bin/hello", ".text"))
    assert "compute" in text.summary
    sym = _find(root, (".text", "compute"))
    assert "compute+0x3" in sym.summary
    elf = _find(root, ("ramdisk[1]", "usr/bin/hello"))
    assert [c.name for c in elf.children] == [".text"]


def test_security_before_unexplained_before_benign(
    artefacts: Artefacts, base_spec: ImageSpec, base_image: Path
) -> None:
    """One image with a setuid bit, a code byte, and only benign changes besides."""
    changed = (
        base_spec.with_file("usr/bin/hello", FileSpec(artefacts.elf_one_byte, perm=0o755))
        .with_file("usr/bin/tool", FileSpec(artefacts.elf_stripped, perm=0o4755))
        .replace(build_time="2023-11-16T00:00:00Z")
    )
    root = compare_paths(base_image, artefacts.image(changed, "mixed.eif")).root
    assert root is not None
    order = [item_significance(h) for h in headlines(root)]
    assert order[0] is SECURITY and order[1] is UNEXPLAINED
    assert order == sorted(order, key=lambda s: s.rank)
    assert [c.name for c in root.children][-2:] == ["metadata", "crc32"]


# --- the .rodata host pair and /bin/true vs /bin/false, as a user runs them ----------------


def test_rodata_host_pair_prints_the_unexplained_change_first(
    artefacts: Artefacts, tmp_path: Path
) -> None:
    a, b = tmp_path / "client-a", tmp_path / "client-b"
    a.write_bytes(artefacts.client)
    b.write_bytes(artefacts.client_other_host)
    assert len(artefacts.client) == len(artefacts.client_other_host)
    done = run_cli(["diff", str(a), str(b)])
    assert done.exit_code == 1, done.stderr
    lines = [x.strip() for x in done.stdout.splitlines()]
    first = next(i for i, x in enumerate(lines) if x.startswith("1."))
    assert "UNEXPLAINED" in lines[first] and ".rodata" in lines[first], lines[first]
    assert "real-change" in lines[first + 1] and OTHER_HOST in lines[first + 1]
    summary = "\n".join(lines[:first])
    assert "Unexplained: 1" in summary
    assert "build-path" not in done.stdout and "build path" not in summary
    js = run_cli(["diff", str(a), str(b), "--json"])
    import json

    report = json.loads(js.stdout)
    assert report["significance"].get("unexplained") == 1
    assert report["root"]["significance"] == "unexplained"


def test_bin_true_vs_bin_false_claims_no_random_data_or_timestamp() -> None:
    true, false = Path("/bin/true"), Path("/bin/false")
    done = run_cli(["diff", str(true), str(false)])
    assert done.exit_code == 1
    out = done.stdout.lower()
    for claim in ("random", "timestamp", "embedded timestamp", "build-path"):
        assert claim not in out, claim
    assert "unexplained" in out
    report = compare_paths(true, false)
    assert report.root is not None
    for node in report.root.walk():
        assert not [h for h in node.causes if h.cause in (Cause.RANDOM, Cause.TIMESTAMP)], node.path


def test_readme_gives_the_counts_of_both_corpora() -> None:
    from test_corpus import CASES

    readme = (ROOT / "README.md").read_text()
    assert f"{len(CASES)} cases of nondeterminism" in readme
    assert f"{len(REAL)} real changes" in readme
