"""A LLaMA-architecture decoder (SmolLM2) in plain NumPy, float32 throughout.

Layout notes, checked against llama.cpp's conventions:

* GGUF stores a tensor's dimensions fastest-first (``ne``); :mod:`.gguf_read` reverses
  them, so every weight matrix is ``(out_features, in_features)`` and a linear layer is
  ``x @ W.T``.
* llama.cpp's converter permutes the Q and K projections of the ``llama`` architecture so
  that rotary embedding rotates *adjacent* pairs ``(2i, 2i+1)`` (GGML "normal" RoPE), not
  the two halves as in the Hugging Face code.  This module applies it that way.
* Grouped-query attention: query head ``h`` reads key/value head ``h // (n_head/n_head_kv)``.
* The output head is tied to the token embedding when the file has no ``output.weight``.

Every matrix product with a weight goes through a :class:`MatmulBackend`, so the GPU
bridge can run them on the accelerator over its encrypted channel; the default
:class:`NumpyBackend` computes ``x @ W.T`` locally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from enclave_runtime.errors import InvalidInput, ProtocolError
from enclave_runtime.model.gguf_read import GGUFFile

F32 = npt.NDArray[np.float32]


class MatmulBackend(Protocol):
    """Where weight products run. ``matmul(name, x)`` must equal ``x @ W.T``.

    Names are the GGUF tensor names ``blk.{i}.{attn_q,attn_k,attn_v,attn_output,
    ffn_gate,ffn_up,ffn_down}.weight`` and ``output.weight`` (the tied head: the token
    embedding itself).  Every weight is registered once, at load, as a float32
    C-contiguous (out, in) array; ``x`` is float32 C-contiguous (tokens, in) and the
    result must be float32 (tokens, out).
    """

    def register_weight(self, name: str, w: F32) -> None:
        """Receive weight ``name`` of shape (out, in) once, at load time."""

    def matmul(self, name: str, x: F32) -> F32:
        """``x`` (tokens, in) times the registered weight, transposed: (tokens, out)."""


class NumpyBackend:
    """The local backend: weights stay in this process, products run in NumPy/BLAS."""

    def __init__(self) -> None:
        self.weights: dict[str, F32] = {}

    def register_weight(self, name: str, w: F32) -> None:
        self.weights[name] = w

    def matmul(self, name: str, x: F32) -> F32:
        out: F32 = x @ self.weights[name].T
        return out


@dataclass(frozen=True)
class LlamaConfig:
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    context_length: int
    rms_eps: float
    rope_base: float
    rope_dim: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_gguf(cls, g: GGUFFile) -> LlamaConfig:
        arch = g.get_str("general.architecture")
        if arch != "llama":
            raise InvalidInput(f"{g.what}: architecture {arch!r} is not supported (need 'llama')")
        d_model = g.get_int("llama.embedding_length")
        n_heads = g.get_int("llama.attention.head_count")
        n_kv = g.get_int("llama.attention.head_count_kv", n_heads)
        if n_heads <= 0 or n_kv <= 0 or d_model % n_heads or n_heads % n_kv:
            raise InvalidInput(
                f"{g.what}: inconsistent head counts {n_heads}/{n_kv} for d={d_model}"
            )
        head_dim = d_model // n_heads
        rope_dim = g.get_int("llama.rope.dimension_count", head_dim)
        if rope_dim % 2 or not 0 < rope_dim <= head_dim:
            raise InvalidInput(f"{g.what}: llama.rope.dimension_count {rope_dim} is invalid")
        tokens = g.metadata.get("tokenizer.ggml.tokens")
        vocab = g.get_int("llama.vocab_size", len(tokens) if isinstance(tokens, list) else None)
        scaling = g.metadata.get("llama.rope.scaling.type", "none")
        if scaling not in ("none", None):
            raise InvalidInput(f"{g.what}: RoPE scaling {scaling!r} is not supported")
        return cls(
            n_layers=g.get_int("llama.block_count"),
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=n_kv,
            ffn_dim=g.get_int("llama.feed_forward_length"),
            vocab_size=vocab,
            context_length=g.get_int("llama.context_length"),
            rms_eps=g.get_float("llama.attention.layer_norm_rms_epsilon"),
            rope_base=g.get_float("llama.rope.freq_base", 10000.0),
            rope_dim=rope_dim,
        )


class KVCache:
    """Keys and values of every layer for the positions processed so far."""

    def __init__(self, config: LlamaConfig, capacity: int) -> None:
        shape = (config.n_kv_heads, capacity, config.head_dim)
        self.capacity = capacity
        self.keys = [np.zeros(shape, dtype=np.float32) for _ in range(config.n_layers)]
        self.values = [np.zeros(shape, dtype=np.float32) for _ in range(config.n_layers)]
        self.length = 0


def rms_norm(x: F32, weight: F32, eps: float) -> F32:
    mean_sq: F32 = np.mean(x * x, axis=-1, keepdims=True)
    scale: F32 = (np.float32(1.0) / np.sqrt(mean_sq + np.float32(eps))).astype(np.float32)
    out: F32 = (x * scale) * weight
    return out


def silu(x: F32) -> F32:
    with np.errstate(over="ignore"):  # exp(-x) -> inf for very negative x gives silu = -0
        out: F32 = (x / (np.float32(1.0) + np.exp(-x))).astype(np.float32, copy=False)
    return out


class LlamaModel:
    """Weights dequantized once to float32 at load; ``forward`` extends a :class:`KVCache`."""

    def __init__(self, g: GGUFFile, backend: MatmulBackend | None = None) -> None:
        self.config = cfg = LlamaConfig.from_gguf(g)
        self.backend: MatmulBackend = backend if backend is not None else NumpyBackend()
        self._out_dims: dict[str, int] = {}
        self.embedding = self._load(g, "token_embd.weight", (cfg.vocab_size, cfg.d_model))
        self.output_norm = self._load(g, "output_norm.weight", (cfg.d_model,))
        kv_out = cfg.n_kv_heads * cfg.head_dim
        self.attn_norm: list[F32] = []
        self.ffn_norm: list[F32] = []
        for i in range(cfg.n_layers):
            self.attn_norm.append(self._load(g, f"blk.{i}.attn_norm.weight", (cfg.d_model,)))
            self.ffn_norm.append(self._load(g, f"blk.{i}.ffn_norm.weight", (cfg.d_model,)))
            for part, shape in (
                ("attn_q", (cfg.d_model, cfg.d_model)),
                ("attn_k", (kv_out, cfg.d_model)),
                ("attn_v", (kv_out, cfg.d_model)),
                ("attn_output", (cfg.d_model, cfg.d_model)),
                ("ffn_gate", (cfg.ffn_dim, cfg.d_model)),
                ("ffn_up", (cfg.ffn_dim, cfg.d_model)),
                ("ffn_down", (cfg.d_model, cfg.ffn_dim)),
            ):
                name = f"blk.{i}.{part}.weight"
                self._register(name, self._load(g, name, shape))
        if "output.weight" in g.tensors:
            head = self._load(g, "output.weight", (cfg.vocab_size, cfg.d_model))
        else:
            head = self.embedding  # tied output head
        self._register("output.weight", head)
        half = cfg.rope_dim // 2
        self._inv_freq = (
            1.0 / (cfg.rope_base ** (np.arange(half, dtype=np.float64) * 2.0 / cfg.rope_dim))
        ).astype(np.float64)

    def _register(self, name: str, w: F32) -> None:
        self._out_dims[name] = int(w.shape[0])
        self.backend.register_weight(name, w)

    def _matmul(self, name: str, x: F32) -> F32:
        """The backend's ``x @ W.T``, checked: float32 of shape (tokens, out)."""
        y: object = self.backend.matmul(name, x)  # a remote backend's answer: check it
        want = (x.shape[0], self._out_dims[name])
        if not isinstance(y, np.ndarray) or y.shape != want:
            got = getattr(y, "shape", type(y).__name__)
            raise ProtocolError(f"matmul backend: {name} returned {got}, expected {want}")
        out: F32 = y.astype(np.float32, copy=False)
        return out

    @staticmethod
    def _load(g: GGUFFile, name: str, shape: tuple[int, ...]) -> F32:
        info = g.tensors.get(name)
        if info is None:
            raise InvalidInput(f"{g.what}: GGUF has no tensor {name}")
        if info.shape != shape:
            raise InvalidInput(f"{g.what}: tensor {name} has shape {info.shape}, expected {shape}")
        return g.tensor(name)

    def new_cache(self, capacity: int) -> KVCache:
        if not 0 < capacity <= self.config.context_length:
            raise InvalidInput(
                f"model: {capacity} positions exceed the context length "
                f"{self.config.context_length}"
            )
        return KVCache(self.config, capacity)

    def _rope(self, x: F32, start: int) -> F32:
        """Rotate adjacent pairs of the first ``rope_dim`` features; x is (heads, T, head_dim)."""
        t = x.shape[1]
        pos = np.arange(start, start + t, dtype=np.float64)
        angles = np.outer(pos, self._inv_freq)  # (T, rope_dim/2)
        cos = np.cos(angles).astype(np.float32)
        sin = np.sin(angles).astype(np.float32)
        rd = self.config.rope_dim
        even = x[..., 0:rd:2]
        odd = x[..., 1:rd:2]
        out = x.copy()
        out[..., 0:rd:2] = even * cos - odd * sin
        out[..., 1:rd:2] = even * sin + odd * cos
        return out

    def forward(
        self,
        token_ids: list[int] | npt.NDArray[np.int64],
        cache: KVCache,
        *,
        last_only: bool = False,
    ) -> F32:
        """Logits (T, vocab) for ``token_ids`` placed after the cache's positions.

        With ``last_only`` only the last position's logits are computed, shape (1, vocab).
        """
        cfg = self.config
        try:
            ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        except (OverflowError, ValueError, TypeError):
            raise InvalidInput("model: token ids must be integers") from None
        t = int(ids.shape[0])
        start = cache.length
        if t == 0:
            raise InvalidInput("model: forward called with no tokens")
        if start + t > cache.capacity:
            raise InvalidInput(f"model: {start + t} positions exceed the cache of {cache.capacity}")
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise InvalidInput("model: token id out of the vocabulary")
        hd = cfg.head_dim
        group = cfg.n_heads // cfg.n_kv_heads
        end = start + t
        scale = np.float32(1.0 / np.sqrt(hd))
        # causal mask for the new queries against all cached positions
        q_pos = np.arange(start, end)[:, None]
        k_pos = np.arange(end)[None, :]
        mask = np.where(k_pos <= q_pos, np.float32(0.0), np.float32(-np.inf)).astype(np.float32)
        x: F32 = self.embedding[ids]
        mm = self._matmul
        for i in range(cfg.n_layers):
            h = rms_norm(x, self.attn_norm[i], cfg.rms_eps)
            q = mm(f"blk.{i}.attn_q.weight", h).reshape(t, cfg.n_heads, hd).transpose(1, 0, 2)
            k = mm(f"blk.{i}.attn_k.weight", h).reshape(t, cfg.n_kv_heads, hd).transpose(1, 0, 2)
            v = mm(f"blk.{i}.attn_v.weight", h).reshape(t, cfg.n_kv_heads, hd).transpose(1, 0, 2)
            q = self._rope(q, start)
            k = self._rope(k, start)
            cache.keys[i][:, start:end] = k
            cache.values[i][:, start:end] = v
            keys = cache.keys[i][:, :end]  # (kv, S, hd)
            values = cache.values[i][:, :end]
            qg = q.reshape(cfg.n_kv_heads, group * t, hd)
            scores = (qg @ keys.transpose(0, 2, 1)) * scale  # (kv, group*T, S)
            scores = scores.reshape(cfg.n_kv_heads, group, t, end) + mask
            scores = scores - scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            attn = probs.reshape(cfg.n_kv_heads, group * t, end) @ values  # (kv, group*T, hd)
            attn = attn.reshape(cfg.n_heads, t, hd).transpose(1, 0, 2).reshape(t, cfg.d_model)
            x = x + mm(f"blk.{i}.attn_output.weight", np.ascontiguousarray(attn))
            h = rms_norm(x, self.ffn_norm[i], cfg.rms_eps)
            gate = mm(f"blk.{i}.ffn_gate.weight", h)
            up = mm(f"blk.{i}.ffn_up.weight", h)
            x = x + mm(f"blk.{i}.ffn_down.weight", silu(gate) * up)
        cache.length = end
        if last_only:
            x = x[-1:]
        h = rms_norm(x, self.output_norm, cfg.rms_eps)
        return mm("output.weight", h)
