"""Session fixtures for the Nitro attestation tests (helpers live in nitro_sim.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest


def _load_helpers() -> None:
    """Register nitro_sim.py (next to this file) as module ``nitro_sim`` for the tests here.

    Under --import-mode=importlib test directories are not on sys.path; loading by
    path avoids putting this directory there (where its conftest would shadow others).
    """
    if "nitro_sim" in sys.modules:
        return
    path = Path(__file__).resolve().parent / "nitro_sim.py"
    spec = importlib.util.spec_from_file_location("nitro_sim", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["nitro_sim"] = module
    spec.loader.exec_module(module)


_load_helpers()

from nitro_sim import (  # noqa: E402 - registered just above
    SimPki,
    build_pki,
    default_fields,
    document_ids,
    expected_documents,
    read_document,
    sign_document,
)


@pytest.fixture(scope="session", params=expected_documents(), ids=document_ids())
def real_document(request: pytest.FixtureRequest) -> tuple[dict[str, Any], bytes]:
    entry: dict[str, Any] = request.param
    return entry, read_document(entry)


@pytest.fixture(scope="session")
def sim_pki() -> SimPki:
    return build_pki()


@pytest.fixture(scope="session")
def sim_document(sim_pki: SimPki) -> bytes:
    return sign_document(sim_pki.leaf.key, default_fields(sim_pki))
