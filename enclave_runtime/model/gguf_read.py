"""A small GGUF (v2/v3) reader that works on bytes in memory.

The enclave receives the model as authenticated plaintext in memory (see
:mod:`enclave_runtime.model_format`), never as a path, so this reader parses a
buffer (``bytes``, ``bytearray``, ``memoryview`` or ``mmap``) directly: no
memfd, no tmpfs, no temporary file.  It depends on NumPy only (the ``gguf``
package needs pyyaml, requests and tqdm at import time), and supports exactly
the tensor encodings the project's models use: F32, F16, Q4_0, Q4_1 and Q8_0.
The tests check its metadata and dequantized tensors against ``gguf.GGUFReader``
and ``gguf.quants.dequantize``.

Every length and offset is bounds-checked; a malformed file raises
:class:`~enclave_runtime.errors.InvalidInput` with one line naming the field.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from enclave_runtime.errors import InvalidInput

Buffer = bytes | bytearray | memoryview | mmap.mmap

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

#: sanity limits for a hostile file (far above anything real)
MAX_KV = 4096
MAX_TENSORS = 65536
MAX_STRING = 1 << 24
MAX_ARRAY = 1 << 24
MAX_DIMS = 4

MetaValue = int | float | bool | str | list["MetaValue"]


class GGMLType(IntEnum):
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q8_0 = 8


#: type -> (elements per block, bytes per block)
BLOCK_LAYOUT: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 18),
    GGMLType.Q4_1: (32, 20),
    GGMLType.Q8_0: (32, 34),
}


class _ValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR: dict[_ValueType, str] = {
    _ValueType.UINT8: "<B",
    _ValueType.INT8: "<b",
    _ValueType.UINT16: "<H",
    _ValueType.INT16: "<h",
    _ValueType.UINT32: "<I",
    _ValueType.INT32: "<i",
    _ValueType.FLOAT32: "<f",
    _ValueType.BOOL: "<?",
    _ValueType.UINT64: "<Q",
    _ValueType.INT64: "<q",
    _ValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's directory entry. ``shape`` is NumPy order (GGUF's ``ne`` reversed)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLType
    offset: int  # absolute offset of the data in the buffer
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class _Cursor:
    def __init__(self, buf: memoryview, what: str) -> None:
        self.buf = buf
        self.pos = 0
        self.what = what

    def take(self, n: int, field: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise InvalidInput(f"{self.what}: truncated GGUF while reading {field}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str, field: str) -> int | float | bool:
        value: int | float | bool = struct.unpack(fmt, self.take(struct.calcsize(fmt), field))[0]
        return value

    def u32(self, field: str) -> int:
        return int(self.scalar("<I", field))

    def u64(self, field: str) -> int:
        return int(self.scalar("<Q", field))

    def string(self, field: str) -> str:
        n = self.u64(field)
        if n > MAX_STRING:
            raise InvalidInput(
                f"{self.what}: GGUF string {field} is {n} bytes (limit {MAX_STRING})"
            )
        raw = self.take(n, field)
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{self.what}: GGUF string {field} is not UTF-8") from None

    def value(self, vtype: int, field: str, depth: int = 0) -> MetaValue:
        try:
            t = _ValueType(vtype)
        except ValueError:
            raise InvalidInput(f"{self.what}: GGUF key {field} has unknown type {vtype}") from None
        if t is _ValueType.STRING:
            return self.string(field)
        if t is _ValueType.ARRAY:
            if depth > 0:
                raise InvalidInput(f"{self.what}: GGUF key {field} nests arrays")
            item_type = self.u32(field)
            count = self.u64(field)
            if count > MAX_ARRAY:
                raise InvalidInput(f"{self.what}: GGUF array {field} has {count} items")
            if item_type in _SCALAR:
                fmt = _SCALAR[_ValueType(item_type)]
                size = struct.calcsize(fmt)
                raw = self.take(size * count, field)
                return [v[0] for v in struct.iter_unpack(fmt, raw)]
            return [self.value(item_type, field, depth + 1) for _ in range(count)]
        return self.scalar(_SCALAR[t], field)


class GGUFFile:
    """A parsed GGUF buffer: ``metadata`` (key -> value) and ``tensors`` (name -> info)."""

    def __init__(self, data: Buffer, *, what: str = "model") -> None:
        self._buf = memoryview(data).cast("B")
        self.what = what
        cur = _Cursor(self._buf, what)
        if bytes(cur.take(4, "magic")) != GGUF_MAGIC:
            raise InvalidInput(f"{what}: not a GGUF file (bad magic)")
        self.version = cur.u32("version")
        if self.version not in (2, 3):
            raise InvalidInput(f"{what}: unsupported GGUF version {self.version}")
        n_tensors = cur.u64("tensor_count")
        n_kv = cur.u64("kv_count")
        if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
            raise InvalidInput(f"{what}: GGUF declares {n_tensors} tensors, {n_kv} keys (too many)")
        self.metadata: dict[str, MetaValue] = {}
        for _ in range(n_kv):
            key = cur.string("key")
            vtype = cur.u32(key)
            if key in self.metadata:
                raise InvalidInput(f"{what}: GGUF key {key} appears twice")
            self.metadata[key] = cur.value(vtype, key)
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise InvalidInput(f"{what}: GGUF general.alignment {alignment!r} is not a power of 2")
        raw_infos: list[tuple[str, tuple[int, ...], GGMLType, int]] = []
        for _ in range(n_tensors):
            name = cur.string("tensor name")
            n_dims = cur.u32(name)
            if not 1 <= n_dims <= MAX_DIMS:
                raise InvalidInput(f"{what}: tensor {name} has {n_dims} dimensions")
            ne = [cur.u64(name) for _ in range(n_dims)]
            type_id = cur.u32(name)
            try:
                ggml_type = GGMLType(type_id)
            except ValueError:
                raise InvalidInput(
                    f"{what}: tensor {name} has unsupported GGML type {type_id}"
                ) from None
            rel = cur.u64(name)
            if rel % alignment:
                raise InvalidInput(f"{what}: tensor {name} offset {rel} is not aligned")
            raw_infos.append((name, tuple(reversed(ne)), ggml_type, rel))
        data_start = -(-cur.pos // alignment) * alignment
        self.tensors: dict[str, TensorInfo] = {}
        for name, shape, ggml_type, rel in raw_infos:
            if name in self.tensors:
                raise InvalidInput(f"{what}: tensor {name} appears twice")
            per_block, block_bytes = BLOCK_LAYOUT[ggml_type]
            n = 1
            for d in shape:
                n *= d
            if shape[-1] % per_block:
                raise InvalidInput(
                    f"{what}: tensor {name} row size is not a multiple of {per_block}"
                )
            nbytes = n // per_block * block_bytes
            start = data_start + rel
            if start + nbytes > len(self._buf):
                raise InvalidInput(f"{what}: tensor {name} runs past the end of the file")
            self.tensors[name] = TensorInfo(name, shape, ggml_type, start, nbytes)

    # -- metadata helpers ---------------------------------------------------------------

    def get_int(self, key: str, default: int | None = None) -> int:
        value = self.metadata.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{self.what}: GGUF key {key} missing or not an integer")
        return value

    def get_float(self, key: str, default: float | None = None) -> float:
        value = self.metadata.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{self.what}: GGUF key {key} missing or not a number")
        return float(value)

    def get_str(self, key: str, default: str | None = None) -> str:
        value = self.metadata.get(key, default)
        if not isinstance(value, str):
            raise InvalidInput(f"{self.what}: GGUF key {key} missing or not a string")
        return value

    def get_str_list(self, key: str) -> list[str]:
        value = self.metadata.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidInput(f"{self.what}: GGUF key {key} missing or not a string array")
        return [str(v) for v in value]

    def get_int_list(self, key: str) -> list[int]:
        value = self.metadata.get(key)
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise InvalidInput(f"{self.what}: GGUF key {key} missing or not an integer array")
        return [int(v) for v in value if isinstance(v, int)]

    # -- tensors --------------------------------------------------------------------------

    def raw(self, name: str) -> memoryview:
        info = self._info(name)
        return self._buf[info.offset : info.offset + info.nbytes]

    def _info(self, name: str) -> TensorInfo:
        info = self.tensors.get(name)
        if info is None:
            raise InvalidInput(f"{self.what}: GGUF has no tensor {name}")
        return info

    def tensor(self, name: str) -> npt.NDArray[np.float32]:
        """The tensor dequantized to a new float32 array of ``info.shape``."""
        info = self._info(name)
        flat = dequantize(self.raw(name), info.ggml_type, info.n_elements)
        return flat.reshape(info.shape)


def dequantize(raw: Buffer, ggml_type: GGMLType, n_elements: int) -> npt.NDArray[np.float32]:
    """Expand ``n_elements`` values stored as ``ggml_type`` to float32 (ggml's formulas)."""
    per_block, block_bytes = BLOCK_LAYOUT[ggml_type]
    n_blocks = n_elements // per_block
    data = np.frombuffer(raw, dtype=np.uint8, count=n_blocks * block_bytes)
    if ggml_type is GGMLType.F32:
        return data.view("<f4").astype(np.float32)
    if ggml_type is GGMLType.F16:
        return data.view("<f2").astype(np.float32)
    blocks = data.reshape(n_blocks, block_bytes)
    d = blocks[:, 0:2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    if ggml_type is GGMLType.Q8_0:
        qs8 = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
        return (qs8 * d).reshape(-1)
    if ggml_type is GGMLType.Q4_1:
        m = blocks[:, 2:4].copy().view("<f2").astype(np.float32)
        qs = blocks[:, 4:]
    else:  # Q4_0
        qs = blocks[:, 2:]
    low = (qs & 0x0F).astype(np.float32)
    high = (qs >> 4).astype(np.float32)
    q = np.concatenate([low, high], axis=1)  # element j from low nibble, j+16 from high
    if ggml_type is GGMLType.Q4_1:
        return (q * d + m).reshape(-1)
    out: npt.NDArray[np.float32] = ((q - np.float32(8.0)) * d).reshape(-1)
    return out
