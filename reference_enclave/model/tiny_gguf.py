"""Write the tiny SmolLM2-shaped test model (:mod:`enclave_runtime.model.tiny`) as a GGUF file.

Same architecture and file layout as SmolLM2, tiny dimensions, random weights from a
fixed seed, in the encodings the real file uses (Q8_0 embedding, Q4_1 projections,
F32 norms) plus one F16 and one Q4_0 tensor, so every path of the enclave's GGUF reader
is exercised.  Written with ``gguf.GGUFWriter`` (a development dependency): the
enclave only reads GGUF files, so this lives on the host side.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from enclave_runtime.model.tiny import DIMS, tiny_vocab


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """Write the tiny model to ``path`` (same seed, same bytes) and return the path."""
    import gguf  # development dependency: only the writer needs it

    rng = np.random.default_rng(seed)
    tokens, merges, types = tiny_vocab()
    d = DIMS["embedding_length"]
    n_heads = DIMS["head_count"]
    n_kv = DIMS["head_count_kv"]
    head_dim = d // n_heads
    ffn = DIMS["feed_forward_length"]
    q = gguf.GGMLQuantizationType

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_string("general.name", f"tiny-smollm2-seed{seed}")
    w.add_uint32("llama.block_count", DIMS["block_count"])
    w.add_uint32("llama.context_length", DIMS["context_length"])
    w.add_uint32("llama.embedding_length", d)
    w.add_uint32("llama.feed_forward_length", ffn)
    w.add_uint32("llama.attention.head_count", n_heads)
    w.add_uint32("llama.attention.head_count_kv", n_kv)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_uint32("llama.vocab_size", len(tokens))
    w.add_uint32("llama.rope.dimension_count", head_dim)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "smollm")
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_array("tokenizer.ggml.token_type", types)
    w.add_array("tokenizer.ggml.merges", merges)
    w.add_uint32("tokenizer.ggml.bos_token_id", 1)
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)
    w.add_uint32("tokenizer.ggml.unknown_token_id", 0)

    def add(
        name: str, shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType, scale: float
    ) -> None:
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        if qtype in (q.F32, q.F16):
            w.add_tensor(name, gguf.quants.quantize(data, qtype))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    def add_norm(name: str) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32))

    add("token_embd.weight", (len(tokens), d), q.Q8_0, 0.5)
    for i in range(DIMS["block_count"]):
        add_norm(f"blk.{i}.attn_norm.weight")
        add(f"blk.{i}.attn_q.weight", (d, d), q.Q4_1, 0.3)
        add(f"blk.{i}.attn_k.weight", (n_kv * head_dim, d), q.Q4_1, 0.3)
        add(f"blk.{i}.attn_v.weight", (n_kv * head_dim, d), q.F16 if i == 0 else q.Q4_1, 0.3)
        add(f"blk.{i}.attn_output.weight", (d, d), q.Q4_1, 0.2)
        add_norm(f"blk.{i}.ffn_norm.weight")
        add(f"blk.{i}.ffn_gate.weight", (ffn, d), q.Q4_1, 0.2)
        add(f"blk.{i}.ffn_up.weight", (ffn, d), q.Q4_0 if i == 0 else q.Q4_1, 0.2)
        add(f"blk.{i}.ffn_down.weight", (d, ffn), q.Q4_1, 0.2)
    add_norm("output_norm.weight")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path
