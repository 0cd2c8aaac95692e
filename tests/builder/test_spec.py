"""The build spec: the reference spec loads; broken specs are one SpecInvalid line."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.reference import REFERENCE_SPEC
from builder.spec import load_lock, load_spec
from enclave_audit.errors import SpecInvalid


def test_reference_spec_loads_and_pins_everything() -> None:
    loaded = load_spec(REFERENCE_SPEC)
    spec = loaded.spec
    assert spec.kernel.package == "linux-source-6.12"
    assert len(spec.kernel.sha256) == 64
    assert {w.name for w in spec.wheels} >= {"cryptography", "cbor2"}
    assert all(len(w.sha256) == 64 for w in spec.wheels)
    names = {p.name for p in loaded.lock}
    assert {"python3", "python3-numpy", "libc6"} <= names
    assert all(len(p.sha256) == 64 for p in loaded.lock)
    assert loaded.resolve(spec.kernel.config).is_file()
    assert loaded.resolve(spec.init.source).is_file()


def _write(tmp_path: Path, text: str) -> Path:
    base = tmp_path / "src" / "spec"
    (base / "kernel").mkdir(parents=True)
    (base / "init").mkdir()
    (base / "kernel" / "k.config").write_text("CONFIG_64BIT=y\n")
    (base / "init" / "init.c").write_text("int main(void){return 0;}\n")
    (base / "nsm-attest").mkdir()
    (base / "nsm-attest" / "nsm_attest.c").write_text("int main(void){return 0;}\n")
    pkg = tmp_path / "src" / "app"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    path = base / "enclave.toml"
    path.write_text(text)
    return path


GOOD = (
    Path(REFERENCE_SPEC)
    .read_text()
    .replace('config = "kernel/enclave.config"', 'config = "kernel/k.config"')
    .replace('packages = ["enclave_runtime"]', 'packages = ["app"]')
)


def test_minimal_copy_loads(tmp_path: Path) -> None:
    loaded = load_spec(_write(tmp_path, GOOD))
    assert loaded.spec.app.packages == ("app",)
    assert loaded.lock == ()


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda s: s.replace("schema = 1", "schema = 9"), "schema"),
        (lambda s: s.replace('sha256 = "e849', 'sha256 = "zz49'), "sha256"),
        (lambda s: s + "\n[[[broken", "TOML"),
        (
            lambda s: s.replace('config = "kernel/k.config"', 'config = "kernel/missing"'),
            "kernel.config",
        ),
        (lambda s: s.replace('packages = ["app"]', 'packages = ["nope"]'), "app.packages"),
        (lambda s: s.replace("[app]", "[app]\nunknown_key = 1"), "unknown_key"),
    ],
)
def test_bad_specs(tmp_path: Path, mutate: object, needle: str) -> None:
    assert callable(mutate)
    path = _write(tmp_path, mutate(GOOD))
    with pytest.raises(SpecInvalid, match=needle):
        load_spec(path)


def test_unreadable_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecInvalid, match="cannot read"):
        load_spec(tmp_path / "absent.toml")


def test_bad_lock_line(tmp_path: Path) -> None:
    lock = tmp_path / "debian.lock"
    lock.write_text("libc6 2.36 amd64\n")
    with pytest.raises(SpecInvalid, match=r"debian\.lock:1"):
        load_lock(lock)
    lock.write_text("libc6 2.36 amd64 " + "Z" * 64 + "\n")
    with pytest.raises(SpecInvalid, match="sha256"):
        load_lock(lock)
