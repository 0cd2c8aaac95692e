"""What pydantic does with the fields of the plain attestation types (see :mod:`.lazytypes`).

Imported by pydantic, through :class:`~enclave_audit.model.lazytypes.Pydantic`, the first
time a model embedding those types is built or a JSON Schema is generated; never on the
verify path.  Each type here is the validator, serializer and JSON Schema that the
pydantic models of these types used to carry inline, unchanged.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, TypeVar, cast

from pydantic import BeforeValidator, PlainSerializer, TypeAdapter, ValidationError, WithJsonSchema

from enclave_audit.errors import InvalidInput
from enclave_audit.model.attestation_doc import iso_utc
from enclave_audit.model.hexdata import parse_hex
from enclave_audit.model.measurements import PcrSet, coerce_pcr_values, pcr_values_json


def _hex_in(value: object) -> object:
    if isinstance(value, str):
        return parse_hex(value, what="hex field")
    return value


def _b64_in(value: object) -> object:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("certificate field is not base64") from None
    return value


def _pcrs_in(value: object) -> object:
    if isinstance(value, PcrSet):
        return value
    return PcrSet(values=coerce_pcr_values(value))


def _pcrs_out(value: PcrSet) -> dict[str, str]:
    return pcr_values_json(value.values)


def _time_in(value: object) -> object:
    if isinstance(value, str) and value.endswith("Z"):
        return value[:-1] + "+00:00"
    return value


HexBytes = Annotated[
    bytes,
    BeforeValidator(_hex_in),
    PlainSerializer(lambda b: b.hex(), return_type=str),
    WithJsonSchema({"type": "string", "pattern": "^[0-9a-f]*$"}),
]
Base64Der = Annotated[
    bytes,
    BeforeValidator(_b64_in),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]
FlatPcrs = Annotated[
    PcrSet,
    BeforeValidator(_pcrs_in),
    PlainSerializer(_pcrs_out, return_type=dict[str, str]),
    WithJsonSchema({"type": "object", "additionalProperties": {"type": "string"}}),
]
UtcTime = Annotated[
    datetime,
    BeforeValidator(_time_in),
    PlainSerializer(iso_utc, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
#: PcrSet.values: index -> bytes in, ``{"0": hex}`` out
PcrValues = Annotated[
    dict[int, bytes],
    BeforeValidator(coerce_pcr_values),
    PlainSerializer(pcr_values_json, return_type=dict[str, str]),
]


T = TypeVar("T")

_adapters: dict[type[Any], TypeAdapter[Any]] = {}


def adapter(cls: type[Any]) -> TypeAdapter[Any]:
    """The pydantic adapter of a plain (dataclass) type: validation, dumps, JSON Schema."""
    found = _adapters.get(cls)
    if found is None:
        found = _adapters[cls] = TypeAdapter(cls)
    return found


def read_as(cls: type[T], data: Any, *, what: str) -> T:
    """``data`` (parsed JSON) as ``cls``, strictly; one-line :class:`InvalidInput` if not."""
    try:
        return cast(T, adapter(cls).validate_python(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise InvalidInput(f"{what}: invalid at {where}: {first['msg']}") from None
