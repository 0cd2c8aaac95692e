"""Host-side model helpers: the pinned SmolLM2 file and the tiny test model's writer.

The model loader and LLM that run in the enclave are :mod:`enclave_runtime.model`.
"""
