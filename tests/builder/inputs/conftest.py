"""Fixtures for the resolver tests: tools, an empty input store per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).parent))  # local_archive.py, the archive helpers

from conftest import need_tool


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty input store for this test (ENCLAVE_AUDIT_STORE)."""
    path = tmp_path / "store"
    monkeypatch.setenv("ENCLAVE_AUDIT_STORE", str(path))
    return path


@pytest.fixture
def debtools() -> None:
    need_tool("dpkg-deb", "dpkg")
    need_tool("dpkg-scanpackages", "dpkg-dev")
