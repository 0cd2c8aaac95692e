"""The runtime end to end on the host (tiny model): KMS key release, PCR16, serving."""

from __future__ import annotations

from enclave_runtime.model.chat import ChatModel
from reference_enclave.client import Expectation, ask
from tests.reference_enclave.runtime.stack import Stack
from verifier.nitro import TrustRoot


def test_answer_is_the_models_own_greedy_output(stack: Stack) -> None:
    root = TrustRoot.from_pem(stack.ca.root_pem(), name="sim")
    result = ask(
        stack.enclave.url,
        "What is the capital of France?",
        expectation=Expectation(stack.expected, "test"),
        roots=[root],
        max_tokens=8,
    )
    plain = ChatModel.from_gguf(stack.gguf.read_bytes()).generate(
        "What is the capital of France?", max_new_tokens=8
    )
    assert result.answer == plain.text
    assert result.tokens == len(plain.token_ids)
    assert result.root_name == "sim"


def test_pcr16_names_the_model(stack: Stack) -> None:
    assert 16 in stack.enclave.nsm.locked()
    assert stack.enclave.nsm.pcr(16) == stack.expected[16]
    events = [e["event"] for e in stack.enclave.events]
    assert (
        events.index("data-key-released") < events.index("model-measured") < events.index("ready")
    )
