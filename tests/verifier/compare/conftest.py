"""Session fixtures for the comparison tests (real ELFs, pyc files, ramdisks and EIFs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).parent))  # the corpus builders live beside this file

from compare_corpus import Artefacts, ImageSpec, build_artefacts, make_base_spec
from conftest import need_tool


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Artefacts:
    need_tool("gcc", "gcc")
    need_tool("objcopy", "binutils")
    return build_artefacts(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def base_spec(artefacts: Artefacts) -> ImageSpec:
    return make_base_spec(artefacts)


@pytest.fixture(scope="session")
def base_image(artefacts: Artefacts, base_spec: ImageSpec) -> Path:
    return artefacts.image(base_spec, "base.eif")
