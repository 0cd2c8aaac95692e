"""Typed digests: an algorithm name plus raw bytes, hex on output."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_serializer, field_validator

from enclave_audit.errors import InvalidInput
from enclave_audit.model.hexdata import parse_hex

__all__ = ["Digest", "HashAlgorithm", "parse_hex"]


class HashAlgorithm(StrEnum):
    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"

    @property
    def size(self) -> int:
        return {"sha256": 32, "sha384": 48, "sha512": 64}[self.value]


class Digest(BaseModel):
    """A digest of some content.  ``value`` is raw bytes; JSON shows lowercase hex."""

    model_config = ConfigDict(frozen=True)

    algorithm: HashAlgorithm
    value: bytes

    @field_validator("value", mode="before")
    @classmethod
    def _from_hex(cls, v: object) -> object:
        if isinstance(v, str):
            return parse_hex(v, what="digest")
        return v

    def model_post_init(self, __context: object) -> None:
        if len(self.value) != self.algorithm.size:
            raise InvalidInput(
                f"{self.algorithm} digest must be {self.algorithm.size} bytes,"
                f" got {len(self.value)}"
            )

    @field_serializer("value")
    def _to_hex(self, v: bytes) -> str:
        return v.hex()

    @property
    def hex(self) -> str:
        return self.value.hex()

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value.hex()}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``ALG:HEX`` (e.g. ``sha256:ab12...``)."""
        alg, sep, hexpart = text.partition(":")
        if not sep:
            raise InvalidInput(f"digest {text[:40]!r}: expected ALG:HEX, e.g. sha256:...")
        try:
            algorithm = HashAlgorithm(alg.lower())
        except ValueError:
            raise InvalidInput(f"digest {text[:40]!r}: unknown algorithm {alg!r}") from None
        return cls(
            algorithm=algorithm, value=parse_hex(hexpart, what="digest", size=algorithm.size)
        )
