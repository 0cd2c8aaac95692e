"""Session fixtures for the Nitro attestation tests (helpers live in nitro_sim.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# --import-mode=importlib: make the helper module next to this file importable by the tests here
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nitro_sim import (  # noqa: E402
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
