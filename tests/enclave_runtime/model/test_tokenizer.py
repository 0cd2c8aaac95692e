"""Byte-level BPE: round trips, pre-tokenizer, control tokens, agreement with HF tokenizers."""

from __future__ import annotations

import random
from pathlib import Path

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave_runtime.model.chat import (
    DEFAULT_SYSTEM_PROMPT,
    ChatModel,
    Message,
    tokenizer_from_gguf,
)
from enclave_runtime.model.gguf_read import GGUFFile
from enclave_runtime.model.tokenizer import ByteBPETokenizer, gpt2_split, pre_tokenize


@pytest.fixture(scope="module")
def tiny_tok(tiny_bytes: bytes) -> ByteBPETokenizer:
    return tokenizer_from_gguf(GGUFFile(tiny_bytes))


@pytest.fixture(scope="module")
def smol_gguf(smollm2_path: Path) -> GGUFFile:
    return GGUFFile(smollm2_path.read_bytes(), what="smollm2")


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_round_trip_any_text(tiny_tok: ByteBPETokenizer, text: str) -> None:
    tok = tiny_tok
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert "".join(tok.stream_decode(ids)) == text
    assert "".join(pre_tokenize(text)) == text


def test_merges_are_used(tiny_tok: ByteBPETokenizer) -> None:
    text = "The capital of France is Paris."
    ids = tiny_tok.encode(text)
    assert len(ids) < len(text.encode())  # merges shortened it
    assert tiny_tok.decode(ids) == text


def test_gpt2_split_cases() -> None:
    assert gpt2_split("Hello world") == ["Hello", " world"]
    assert gpt2_split("I'm  here!!") == ["I", "'m", " ", " here", "!!"]
    # \s+(?!\S) leaves the last newline, which \s+ then takes alone
    assert gpt2_split("a\n\nb") == ["a", "\n", "\n", "b"]
    assert gpt2_split("a\n\n  b") == ["a", "\n\n ", " b"]
    assert gpt2_split("end   ") == ["end", "   "]
    assert pre_tokenize("x 2024!") == ["x", " ", "2", "0", "2", "4", "!"]


def test_control_tokens_only_from_trusted_text(tiny_tok: ByteBPETokenizer) -> None:
    im_end = tiny_tok.token_id("<|im_end|>")
    assert im_end in tiny_tok.encode("a<|im_end|>b", allow_special=True)
    smuggled = tiny_tok.encode("a<|im_end|>b")
    assert im_end not in smuggled
    assert tiny_tok.decode(smuggled) == "a<|im_end|>b"


def test_stream_decode_waits_for_whole_characters(tiny_tok: ByteBPETokenizer) -> None:
    ids = tiny_tok.encode("東京😀")
    pieces = list(tiny_tok.stream_decode(ids))
    assert "".join(pieces) == "東京😀"
    assert all("\ufffd" not in p for p in pieces)


def test_smollm2_matches_hugging_face_tokenizers(smol_gguf: GGUFFile) -> None:
    """The reference implementation, configured as SmolLM2's tokenizer.json is."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    tokens = smol_gguf.get_str_list("tokenizer.ggml.tokens")
    merges = smol_gguf.get_str_list("tokenizer.ggml.merges")
    types = smol_gguf.get_int_list("tokenizer.ggml.token_type")
    ours = tokenizer_from_gguf(smol_gguf)
    hf = Tokenizer(
        models.BPE({t: i for i, t in enumerate(tokens)}, [tuple(m.split(" ", 1)) for m in merges])
    )
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    hf.add_special_tokens(
        [AddedToken(tokens[i], special=True) for i, t in enumerate(types) if t == 3]
    )
    samples = [
        "What is the capital of France?",
        "I'm here, you're there; they'll 've 'S",
        "x = 12345.67 + ١٢٣ and ½",
        "naïve café 東京 😀 emoji\u00a0nbsp\u2003em",
        "  leading\ttabs\t\tand   spaces  \n\n",
        "<|im_start|>user\nHi<|im_end|>\n",
        "def f(a, b):\n    return a**2 // b\n",
    ]
    rng = random.Random(5)
    alphabet = "abc XYZ 019 .,!?'\n\t é東😀-_()"
    samples += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(500)
    ]
    for text in samples:
        assert ours.encode(text, allow_special=True) == hf.encode(text).ids, text
        assert ours.decode(ours.encode(text)) == text


def test_chat_prompt_equals_rendered_smollm2_template(
    smol_gguf: GGUFFile, tiny_chat: ChatModel
) -> None:
    template = smol_gguf.get_str("tokenizer.chat_template")
    tok = tokenizer_from_gguf(smol_gguf)
    env = jinja2.Environment(autoescape=False)
    for messages in (
        [Message("user", "What is the capital of France?")],
        [Message("system", "Be terse."), Message("user", "Hi\nthere")],
    ):
        text = env.from_string(template).render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
        )
        assert DEFAULT_SYSTEM_PROMPT in text or messages[0].role == "system"
        want = tok.encode(text, allow_special=True)
        # ChatModel builds the same ids structurally (tiny model has the same specials)
        chat = ChatModel.__new__(ChatModel)
        chat.tokenizer = tok
        chat.default_system = DEFAULT_SYSTEM_PROMPT
        chat.im_start = tok.token_id("<|im_start|>")
        chat.im_end = tok.token_id("<|im_end|>")
        assert chat.prompt_ids(messages) == want
    assert tiny_chat.prompt_ids([Message("user", "x")])[0] == tiny_chat.im_start
