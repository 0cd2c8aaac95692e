"""SmolLM2 in pure NumPy: GGUF reader, byte-level BPE tokenizer, LLaMA decoder, chat.

``ChatModel.from_gguf(data)`` loads from bytes in memory (what the enclave has after
decrypting the model file with :mod:`enclave_runtime.model_format`).  Weight products
go through a :class:`MatmulBackend` so the GPU bridge can run them remotely.

Performance note: on a small shared machine, multi-threaded BLAS makes the one-row
products of decoding ~10x slower; set ``OPENBLAS_NUM_THREADS=1`` (and ``OMP_NUM_THREADS``)
before NumPy is first imported, as ``enclave-audit model run`` and the benchmarks do.
"""

from enclave_runtime.model.chat import ChatModel, Generation, Message
from enclave_runtime.model.gguf_read import GGUFFile
from enclave_runtime.model.llama import LlamaConfig, LlamaModel, MatmulBackend, NumpyBackend
from enclave_runtime.model.tokenizer import ByteBPETokenizer

__all__ = [
    "ByteBPETokenizer",
    "ChatModel",
    "GGUFFile",
    "Generation",
    "LlamaConfig",
    "LlamaModel",
    "MatmulBackend",
    "Message",
    "NumpyBackend",
]
