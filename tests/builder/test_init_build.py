"""/init: static, stripped of paths and dates, byte-identical across build directories."""

from __future__ import annotations

from pathlib import Path

from conftest import need_tool
from elftools.elf.elffile import ELFFile

from builder.init import build_init
from builder.reference import REFERENCE_SPEC
from builder.spec import load_spec


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
