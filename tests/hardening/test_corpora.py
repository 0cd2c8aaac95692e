"""Tampered inputs for every verifier are all rejected (accepted must be 0).

CI flips every 5th byte position (``ENCLAVE_AUDIT_CORPUS_STRIDE``); the full runs
(every byte, ``python -m fuzz corpora``) are recorded in RELIABILITY.md.
"""

from __future__ import annotations

import os

import pytest

from fuzz.corpora import CORPORA, run_corpus

STRIDE = int(os.environ.get("ENCLAVE_AUDIT_CORPUS_STRIDE", "5"))


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_every_tampered_input_is_rejected(name: str) -> None:
    result = run_corpus(name, stride=STRIDE)
    assert result.tried > 20
    assert result.accepted == 0, f"{name}: accepted {result.accepted}: {result.accepted_examples}"
