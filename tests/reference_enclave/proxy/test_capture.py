"""What the untrusted proxy relays carries no plaintext prompt, answer, model or data key."""

from __future__ import annotations

from pathlib import Path

import pytest

from reference_enclave.client import Expectation, ask
from reference_enclave.proxy.capture import Capture
from tests.reference_enclave.runtime.stack import Stack, start_stack
from verifier.nitro import TrustRoot

PROMPT = "What is the capital of France? Answer with one word, please."


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stack, str, bytes]:
    stack = start_stack(tmp_path_factory.mktemp("capture"))
    try:
        result = ask(
            stack.enclave.url,
            PROMPT,
            expectation=Expectation(stack.expected, "test"),
            roots=[TrustRoot.from_pem(stack.ca.root_pem(), name="sim")],
            max_tokens=16,
        )
    finally:
        stack.enclave.stop()
        stack.kms.stop()
    return stack, result.answer, Capture(stack.capture).all_bytes()


def test_every_channel_was_relayed_and_captured(captured: tuple[Stack, str, bytes]) -> None:
    stack, _, _ = captured
    names = {p.name for p in Path(stack.capture).glob("*.bin")}
    assert {
        "client.to-enclave.bin",
        "client.from-enclave.bin",
        "kms.from-enclave.bin",
        "kms.to-enclave.bin",
        "parent.to-enclave.bin",
    } <= names
    kms_request = (stack.capture / "kms.from-enclave.bin").read_bytes()
    assert b"TrentService.Decrypt" in kms_request
    assert b"RSAES_OAEP_SHA_256" in kms_request
    assert (stack.capture / "parent.to-enclave.bin").read_bytes().count(b"CIMF") >= 1


def test_no_plaintext_in_relayed_traffic(captured: tuple[Stack, str, bytes]) -> None:
    stack, answer, traffic = captured
    assert len(traffic) > stack.model.encrypted_path.stat().st_size
    assert len(answer.strip()) >= 4, "need a non-trivial answer to search for"
    for needle in (PROMPT, "capital of France", answer.strip()):
        assert needle.encode() not in traffic
    assert stack.data_key and len(stack.data_key) == 32
    assert stack.data_key not in traffic
    model = stack.gguf.read_bytes()
    # any 32-byte window of the plaintext model (sampled through the whole file)
    step = max(1, len(model) // 200)
    for offset in range(0, len(model) - 32, step):
        window = model[offset : offset + 32]
        if len(set(window)) > 4:  # skip runs of padding
            assert window not in traffic, f"plaintext model bytes at {offset} relayed"
