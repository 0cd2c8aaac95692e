"""/init: static, stripped of paths and dates, byte-identical across build directories; cached."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import need_tool
from elftools.elf.elffile import ELFFile

from builder.init import build_init
from builder.reference import REFERENCE_SPEC
from builder.spec import InitSpec, load_spec
from enclave_audit.errors import DigestMismatch


def test_init_is_static_and_reproducible(tmp_path: Path) -> None:
    need_tool("musl-gcc", "musl-tools")
    loaded = load_spec(REFERENCE_SPEC)
    src = loaded.resolve(loaded.spec.init.source)
    one = build_init(loaded.spec.init, src, tmp_path / "a")
    two = build_init(loaded.spec.init, src, tmp_path / "deeper" / "b")
    assert one.sha256 == two.sha256
    data = one.path.read_bytes()
    assert str(tmp_path).encode() not in data
    with open(one.path, "rb") as fh:
        elf = ELFFile(fh)
        assert elf.header.e_type == "ET_EXEC" or elf.header.e_type == "ET_DYN"
        assert not any(seg.header.p_type == "PT_INTERP" for seg in elf.iter_segments())
        assert elf.get_section_by_name(".dynamic") is None
        note = elf.get_section_by_name(".note.gnu.build-id")
        assert note is not None
        (n,) = list(note.iter_notes())
        assert len(n["n_desc"]) == 40  # sha1, content-derived


def test_cached_init_is_reused_verified_and_tamper_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_tool("musl-gcc", "musl-tools")
    monkeypatch.setenv("ENCLAVE_AUDIT_CACHE", str(tmp_path / "cache"))
    loaded = load_spec(REFERENCE_SPEC)
    src = loaded.resolve(loaded.spec.init.source)
    fresh = build_init(loaded.spec.init, src, tmp_path / "fresh")
    first = build_init(loaded.spec.init, src, tmp_path / "a", use_cache=True)
    again = build_init(loaded.spec.init, src, tmp_path / "b", use_cache=True)
    assert not fresh.reused and not first.reused and again.reused
    assert fresh.sha256 == first.sha256 == again.sha256
    assert again.path.read_bytes() == fresh.path.read_bytes()
    (entry,) = (tmp_path / "cache" / "init").iterdir()
    data = (entry / "init").read_bytes()
    (entry / "init").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(DigestMismatch, match="tampered or corrupt"):
        build_init(loaded.spec.init, src, tmp_path / "c", use_cache=True)
    assert not (tmp_path / "c" / "init").exists()
    # another compiler flag is another binary: a new entry, compiled
    other = InitSpec(source=loaded.spec.init.source, cflags=(*loaded.spec.init.cflags, "-O1"))
    assert not build_init(other, src, tmp_path / "d", use_cache=True).reused
    assert len(list((tmp_path / "cache" / "init").iterdir())) == 2
