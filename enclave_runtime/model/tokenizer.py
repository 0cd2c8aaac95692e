"""Byte-level BPE (GPT-2 style) rebuilt from a GGUF's ``tokenizer.ggml.*`` metadata.

Pre-tokenization follows SmolLM2's ``tokenizer.json`` (llama.cpp pre-type ``smollm``):
every numeric character is split off on its own, then GPT-2's pattern

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

is applied.  Python's ``re`` has no ``\\p{..}`` classes and the enclave image does not
ship the ``regex`` module, so the pattern is implemented as a small scanner over
Unicode categories (``L*`` letters, ``N*`` numbers, Unicode ``White_Space``).  The tests
compare it with the Hugging Face ``tokenizers`` implementation.

Control tokens (``<|im_start|>``...) are only produced from text when the caller asks
(``allow_special=True``, used for trusted template text); user text can never smuggle
a control token in.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache

from enclave_runtime.errors import InvalidInput

#: Unicode White_Space (what ``\s`` means in the Rust/Oniguruma regex engines)
_WHITESPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")

TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping: dict[int, str] = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L")


def _is_number(ch: str) -> bool:
    return unicodedata.category(ch).startswith("N")


def _is_other(ch: str) -> bool:
    return ch not in _WHITESPACE and not _is_letter(ch) and not _is_number(ch)


def _run(text: str, start: int, pred: Callable[[str], bool]) -> int:
    end = start
    n = len(text)
    while end < n and pred(text[end]):
        end += 1
    return end


def gpt2_split(text: str) -> list[str]:
    """Split ``text`` as GPT-2's pre-tokenizer pattern does (see the module docstring)."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "'":
            match = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
            if match is not None:
                out.append(match)
                i += len(match)
                continue
        body = i + 1 if ch == " " and i + 1 < n else i
        lead = text[body]
        if body == i or lead != " ":
            if _is_letter(lead):
                end = _run(text, body + 1, _is_letter)
                out.append(text[i:end])
                i = end
                continue
            if _is_number(lead):
                end = _run(text, body + 1, _is_number)
                out.append(text[i:end])
                i = end
                continue
            if _is_other(lead):
                end = _run(text, body + 1, _is_other)
                out.append(text[i:end])
                i = end
                continue
        # whitespace: \s+(?!\S) then \s+
        end = _run(text, i, lambda c: c in _WHITESPACE)
        if end < n and end - i > 1:
            end -= 1  # leave the last space to prefix the next word
        out.append(text[i:end])
        i = end
    return out


def pre_tokenize(text: str) -> list[str]:
    """SmolLM2's pre-tokenizer: isolate every numeric character, then GPT-2's split."""
    pieces: list[str] = []
    start = 0
    for j, ch in enumerate(text):
        if _is_number(ch):
            if start < j:
                pieces.extend(gpt2_split(text[start:j]))
            pieces.append(ch)
            start = j + 1
    if start < len(text):
        pieces.extend(gpt2_split(text[start:]))
    return pieces


class ByteBPETokenizer:
    """Encode/decode with a GPT-2 byte-level BPE vocabulary and merge list."""

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[str],
        token_types: Sequence[int] | None = None,
        *,
        bos_id: int | None = None,
        eos_id: int | None = None,
        unk_id: int = 0,
    ) -> None:
        if not tokens:
            raise InvalidInput("tokenizer: empty vocabulary")
        self.tokens = list(tokens)
        self.vocab: dict[str, int] = {}
        for i, tok in enumerate(self.tokens):
            self.vocab.setdefault(tok, i)
        self.ranks: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(merges):
            left, sep, right = merge.partition(" ")
            if not sep or not left or not right:
                raise InvalidInput(f"tokenizer: merge {rank} {merge!r} is not 'left right'")
            self.ranks.setdefault((left, right), rank)
        types = list(token_types) if token_types is not None else [TOKEN_TYPE_NORMAL] * len(tokens)
        if len(types) != len(self.tokens):
            raise InvalidInput("tokenizer: token_type and tokens differ in length")
        self.special_ids = frozenset(
            i for i, t in enumerate(types) if t in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)
        )
        # longest first, so "<|im_start|>" wins over any shorter prefix
        self._specials = sorted(
            ((self.tokens[i], i) for i in self.special_ids), key=lambda p: -len(p[0])
        )
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.unk_id = unk_id
        self._bpe = lru_cache(maxsize=65536)(self._bpe_uncached)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def token_id(self, token: str) -> int:
        tid = self.vocab.get(token)
        if tid is None:
            raise InvalidInput(f"tokenizer: token {token!r} not in vocabulary")
        return tid

    # -- encoding ---------------------------------------------------------------------

    def _bpe_uncached(self, word: str) -> tuple[int, ...]:
        symbols = [_BYTE_TO_CHAR[b] for b in word.encode("utf-8")]
        while len(symbols) > 1:
            best_rank = None
            best_at = -1
            for k in range(len(symbols) - 1):
                rank = self.ranks.get((symbols[k], symbols[k + 1]))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_at = rank, k
            if best_rank is None:
                break
            pair = (symbols[best_at], symbols[best_at + 1])
            merged: list[str] = []
            k = 0
            while k < len(symbols):
                if k < len(symbols) - 1 and (symbols[k], symbols[k + 1]) == pair:
                    merged.append(symbols[k] + symbols[k + 1])
                    k += 2
                else:
                    merged.append(symbols[k])
                    k += 1
            symbols = merged
        ids: list[int] = []
        for sym in symbols:
            tid = self.vocab.get(sym)
            if tid is None:  # a byte symbol the vocabulary lacks (e.g. 0xC0, never in UTF-8)
                ids.extend(self.vocab.get(ch, self.unk_id) for ch in sym)
            else:
                ids.append(tid)
        return tuple(ids)

    def _encode_plain(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in pre_tokenize(text):
            ids.extend(self._bpe(piece))
        return ids

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Token ids for ``text``; control tokens are recognised only if ``allow_special``."""
        if not allow_special or not self._specials:
            return self._encode_plain(text)
        ids: list[int] = []
        start = 0
        i = 0
        while i < len(text):
            hit = next(((tok, tid) for tok, tid in self._specials if text.startswith(tok, i)), None)
            if hit is None:
                i += 1
                continue
            ids.extend(self._encode_plain(text[start:i]))
            ids.append(hit[1])
            i += len(hit[0])
            start = i
        ids.extend(self._encode_plain(text[start:]))
        return ids

    # -- decoding ---------------------------------------------------------------------

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (control tokens: their literal text)."""
        if not 0 <= token_id < len(self.tokens):
            raise InvalidInput(f"tokenizer: token id {token_id} out of range")
        tok = self.tokens[token_id]
        if token_id in self.special_ids:
            return tok.encode("utf-8")
        try:
            return bytes(_CHAR_TO_BYTE[c] for c in tok)
        except KeyError:
            return tok.encode("utf-8")

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        raw = b"".join(
            self.token_bytes(t) for t in ids if not (skip_special and t in self.special_ids)
        )
        return raw.decode("utf-8", errors="replace")

    def stream_decode(self, ids: Iterable[int], *, skip_special: bool = True) -> Iterator[str]:
        """Decode incrementally: yields text as soon as it forms whole UTF-8 characters."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for t in ids:
            if skip_special and t in self.special_ids:
                continue
            text = decoder.decode(self.token_bytes(t))
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail
