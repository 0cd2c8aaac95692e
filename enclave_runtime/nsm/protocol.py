"""The NSM request/response CBOR encodings (aws-nitro-enclaves-nsm-api, serde_cbor).

A unit request is a CBOR text string (``"DescribeNSM"``); a request with fields is
a one-entry map ``{Name: {fields in declaration order}}``. Responses mirror that
shape; errors are ``{"Error": "<ErrorCode>"}``. Both the enclave-side client and
the host-side simulator use these functions, so the bytes on the wire are the ones
the real device takes. Responses and requests are decoded with the strict
:mod:`enclave_runtime.cbor` (one item, nothing after it); requests are encoded with cbor2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from enclave_runtime import cbor
from enclave_runtime.errors import ProtocolError

MAX_REQUEST = 0x1000
MAX_RESPONSE = 0x3000

ERROR_CODES = (
    "Success",
    "InvalidArgument",
    "InvalidIndex",
    "InvalidResponse",
    "ReadOnlyIndex",
    "InvalidOperation",
    "BufferTooSmall",
    "InputTooLarge",
    "InternalError",
)


class NsmError(ProtocolError):
    """The NSM answered a request with an error code."""

    def __init__(self, code: str, request: str) -> None:
        super().__init__(f"NSM refused {request}: {code}")
        self.code = code
        self.request = request


# --- requests -----------------------------------------------------------------


def describe_pcr(index: int) -> bytes:
    return cbor2.dumps({"DescribePCR": {"index": index}})


def extend_pcr(index: int, data: bytes) -> bytes:
    return cbor2.dumps({"ExtendPCR": {"index": index, "data": data}})


def lock_pcr(index: int) -> bytes:
    return cbor2.dumps({"LockPCR": {"index": index}})


def lock_pcrs(range_: int) -> bytes:
    return cbor2.dumps({"LockPCRs": {"range": range_}})


def describe_nsm() -> bytes:
    return cbor2.dumps("DescribeNSM")


def get_random() -> bytes:
    return cbor2.dumps("GetRandom")


def attestation(
    *, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
) -> bytes:
    return cbor2.dumps(
        {"Attestation": {"user_data": user_data, "nonce": nonce, "public_key": public_key}}
    )


@dataclass(frozen=True)
class Request:
    """A decoded request: its name and its fields (empty for unit requests)."""

    name: str
    fields: dict[str, Any]


def decode_request(data: bytes) -> Request:
    """Parse a request as the device does; raises :class:`ProtocolError` when malformed."""
    if len(data) > MAX_REQUEST:
        raise NsmError("InputTooLarge", "request")
    value = cbor.loads(data, what="NSM request", error=ProtocolError)
    if isinstance(value, str):
        return Request(value, {})
    if isinstance(value, dict) and len(value) == 1:
        ((name, fields),) = value.items()
        if isinstance(name, str) and isinstance(fields, dict):
            return Request(name, fields)
    raise ProtocolError("NSM request is neither a text string nor a one-entry map")


# --- responses ----------------------------------------------------------------


def encode_response(name: str, fields: dict[str, Any] | None) -> bytes:
    if fields is None:
        return cbor2.dumps(name)
    return cbor2.dumps({name: fields})


def encode_error(code: str) -> bytes:
    return cbor2.dumps({"Error": code})


def decode_response(data: bytes, expected: str) -> dict[str, Any]:
    """The fields of response ``expected`` (empty for unit responses); raises on errors."""
    value = cbor.loads(data, what=f"NSM response to {expected}", error=ProtocolError)
    if value == expected:
        return {}
    if isinstance(value, dict) and len(value) == 1:
        ((name, fields),) = value.items()
        if name == "Error":
            raise NsmError(str(fields), expected)
        if name == expected and isinstance(fields, dict):
            return fields
    raise ProtocolError(f"NSM gave an unexpected response to {expected}")
