"""Fixtures: the tiny GGUF and, where installed, SmolLM2 (see ``tests/model_fixtures.py``)."""

from model_fixtures import smollm2_path, tiny_bytes, tiny_chat, tiny_gguf

__all__ = ["smollm2_path", "tiny_bytes", "tiny_chat", "tiny_gguf"]
