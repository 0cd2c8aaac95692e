"""PCRs and the measurement sets that nitro-cli prints.

A PCR value is 48 bytes (SHA-384) for everything Nitro does; 32 and 64 are
accepted because the attestation document format allows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

from enclave_audit.errors import InvalidInput
from enclave_audit.fsutil import read_json
from enclave_audit.model.hexdata import parse_hex
from enclave_audit.model.lazytypes import Pydantic

PCR_SIZES = (32, 48, 64)
#: what nitro-cli prints as HashAlgorithm (sha2 0.9 debug text); not to be keyed on.
NITRO_HASH_ALGORITHM = "Sha384 { ... }"
#: PCRs that the image itself determines.
IMAGE_PCRS = (0, 1, 2)


def coerce_pcr_values(v: object) -> dict[int, bytes]:
    """A mapping of index (int or decimal text) to value (bytes or hex), checked."""
    if not isinstance(v, Mapping):
        raise InvalidInput("PCRs: expected a mapping of index to value")
    out: dict[int, bytes] = {}
    for key, value in v.items():
        index = _parse_index(key)
        raw = parse_hex(value, what=f"PCR{index}") if isinstance(value, str) else value
        if not isinstance(raw, bytes) or len(raw) not in PCR_SIZES:
            raise InvalidInput(f"PCR{index}: value must be 32, 48 or 64 bytes")
        out[index] = raw
    return out


def pcr_values_json(v: dict[int, bytes]) -> dict[str, str]:
    """``{"0": hex, ...}`` in index order."""
    return {str(k): v[k].hex() for k in sorted(v)}


@dataclass(frozen=True, init=False)
class PcrSet:
    """A mapping PCR index -> value, as measured or as expected."""

    # pydantic: its own settings, not those of the model that embeds it
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "ignore"}

    # for pydantic: coerce_pcr_values before, pcr_values_json on output
    values: Annotated[dict[int, bytes], Pydantic("PcrValues")]

    def __init__(self, *, values: Mapping[Any, object]) -> None:
        """Indices as int or decimal text, values as bytes or hex (see coerce_pcr_values)."""
        object.__setattr__(self, "values", coerce_pcr_values(values))

    def json_dict(self) -> dict[str, Any]:
        """The JSON form (what pydantic writes for it inside a model)."""
        return {"values": pcr_values_json(self.values)}

    def __getitem__(self, index: int) -> bytes:
        return self.values[index]

    def get(self, index: int) -> bytes | None:
        return self.values.get(index)

    def indices(self) -> list[int]:
        return sorted(self.values)

    def hex(self, index: int) -> str:
        return self.values[index].hex()

    def to_nitro(self) -> dict[str, Any]:
        """``{"HashAlgorithm": ..., "PCR0": ...}`` as nitro-cli prints ``Measurements``."""
        out: dict[str, Any] = {"HashAlgorithm": NITRO_HASH_ALGORITHM}
        for index in sorted(self.values):
            out[f"PCR{index}"] = self.values[index].hex()
        return out

    def is_debug(self) -> bool:
        """Debug-mode enclaves report PCR0, PCR1 and PCR2 as zeros."""
        return all(index in self.values and not any(self.values[index]) for index in IMAGE_PCRS)

    def differences(self, other: PcrSet) -> list[int]:
        """Indices present in both sets whose values differ, plus indices in only one."""
        keys = set(self.values) | set(other.values)
        return sorted(k for k in keys if self.values.get(k) != other.values.get(k))

    @classmethod
    def from_nitro_json(cls, data: object, *, source: str = "measurements") -> PcrSet:
        """Read nitro-cli's ``{"Measurements": {...}}``, ``describe-eif --json``, or the bare map.

        Also accepts this project's ``{"pcrs": {"0": hex}}`` form (attestation verify --json).
        """
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{source}: expected a JSON object")
        if "Measurements" in data:
            data = data["Measurements"]
        elif "pcrs" in data and isinstance(data["pcrs"], Mapping):
            if not data["pcrs"]:
                raise InvalidInput(
                    f"{source}: 'pcrs' is empty; an expectation must name at least one PCR"
                )
            return cls(values=dict(data["pcrs"]))
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{source}: 'Measurements' is not an object")
        values: dict[int, object] = {}
        for key, value in data.items():
            if key == "HashAlgorithm":
                continue
            if not isinstance(key, str) or not key.upper().startswith("PCR"):
                raise InvalidInput(f"{source}: unexpected key {key!r}")
            if not isinstance(value, str):
                raise InvalidInput(f"{source}: {key} is not a hex string")
            values[_parse_index(key[3:])] = value
        if not values:
            raise InvalidInput(f"{source}: no PCR values found")
        return cls(values=coerce_pcr_values(values))

    @classmethod
    def load(cls, path: Path) -> PcrSet:
        return cls.from_nitro_json(read_json(path), source=str(path))


def _parse_index(key: object) -> int:
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise InvalidInput(f"PCR index {key!r} is not an integer")
    try:
        index = int(key)
    except ValueError:
        raise InvalidInput(f"PCR index {key!r} is not an integer") from None
    if not 0 <= index <= 31:
        raise InvalidInput(f"PCR index {index} out of range 0..31")
    return index


def measurements_json(pcrs: PcrSet) -> str:
    """The exact text ``nitro-cli build-enclave`` prints (2-space indent, newline)."""
    import json

    return json.dumps({"Measurements": pcrs.to_nitro()}, indent=2) + "\n"
