"""The real SmolLM2 model through the whole encrypted path (host process, no image)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave_audit.errors import KmsRefused
from reference_enclave import demo
from reference_enclave.client import Expectation, ask
from tests.reference_enclave.runtime.stack import Stack, image_pcrs_for, start_stack
from verifier.nitro import TrustRoot


@pytest.fixture(scope="module")
def smollm2_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("smollm2"), gguf=demo.smollm2_gguf(), max_tokens=48)
    try:
        yield stack
    finally:
        stack.enclave.stop()
        stack.kms.stop()


def test_the_enclave_answers_paris(smollm2_stack: Stack) -> None:
    result = ask(
        smollm2_stack.enclave.url,
        demo.DEMO_QUESTION,
        expectation=Expectation(smollm2_stack.expected, "test"),
        roots=[TrustRoot.from_pem(smollm2_stack.ca.root_pem(), name="sim")],
        max_tokens=24,
    )
    assert "Paris" in result.answer


def test_kms_refuses_an_enclave_with_other_pcrs(tmp_path: Path) -> None:
    """The key policy names another image's PCRs: no data key, the enclave never serves."""
    (tmp_path / "other").mkdir()
    bound = image_pcrs_for(tmp_path / "other", b"another image")
    with pytest.raises(KmsRefused, match="AccessDenied"):
        start_stack(tmp_path, bound_pcrs=bound)
