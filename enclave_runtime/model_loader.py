"""The encrypted model as the enclave receives it (CIMF, :mod:`enclave_runtime.model_format`).

The header is parsed (not yet authenticated) to learn what to ask KMS for: the
wrapped data key, its key id and the encryption context. Decryption authenticates
the header with the released key, then every chunk, and checks the whole
plaintext's SHA-256 against the header and against the digest pinned in the image.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass

from enclave_runtime import model_format
from enclave_runtime.errors import ModelTampered


@dataclass(frozen=True)
class EncryptedModel:
    blob: bytes
    header: model_format.ModelHeader
    what: str

    @classmethod
    def parse(cls, blob: bytes, *, what: str) -> EncryptedModel:
        header = model_format.read_header(io.BytesIO(blob), what=what)
        if not header.wrapped_key:
            raise ModelTampered(f"{what}: carries no KMS-wrapped data key")
        return cls(blob, header, what)

    @property
    def ciphertext_blob(self) -> bytes:
        return self.header.wrapped_key

    @property
    def key_id(self) -> str:
        return self.header.kms_key_id

    @property
    def encryption_context(self) -> Mapping[str, str]:
        return dict(self.header.encryption_context)

    def decrypt(self, data_key: bytes, *, expected_sha256: bytes) -> bytearray:
        return model_format.decrypt_model(
            io.BytesIO(self.blob), data_key, expected_sha256=expected_sha256, what=self.what
        )
