"""Rebuilds that survive time (issue 20), on the real reference image.

- drift: a mirror whose index lists *newer* versions of essential packages than the lock
  (real .debs repacked under a higher version) still gives the identical EIF, and the
  newer packages are never even fetched;
- a pin no source serves: exit 31 and one line with the ways out, before any step runs;
- offline: the input set of a build, exported, rebuilds the identical EIF with no network,
  an empty cache and a host whose apt configuration lists nothing;
- lock update against signed indices, and the audit's security-updates finding.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, assert_one_line_error, need, need_tool, run_cli

from builder.inputs.refs import make_resolver, spec_inputs
from builder.inputs.store import InputStore
from builder.pipeline import BuildResult
from builder.reference import REFERENCE_SPEC
from builder.spec import load_spec, read_lock
from enclave_audit.model.manifest import BuildManifest, InputKind

pytestmark = pytest.mark.slow

DEAD = "http://127.0.0.1:9"
#: essential packages (and their libraries) whose newer versions appear on the drift mirror
DRIFTED = ("base-files", "zlib1g", "libzstd1", "libpam0g")


def _archive_helpers() -> None:
    sys.path.append(str(Path(__file__).parent / "inputs"))


_archive_helpers()
from local_archive import DebianArchive, GpgKey, Server, gpg_key, repack, serve  # noqa: E402


@dataclass
class Drift:
    server: Server
    key: GpgKey
    newer: dict[str, str]  # package -> the newer version the mirror lists
    drift_files: list[str]  # pool paths of the newer .debs

    @property
    def mirror_args(self) -> list[str]:
        return [
            "--debian-mirror", f"http://deb.debian.org/debian={self.server.url}/debian",
            "--debian-mirror",
            f"http://deb.debian.org/debian-security={self.server.url}/debian-security",
        ]  # fmt: skip


@pytest.fixture(scope="module")
def pinned(reference_image: BuildResult) -> dict[str, Path]:
    """Every external input of the reference spec, from the store (sha256 -> file)."""
    loaded = load_spec(REFERENCE_SPEC)
    resolver = make_resolver(loaded)
    return {ref.sha256: resolver.path(ref) for ref in spec_inputs(loaded)}


@pytest.fixture(scope="module")
def drift(tmp_path_factory: pytest.TempPathFactory, pinned: dict[str, Path]) -> Iterator[Drift]:
    need_tool("dpkg-scanpackages", "dpkg-dev")
    need_tool("gpg", "gpg")
    root = tmp_path_factory.mktemp("drift")
    loaded = load_spec(REFERENCE_SPEC)
    named = root / "named"
    named.mkdir()
    locked: list[Path] = []
    for pkg in loaded.lock:
        path = named / f"{pkg.name}_{pkg.version.split(':')[-1]}_{pkg.arch}.deb"
        os.link(pinned[pkg.sha256], path)
        locked.append(path)
    kernel = loaded.spec.kernel
    kernel_deb = named / f"{kernel.package}_{kernel.version}_all.deb"
    os.link(pinned[kernel.sha256], kernel_deb)
    newer_dir = root / "newer"
    newer_dir.mkdir()
    newer: dict[str, str] = {}
    newer_debs = []
    for name in DRIFTED:
        (pkg,) = [p for p in loaded.lock if p.name == name]
        version = f"{pkg.version}+drift1"
        original = named / _name(pkg.name, pkg.version, pkg.arch)
        newer_debs.append(repack(original, version, newer_dir))
        newer[name] = version
    key = gpg_key(root / "gnupg")
    DebianArchive(root / "www" / "debian").add_suite("bookworm", [*locked, kernel_deb], key=key)
    DebianArchive(root / "www" / "debian").add_suite("bookworm-updates", [], key=key)
    DebianArchive(root / "www" / "debian-security").add_suite(
        "bookworm-security", newer_debs, key=key
    )
    with serve(root / "www") as server:
        yield Drift(server, key, newer, [f"/debian-security/pool/bookworm-security/{d.name}"
                                         for d in newer_debs])  # fmt: skip


def _name(name: str, version: str, arch: str) -> str:
    return f"{name}_{version.split(':')[-1]}_{arch}.deb"


def _source_copy(tmp_path: Path) -> Path:
    """A source root of its own (the spec's directory and the app packages), to edit safely."""
    root = tmp_path / "src"
    loaded = load_spec(REFERENCE_SPEC)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REFERENCE_SPEC.parent, root / REFERENCE_SPEC.parent.name, ignore=skip)
    for pkg in loaded.spec.app.packages:
        if not (root / pkg).exists():
            shutil.copytree(ROOT / pkg, root / pkg, ignore=skip)
    return root


def _store_without_debs(path: Path, pinned: dict[str, Path]) -> Path:
    """A new input store holding the wheels and the model, but no Debian package."""
    store = InputStore(path)
    for ref in spec_inputs(load_spec(REFERENCE_SPEC)):
        if ref.kind in (InputKind.WHEEL, InputKind.MODEL):
            store.add_copy(pinned[ref.sha256], ref.sha256)
    return path


def test_mirror_with_newer_essential_packages_gives_the_identical_eif(
    reference_image: BuildResult, drift: Drift, pinned: dict[str, Path], tmp_path: Path
) -> None:
    from builder.inputs.apt import load_suite, parse_source_line

    # the drift is real: the security index lists newer versions of essential packages
    sec = load_suite(
        parse_source_line("deb http://deb.debian.org/debian-security bookworm-security main"),
        base=f"{drift.server.url}/debian-security",
        keyring=drift.key.keyring,
    )
    locked = {p.name: p.version for p in load_spec(REFERENCE_SPEC).lock}
    for name, version in drift.newer.items():
        newest = sec.newest(name)
        assert newest is not None and newest.version == version != locked[name]
    store = _store_without_debs(tmp_path / "store", pinned)
    out = tmp_path / "out"
    result = run_cli(
        ["build", "--spec", str(REFERENCE_SPEC), "--no-rootfs-cache", *drift.mirror_args,
         "-o", str(out), "--json"],
        env={"ENCLAVE_AUDIT_STORE": str(store), "ENCLAVE_AUDIT_PYPI_URL": DEAD,
             "ENCLAVE_AUDIT_SNAPSHOT_URL": DEAD},
        cwd=ROOT, timeout=1800,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (out / "enclave.eif").read_bytes() == reference_image.eif.read_bytes()
    manifest = BuildManifest.load(out / "build-manifest.json")
    debs = [i for i in manifest.inputs if i.kind is InputKind.DEBIAN_PACKAGE]
    assert {i.served_by for i in debs} == {f"mirror {drift.server.url}/debian bookworm"}
    assert {(i.name, i.version) for i in debs} == set(locked.items())
    fetched = [p for p in drift.server.requests if "/pool/" in p]
    assert len([p for p in fetched if p.endswith(".deb")]) >= len(locked)
    assert not set(drift.drift_files) & set(fetched), "a newer package was fetched"


def test_a_pin_no_source_serves_fails_fast_with_the_ways_out(
    drift: Drift, pinned: dict[str, Path], tmp_path: Path
) -> None:
    src = _source_copy(tmp_path)
    spec_dir = src / REFERENCE_SPEC.parent.name
    lock = spec_dir / "debian.lock"
    lines = lock.read_text().splitlines()
    lines = [
        f"zlib1g 1:1.2.13.dfsg-1+deb12u7 amd64 {'e3' * 32}" if ln.startswith("zlib1g ") else ln
        for ln in lines
    ]
    lock.write_text("\n".join(lines) + "\n")
    store = _store_without_debs(tmp_path / "store", pinned)
    out = tmp_path / "out"
    asked_before = len(drift.server.requests)
    result = run_cli(
        ["build", "--spec", str(spec_dir / "enclave.toml"), "--source-root", str(src),
         "--source-date-epoch", "1700000000", *drift.mirror_args, "-o", str(out)],
        env={"ENCLAVE_AUDIT_STORE": str(store), "ENCLAVE_AUDIT_SNAPSHOT_URL": DEAD},
        cwd=ROOT,
    )  # fmt: skip
    assert_one_line_error(
        result, 31, "zlib1g 1:1.2.13.dfsg-1+deb12u7", "--inputs", "snapshot", "lock update"
    )
    assert not out.exists()
    # located, not fetched: no package was downloaded before the build stopped
    assert not [p for p in drift.server.requests[asked_before:] if p.endswith(".deb")]


def test_offline_rebuild_from_an_exported_input_set(
    reference_image: BuildResult, tmp_path: Path
) -> None:
    """Export, then verify with no network, an empty cache and no host apt sources."""
    need(os.geteuid() == 0, "the offline rebuild runs in new net and mount namespaces (root)")
    need_tool("unshare", "util-linux")
    manifest = reference_image.out_dir / "build-manifest.json"
    inputs = tmp_path / "inputs.tar"
    result = run_cli(["inputs", "export", "--manifest", str(manifest), "-o", str(inputs), "--json"])
    assert result.exit_code == 0, result.stderr
    exported = json.loads(result.stdout)
    external = [i for i in BuildManifest.load(manifest).inputs if i.external]
    assert exported["inputs"] == len({i.sha256 for i in external})
    result = run_cli(["inputs", "verify", str(inputs), "--manifest", str(manifest)])
    assert result.exit_code == 0, result.stderr
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    exe = Path(sys.executable).with_name("enclave-audit")
    # a host whose apt configuration lists nothing (an empty /etc/apt), and no network
    script = 'mount -t tmpfs none /etc/apt && exec "$@"'
    env = {k: v for k, v in os.environ.items() if k != "ENCLAVE_AUDIT_STORE"}
    env["ENCLAVE_AUDIT_CACHE"] = str(cache)
    proc = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c", script,
         "sh", str(exe), "verify", "--manifest", str(manifest), "--source", str(ROOT),
         "--inputs", str(inputs), "--eif", str(reference_image.eif), "--no-audit",
         "-o", str(tmp_path / "verify"), "--json"],
        env=env, capture_output=True, timeout=3600, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    verdict = json.loads(proc.stdout)
    assert verdict["verdict"] == "PASS"
    rebuilt = tmp_path / "verify" / "rebuild" / "enclave.eif"
    assert rebuilt.read_bytes() == reference_image.eif.read_bytes()
    again = BuildManifest.load(tmp_path / "verify" / "rebuild" / "build-manifest.json")
    sources = {i.served_by for i in again.inputs if i.external}
    assert sources == {f"input set {inputs}"}, sources
    # nothing came from anywhere else: every file in the new store is a blob of the set,
    # and every input the build read is there (all but the model, which no build reads)
    stored = {p.name for p in (cache / "inputs").glob("??/*")}
    with tarfile.open(inputs) as tar:
        blobs = {n.rsplit("/", 1)[-1] for n in tar.getnames() if n.startswith("blobs/sha256/")}
    model = {i.sha256 for i in external if i.kind is InputKind.MODEL}
    assert stored == blobs - model


def test_lock_update_against_signed_indices(drift: Drift, tmp_path: Path) -> None:
    src = _source_copy(tmp_path)
    spec_dir = src / REFERENCE_SPEC.parent.name
    before = read_lock(spec_dir / "debian.lock")
    args = ["lock", "update", "--spec", str(spec_dir / "enclave.toml"), "--source-root", str(src),
            *drift.mirror_args]  # fmt: skip
    # an index signed by another key is refused, and the lock is left alone
    other = gpg_key(tmp_path / "other")
    refused = run_cli([*args, "--keyring", str(other.keyring)], cwd=ROOT)
    assert_one_line_error(refused, 4, "signature")
    assert read_lock(spec_dir / "debian.lock") == before
    result = run_cli([*args, "--keyring", str(drift.key.keyring), "--json"], cwd=ROOT, timeout=1200)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    moved = {c["name"]: c for c in doc["changes"]}
    assert set(moved) == set(drift.newer)
    for name, version in drift.newer.items():
        assert moved[name]["new"] == version and moved[name]["security"] is True
        assert moved[name]["old"] == next(p.version for p in before.packages if p.name == name)
    after = read_lock(spec_dir / "debian.lock")
    assert after.resolved_at == doc["resolved_at"] and after.epoch == doc["source_date_epoch"]
    assert after.epoch and after.epoch > 1_700_000_000
    assert {p.name: p.version for p in after.packages if p.name in drift.newer} == drift.newer
    text = run_cli([*args, "--keyring", str(drift.key.keyring), "--check"], cwd=ROOT)
    assert text.exit_code == 0, text.stderr  # current now


def test_audit_reports_packages_the_security_suite_has_updated(
    reference_image: BuildResult, drift: Drift
) -> None:
    suite = "deb http://deb.debian.org/debian-security bookworm-security main"
    mapped = f"http://deb.debian.org/debian-security={drift.server.url}/debian-security"
    env = {"ENCLAVE_AUDIT_ARCHIVE_KEYRING": str(drift.key.keyring)}
    result = run_cli(
        ["audit", str(reference_image.eif), "--security-updates", "require",
         "--security-suite", suite, "--debian-mirror", mapped, "--json"],
        env=env,
    )  # fmt: skip
    report = json.loads(result.stdout)
    found = {f["message"].split()[0]: f for f in report["findings"]
             if f["rule"] == "debian-security-update"}  # fmt: skip
    # the image's dpkg status lists what is installed: the packages the spec purges after
    # installing them (libpam0g, ...) are not in the image, so they have nothing to update
    loaded = load_spec(REFERENCE_SPEC)
    in_image = {name: v for name, v in drift.newer.items() if name not in loaded.spec.debian.purge}
    assert in_image and len(in_image) < len(drift.newer)  # both cases are exercised
    assert set(found) == set(in_image)
    locked = {p.name: p.version for p in loaded.lock}
    for name, version in in_image.items():
        assert f"{name} {locked[name]} is installed" in found[name]["message"]
        assert version in found[name]["message"]
    (check,) = [c for c in report["checks"] if c["name"] == "security-updates"]
    assert check["outcome"] == "pass"
    # an index that cannot be read: skipped by default, INCONCLUSIVE when required
    dead = f"http://deb.debian.org/debian-security={DEAD}/debian-security"
    strict = run_cli(["audit", str(reference_image.eif), "--security-updates", "require",
                      "--security-suite", suite, "--debian-mirror", dead, "--json"])  # fmt: skip
    assert strict.exit_code == 1 and json.loads(strict.stdout)["verdict"] == "INCONCLUSIVE"
    lenient = run_cli(["audit", str(reference_image.eif), "--security-updates", "auto",
                       "--security-suite", suite, "--debian-mirror", dead, "--json"])  # fmt: skip
    (check,) = [c for c in json.loads(lenient.stdout)["checks"] if c["name"] == "security-updates"]
    assert check["outcome"] == "skipped" and "require" in check["detail"]
