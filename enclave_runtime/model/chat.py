"""Chat on top of the NumPy model: SmolLM2's ChatML template, greedy decoding, streaming.

The prompt is built as token ids, not as text that is re-parsed: control tokens
(``<|im_start|>``, ``<|im_end|>``) come only from the template, so a user message that
contains the string ``<|im_end|>`` is encoded as ordinary text and cannot close its turn.
For ordinary messages the ids equal the tokenization of SmolLM2's Jinja chat template
rendered with ``add_generation_prompt=True`` (a test renders the GGUF's template with
jinja2 and compares).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from enclave_runtime.errors import InvalidInput, ServiceUnavailable
from enclave_runtime.model.gguf_read import Buffer, GGUFFile
from enclave_runtime.model.llama import LlamaModel, MatmulBackend
from enclave_runtime.model.tokenizer import ByteBPETokenizer

#: the system turn SmolLM2's template inserts when the conversation has none
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
ROLES = frozenset({"system", "user", "assistant"})
#: prompt tokens per forward pass when a deadline is set (checked between chunks)
PREFILL_CHUNK = 128


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidInput(f"chat: role {self.role!r} is not one of {sorted(ROLES)}")


@dataclass(frozen=True)
class Generation:
    """One completed answer and its timings."""

    text: str
    prompt_tokens: int
    token_ids: tuple[int, ...]
    stop_reason: str  # "end" (an end-of-turn token), "length" or "time" (budget spent)
    prefill_seconds: float  # prompt processing up to the first answer token
    decode_seconds: float  # the single-token forward passes after that
    decode_steps: int
    timings: tuple[float, ...] = field(default=(), repr=False)

    @property
    def tokens_per_second(self) -> float:
        """Decode speed: single-token forward passes per second (KV-cached)."""
        return self.decode_steps / self.decode_seconds if self.decode_seconds > 0 else 0.0


def tokenizer_from_gguf(g: GGUFFile) -> ByteBPETokenizer:
    kind = g.get_str("tokenizer.ggml.model")
    if kind != "gpt2":
        raise InvalidInput(f"{g.what}: tokenizer model {kind!r} is not supported (need 'gpt2')")
    tokens = g.get_str_list("tokenizer.ggml.tokens")
    types = (
        g.get_int_list("tokenizer.ggml.token_type")
        if "tokenizer.ggml.token_type" in g.metadata
        else None
    )
    eos = g.metadata.get("tokenizer.ggml.eos_token_id")
    bos = g.metadata.get("tokenizer.ggml.bos_token_id")
    unk = g.metadata.get("tokenizer.ggml.unknown_token_id", 0)
    return ByteBPETokenizer(
        tokens,
        g.get_str_list("tokenizer.ggml.merges"),
        types,
        bos_id=bos if isinstance(bos, int) else None,
        eos_id=eos if isinstance(eos, int) else None,
        unk_id=unk if isinstance(unk, int) else 0,
    )


class ChatModel:
    """A loaded model plus tokenizer; ``generate`` and ``stream`` answer one user prompt."""

    def __init__(
        self,
        model: LlamaModel,
        tokenizer: ByteBPETokenizer,
        *,
        default_system: str | None = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        if tokenizer.vocab_size != model.config.vocab_size:
            raise InvalidInput(
                f"model: tokenizer has {tokenizer.vocab_size} tokens, "
                f"the model {model.config.vocab_size}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.default_system = default_system
        self.im_start = tokenizer.token_id(IM_START)
        self.im_end = tokenizer.token_id(IM_END)
        stops = {self.im_end}
        if tokenizer.eos_id is not None:
            stops.add(tokenizer.eos_id)
        if END_OF_TEXT in tokenizer.vocab:
            stops.add(tokenizer.vocab[END_OF_TEXT])
        self.stop_ids = frozenset(stops)

    @classmethod
    def from_gguf(
        cls,
        data: Buffer,
        *,
        backend: MatmulBackend | None = None,
        what: str = "model",
        default_system: str | None = DEFAULT_SYSTEM_PROMPT,
    ) -> ChatModel:
        """Load from GGUF bytes in memory (no path needed; see :mod:`.gguf_read`)."""
        g = GGUFFile(data, what=what)
        return cls(LlamaModel(g, backend), tokenizer_from_gguf(g), default_system=default_system)

    # -- prompt -----------------------------------------------------------------------

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """ChatML ids for ``messages`` followed by the assistant's opening."""
        tok = self.tokenizer
        turns = list(messages)
        if not turns:
            raise InvalidInput("chat: no messages")
        if turns[0].role != "system" and self.default_system is not None:
            turns.insert(0, Message("system", self.default_system))
        newline = tok.encode("\n")
        ids: list[int] = []
        for m in turns:
            ids.append(self.im_start)
            ids.extend(tok.encode(f"{m.role}\n{m.content}"))
            ids.append(self.im_end)
            ids.extend(newline)
        ids.append(self.im_start)
        ids.extend(tok.encode("assistant\n"))
        return ids

    def _messages(self, prompt: str | Sequence[Message]) -> list[Message]:
        if isinstance(prompt, str):
            return [Message("user", prompt)]
        return list(prompt)

    # -- decoding ---------------------------------------------------------------------

    def stream_token_ids(self, prompt_ids: Sequence[int], max_new_tokens: int) -> Iterator[int]:
        """Greedy decoding with a KV cache; stops after an end token (not yielded)."""
        if max_new_tokens < 0:
            raise InvalidInput("chat: max_new_tokens must not be negative")
        if not prompt_ids:
            raise InvalidInput("chat: empty prompt")
        if max_new_tokens == 0:
            return
        cache = self.model.new_cache(len(prompt_ids) + max_new_tokens)
        logits = self.model.forward(list(prompt_ids), cache, last_only=True)
        for step in range(max_new_tokens):
            next_id = int(np.argmax(logits[-1]))
            if next_id in self.stop_ids:
                return
            yield next_id
            if step + 1 < max_new_tokens:
                logits = self.model.forward([next_id], cache)

    def stream(self, prompt: str | Sequence[Message], max_new_tokens: int = 64) -> Iterator[str]:
        """Yield the answer's text piece by piece (whole UTF-8 characters only)."""
        ids = self.prompt_ids(self._messages(prompt))
        yield from self.tokenizer.stream_decode(self.stream_token_ids(ids, max_new_tokens))

    def generate(self, prompt: str | Sequence[Message], max_new_tokens: int = 64) -> Generation:
        return self.generate_ids(self.prompt_ids(self._messages(prompt)), max_new_tokens)

    def generate_ids(
        self,
        ids: Sequence[int],
        max_new_tokens: int,
        *,
        deadline: float | None = None,
        prefill_chunk: int = PREFILL_CHUNK,
    ) -> Generation:
        """Greedy answer to prompt ``ids``; with a ``deadline`` (``time.monotonic()``) the
        work stops when it passes: a prompt longer than ``prefill_chunk`` tokens is
        processed in chunks and :class:`ServiceUnavailable` is raised between two of them;
        decoding ends with ``stop_reason`` "time"."""
        if max_new_tokens < 0:
            raise InvalidInput("chat: max_new_tokens must not be negative")
        if not ids:
            raise InvalidInput("chat: empty prompt")
        out: list[int] = []
        stamps: list[float] = []
        t0 = time.perf_counter()
        if max_new_tokens == 0:
            return Generation("", len(ids), (), "length", 0.0, 0.0, 0)
        cache = self.model.new_cache(len(ids) + max_new_tokens)
        if deadline is None or len(ids) <= prefill_chunk:
            logits = self.model.forward(list(ids), cache, last_only=True)
        else:
            for start in range(0, len(ids), prefill_chunk):
                logits = self.model.forward(
                    list(ids[start : start + prefill_chunk]), cache, last_only=True
                )
                if start + prefill_chunk < len(ids) and time.monotonic() > deadline:
                    done = start + prefill_chunk
                    raise ServiceUnavailable(
                        f"inference stopped: its time budget was spent after {done}"
                        f" of {len(ids)} prompt tokens"
                    )
        reason = "length"
        for step in range(max_new_tokens):
            next_id = int(np.argmax(logits[-1]))
            if next_id in self.stop_ids:
                reason = "end"
                break
            out.append(next_id)
            stamps.append(time.perf_counter())
            if step + 1 >= max_new_tokens:
                break
            if deadline is not None and time.monotonic() > deadline:
                reason = "time"
                break
            logits = self.model.forward([next_id], cache)
        t_end = time.perf_counter()
        # the first token's time is prompt processing; the rest is decoding
        prefill = (stamps[0] if stamps else t_end) - t0
        decode = t_end - (stamps[0] if stamps else t_end)
        # after the first token: one forward per further token, plus one that found the end
        steps = max(0, len(out) - 1) + (1 if reason == "end" and out else 0)
        return Generation(
            text=self.tokenizer.decode(out, skip_special=True),
            prompt_tokens=len(ids),
            token_ids=tuple(out),
            stop_reason=reason,
            prefill_seconds=prefill,
            decode_seconds=decode,
            decode_steps=steps,
            timings=tuple(s - t0 for s in stamps),
        )
