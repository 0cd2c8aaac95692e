"""A tiny SmolLM2-shaped model for fast tests, generated deterministically.

Same architecture and file layout as SmolLM2 (``llama``, GQA, tied head, GPT-2 byte-level
BPE with ChatML control tokens), with tiny dimensions and random weights from a fixed
seed.  The tensors use the encodings the real file uses (Q8_0 embedding, Q4_1
projections, F32 norms) plus one F16 and one Q4_0 tensor, so every path of
:mod:`.gguf_read` is exercised.  The merge list is learnt with a few BPE steps on a
fixed corpus.  The image's self-test builds its F32 model from :data:`DIMS` and
:func:`tiny_vocab`; the quantised file for tests is written on the host by
:mod:`reference_enclave.model.tiny_gguf` (``gguf.GGUFWriter``, a development
dependency: the enclave only reads GGUF files).
"""

from __future__ import annotations

import itertools
from collections import Counter

from enclave_runtime.model.tokenizer import bytes_to_unicode, pre_tokenize

TINY_CORPUS = (
    "What is the capital of France? The capital of France is Paris. "
    "The quick brown fox jumps over the lazy dog. Hello world! "
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face. "
    "system user assistant\n"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
N_MERGES = 48
DIMS = {
    "block_count": 2,
    "embedding_length": 64,
    "head_count": 4,
    "head_count_kv": 2,
    "feed_forward_length": 128,
    "context_length": 256,
}


def train_merges(corpus: str, n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE training (most frequent pair, ties broken by the pair's text)."""
    byte_char = bytes_to_unicode()
    words = Counter(
        tuple(byte_char[b] for b in piece.encode("utf-8")) for piece in pre_tokenize(corpus)
    )
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for a, b in itertools.pairwise(word):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            out: list[str] = []
            k = 0
            while k < len(word):
                if k < len(word) - 1 and (word[k], word[k + 1]) == best:
                    out.append(word[k] + word[k + 1])
                    k += 2
                else:
                    out.append(word[k])
                    k += 1
            merged[tuple(out)] += count
        words = merged
    return merges


def tiny_vocab() -> tuple[list[str], list[str], list[int]]:
    """(tokens, merges as 'a b', token types) of the tiny tokenizer."""
    merges = train_merges(TINY_CORPUS, N_MERGES)
    tokens = list(SPECIAL_TOKENS)
    types = [3] * len(SPECIAL_TOKENS)
    byte_chars = list(bytes_to_unicode().values())
    for ch in sorted(byte_chars, key=ord):
        tokens.append(ch)
        types.append(1)
    for a, b in merges:
        if a + b not in tokens:
            tokens.append(a + b)
            types.append(1)
    return tokens, [f"{a} {b}" for a, b in merges], types
