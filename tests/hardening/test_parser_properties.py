"""Hypothesis properties for every parser of untrusted bytes.

For random bytes and for mutated valid inputs, each parser either accepts or raises
one of the project's own errors (EnclaveAuditError), and does so quickly.  Plus the
documented size limits: inputs over a limit are refused before any expensive work.
"""

from __future__ import annotations

import functools
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave_audit.errors import EnclaveAuditError
from fuzz.seeds import SEEDS
from fuzz.targets import TARGETS

#: one input of a few KiB must never take more than this (the fuzzers allow 10 s)
PER_INPUT_SECONDS = 2.0


@functools.cache
def seeds(name: str) -> tuple[bytes, ...]:
    return tuple(SEEDS[name]())


def _mutated(name: str) -> st.SearchStrategy[bytes]:
    """A valid seed with a few bytes overwritten, inserted or cut."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds(name))))
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["set", "insert", "cut"]))
            pos = draw(st.integers(0, max(0, len(data) - 1)))
            if op == "set" and data:
                data[pos] = draw(st.integers(0, 255))
            elif op == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
            else:
                del data[pos : pos + draw(st.integers(1, 64))]
        return bytes(data)

    return build()


def _check(name: str, data: bytes) -> None:
    started = time.perf_counter()
    try:
        TARGETS[name].run(data)
    except EnclaveAuditError as exc:
        assert exc.message and "\n" not in exc.diagnostic(), exc.message
    elapsed = time.perf_counter() - started
    assert elapsed < PER_INPUT_SECONDS, f"{name}: {len(data)}-byte input took {elapsed:.2f}s"


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_only_project_errors_escape(name: str, data: st.DataObject) -> None:
    payload = data.draw(st.one_of(st.binary(max_size=2048), _mutated(name)), label="input")
    _check(name, payload)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_valid_seeds_are_accepted_or_refused_cleanly(name: str) -> None:
    for seed in seeds(name):
        _check(name, seed)


# --- size limits: big inputs are refused cheaply ------------------------------------------------


def _timed(call, limit: float = 1.0) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    try:
        call()
    except EnclaveAuditError:
        pass
    elapsed = time.perf_counter() - started
    assert elapsed < limit, f"took {elapsed:.2f}s"
    return elapsed


def _cbor_map(entries: int) -> bytes:
    from enclave_runtime.cbor import encode_head

    body = b"".join(encode_head(0, i) + encode_head(0, i) for i in range(entries))
    return encode_head(5, entries) + body


def test_20kb_cbor_map_is_cheap() -> None:
    from enclave_runtime.cbor import loads

    data = _cbor_map(3500)
    assert 15_000 < len(data) < 25_000
    _timed(lambda: loads(data, what="big map"))


def test_20kb_cbor_map_as_attestation_is_cheap() -> None:
    data = _cbor_map(3500)
    _timed(lambda: TARGETS["attestation"].run(data))
    _timed(lambda: TARGETS["gpu_report"].run(data))
    _timed(lambda: TARGETS["eif_signature"].run(data))


def test_deep_nesting_is_refused_not_recursed() -> None:
    deep_cbor = b"\x81" * 100_000 + b"\x00"
    deep_json = b"[" * 100_000 + b"]" * 100_000
    for name in ("cbor", "attestation", "gpu_report", "eif_signature"):
        _timed(lambda n=name: TARGETS[n].run(deep_cbor))
    for name in (
        "dsse_envelope",
        "bundle",
        "kms_policy",
        "key_policy",
        "manifest",
        "decision_log",
        "enclave_request",
    ):
        _timed(lambda n=name: TARGETS[n].run(deep_json))


@pytest.mark.parametrize(
    "name,size",
    [
        ("attestation", 1 << 20),
        ("cms", 1 << 20),
        ("kms_policy", 1 << 20),
        ("gpu_report", 4 << 20),
        ("eif_signature", 1 << 20),
        ("enclave_request", 4 << 20),
        ("model_file", 1 << 20),
    ],
)
def test_oversized_input_is_refused_quickly(name: str, size: int) -> None:
    _timed(lambda: TARGETS[name].run(b"\xa1" + b"\x00" * size))


def test_huge_declared_lengths_do_not_allocate() -> None:
    """Length fields claiming gigabytes must be checked against the bytes present."""
    from enclave_runtime.cbor import loads

    for head in (
        b"\x5b" + (2**62).to_bytes(8, "big"),
        b"\x9b" + (2**62).to_bytes(8, "big"),
        b"\xbb" + (2**62).to_bytes(8, "big"),
    ):
        _timed(lambda h=head: loads(h + b"\x00" * 16, what="huge"))
    header = bytearray(seeds("model_file")[0])
    _timed(lambda: TARGETS["model_file"].run(bytes(header[:64]) + b"\xff" * 64))


def test_kms_request_json_bomb_is_refused() -> None:
    body = bytes([0]) + json.dumps({"KeyId": "$key", "Plaintext": "A" * (1 << 20)}).encode()
    _timed(lambda: TARGETS["kms_request"].run(body), limit=2.0)
