"""The real SmolLM2-135M-Instruct, through the CLI (one BLAS thread, as the CLI sets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli


@pytest.mark.slow
def test_capital_of_france_is_paris(smollm2_path: Path) -> None:
    r = run_cli(
        [
            "model",
            "run",
            "--prompt",
            "What is the capital of France?",
            "--max-new-tokens",
            "24",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert "Paris" in doc["text"], doc
    assert doc["stop_reason"] == "end"
    assert doc["prompt_tokens"] == 37  # default system turn + user turn + assistant opening


def test_smollm2_pins(smollm2_path: Path) -> None:
    from reference_enclave.model.smollm2 import GGUF_SHA256, GGUF_SIZE, load_smollm2_gguf

    assert smollm2_path.stat().st_size == GGUF_SIZE
    import hashlib

    assert hashlib.sha256(load_smollm2_gguf()).hexdigest() == GGUF_SHA256
