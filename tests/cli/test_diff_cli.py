"""``enclave-audit diff`` end to end: real EIFs, exit codes, formats, the first screen."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, need_tool, run_cli

sys.path.append(str(Path(__file__).resolve().parent.parent / "verifier" / "compare"))

from compare_corpus import Artefacts, FileSpec, ImageSpec, build_artefacts, make_base_spec

FIRST_SCREEN = 24  # lines of a default terminal


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Artefacts, ImageSpec, Path, Path]:
    need_tool("gcc", "gcc")
    need_tool("objcopy", "binutils")
    art = build_artefacts(tmp_path_factory.mktemp("cli-corpus"))
    spec = make_base_spec(art)
    left = art.image(spec, "left.eif")
    changed = spec.with_file("usr/bin/hello", FileSpec(art.elf_one_byte, perm=0o755))
    right = art.image(changed, "right.eif")
    return art, spec, left, right


def test_one_file_difference_is_named_first(
    images: tuple[Artefacts, ImageSpec, Path, Path],
) -> None:
    _, _, left, right = images
    result = run_cli(["diff", str(left), str(right)])
    assert result.exit_code == 1, result.stderr
    screen = result.stdout.splitlines()[:FIRST_SCREEN]
    headline = next(i for i, line in enumerate(screen) if "usr/bin/hello" in line)
    assert ".text" in screen[headline] and "compute" in screen[headline], screen
    assert headline <= 3, screen
    assert "PCR0" in "\n".join(screen[: headline + 1]) and "PCR2" in screen[0]


def test_json_is_a_versioned_document(images: tuple[Artefacts, ImageSpec, Path, Path]) -> None:
    _, _, left, right = images
    result = run_cli(["diff", str(left), str(right), "--format", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert list(doc)[:2] == ["schema", "schema_version"]
    assert doc["schema"] == "enclave-audit/diff" and doc["identical"] is False
    assert doc["root"]["pcrs"] == [0, 2]
    again = run_cli(["diff", str(left), str(right), "--json"])
    assert json.loads(again.stdout)["root"] == doc["root"]


def test_identical_exit_zero(images: tuple[Artefacts, ImageSpec, Path, Path]) -> None:
    _, _, left, _ = images
    result = run_cli(["diff", str(left), str(left)])
    assert result.exit_code == 0
    assert "identical" in result.stdout


@pytest.mark.parametrize(
    ("fmt", "marker"),
    [
        ("markdown", "## Most important differences"),
        ("html", "<h2>Most important differences</h2>"),
    ],
)
def test_markdown_and_html_files(
    images: tuple[Artefacts, ImageSpec, Path, Path], tmp_path: Path, fmt: str, marker: str
) -> None:
    _, _, left, right = images
    out = tmp_path / f"diff.{fmt}"
    result = run_cli(["diff", str(left), str(right), "--format", fmt, "-o", str(out)])
    assert result.exit_code == 1, result.stderr
    text = out.read_text()
    assert marker in text and "usr/bin/hello" in text and "compute" in text


def test_ramdisks_and_directories(
    images: tuple[Artefacts, ImageSpec, Path, Path], tmp_path: Path
) -> None:
    _, spec, _, _ = images
    from compare_corpus import write_cpio

    from builder.initramfs import extract

    a, b = tmp_path / "a.cpio", tmp_path / "b.cpio"
    write_cpio(a, spec.files)
    write_cpio(b, {**spec.files, "etc/config.txt": FileSpec(b"mode=debug\nthreads=4\n")})
    result = run_cli(["diff", str(a), str(b)])
    assert result.exit_code == 1
    assert "etc/config.txt" in result.stdout and "mode=debug" in result.stdout
    extract(a, tmp_path / "da", preserve_owner=False)
    extract(b, tmp_path / "db", preserve_owner=False)
    result = run_cli(["diff", str(tmp_path / "da"), str(tmp_path / "db"), "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    paths = [c["path"][-1] for c in doc["root"]["children"]]
    assert paths == ["etc/config.txt"]


def test_max_depth_stops_expanding(images: tuple[Artefacts, ImageSpec, Path, Path]) -> None:
    _, _, left, right = images
    result = run_cli(["diff", str(left), str(right), "--json", "--max-depth", "0"])
    doc = json.loads(result.stdout)
    ramdisk = doc["root"]["children"][0]
    assert ramdisk["path"][-1] == "ramdisk[1]" and "max-depth" in ramdisk["summary"]


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    result = run_cli(["diff", str(tmp_path / "missing.eif"), str(tmp_path / "other.eif")])
    assert_one_line_error(result, 6, "missing.eif")
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"x")
    result = run_cli(["diff", str(tmp_path / "d"), str(tmp_path / "f")])
    assert_one_line_error(result, 3, "directory")
    broken = tmp_path / "broken.eif"
    broken.write_bytes(b".eif" + b"\x00" * 20)
    result = run_cli(["diff", str(broken), str(tmp_path / "f")])
    assert result.exit_code == 1 and "Traceback" not in result.stderr


def test_exclude_recomputes_meaning_and_verdict(
    images: tuple[Artefacts, ImageSpec, Path, Path], tmp_path: Path
) -> None:
    """--exclude leaves differences out of every count: what is left decides the
    significance (ranked first), the summary, the verdict and the exit code."""
    import dataclasses

    from compare_corpus import write_cpio

    _, spec, _, _ = images
    a, b = tmp_path / "a.cpio", tmp_path / "b.cpio"
    write_cpio(a, spec.files)
    hello = spec.files["usr/bin/hello"]
    write_cpio(
        b,
        {
            **spec.files,
            "etc/config.txt": FileSpec(b"mode=debug\nthreads=4\n"),
            "usr/bin/hello": dataclasses.replace(hello, perm=0o4755),  # setuid added
        },
    )
    whole = json.loads(run_cli(["diff", str(a), str(b), "--json"]).stdout)
    assert whole["significance"] == {"security-relevant": 1, "unexplained": 1}
    assert whole["root"]["significance"] == "security-relevant"

    result = run_cli(["diff", str(a), str(b), "--json", "--exclude", "*hello"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "DIFFERENT" and doc["significance"] == {"unexplained": 1}
    assert doc["root"]["significance"] == "unexplained"
    assert [c["path"][-1] for c in doc["root"]["children"]] == ["etc/config.txt"]
    causes = [h for n in _walk(doc["root"]) for h in n["causes"]]
    assert causes and not any("hello" in h["evidence"] for h in causes)
    assert doc["root"]["notes"] == ["--exclude *hello: 2 difference node(s) left out"]
    assert doc["stats"]["nodes"] == sum(1 for _ in _walk(doc["root"]))
    text = run_cli(["diff", str(a), str(b), "--exclude", "*hello"]).stdout
    assert "Security-relevant" not in text and "Unexplained: 1" in text

    result = run_cli(
        ["diff", str(a), str(b), "--json", "--exclude", "*hello", "--exclude", "etc/config.txt"]
    )
    assert result.exit_code == 0, result.stdout
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "IDENTICAL" and doc["identical"] and doc["significance"] == {}


def _walk(node: dict[str, object]) -> list[dict[str, object]]:
    out = [node]
    for child in node["children"]:  # type: ignore[attr-defined]
        out.extend(_walk(child))
    return out
