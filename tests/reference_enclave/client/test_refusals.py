"""The client refuses unexpected measurements, untrusted roots and stale nonces."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest

from enclave_audit.errors import EnclaveRefused, InvalidInput, ProtocolError
from enclave_audit.model.measurements import PcrSet
from enclave_runtime import wire
from enclave_runtime.nsm.client import NsmClient
from reference_enclave.client import Expectation, ask
from reference_enclave.client.ask import verify_enclave_document
from reference_enclave.nsm.sim_ca import SimulationCa
from reference_enclave.nsm.simulator import SimulatedNsm
from tests.reference_enclave.runtime.stack import Stack
from verifier.nitro import TrustRoot, aws_nitro_root


def _root(stack: Stack) -> TrustRoot:
    return TrustRoot.from_pem(stack.ca.root_pem(), name="sim")


def _with(pcrs: PcrSet, index: int, value: bytes) -> PcrSet:
    values = dict(pcrs.values)
    values[index] = value
    return PcrSet(values=values)


@pytest.mark.parametrize("index", [0, 1, 2, 16])
def test_refuses_a_changed_measurement(stack: Stack, index: int) -> None:
    bad = _with(stack.expected, index, bytes(47) + b"\x01")
    with pytest.raises(EnclaveRefused, match=f"PCR{index}|pcrs"):
        ask(stack.enclave.url, "hi", expectation=Expectation(bad, "t"), roots=[_root(stack)])


def test_refuses_documents_not_under_the_given_root(stack: Stack) -> None:
    with pytest.raises(EnclaveRefused, match="chain"):
        ask(
            stack.enclave.url,
            "hi",
            expectation=Expectation(stack.expected, "t"),
            roots=[aws_nitro_root()],
        )
    other = TrustRoot.from_pem(SimulationCa.create().root_pem(), name="another sim")
    with pytest.raises(EnclaveRefused):
        ask(stack.enclave.url, "hi", expectation=Expectation(stack.expected, "t"), roots=[other])


def test_an_expectation_must_name_the_model() -> None:
    pcrs = PcrSet(values={0: bytes(48), 1: bytes(48), 2: bytes(48)})
    with pytest.raises(InvalidInput, match="PCR16"):
        Expectation(pcrs, "no-model.json")


def _document(
    nsm: SimulatedNsm, nonce: bytes, *, user_data: bytes = wire.HPKE_KEY_PURPOSE
) -> bytes:
    class Direct:
        def exchange(self, request: bytes) -> bytes:
            return nsm.handle(request)

        def close(self) -> None:
            return None

    return NsmClient(Direct()).attestation(
        public_key=secrets.token_bytes(32), user_data=user_data, nonce=nonce
    )


def _sim(stack: Stack, model_sha: bytes) -> SimulatedNsm:
    nsm = SimulatedNsm(stack.image_pcrs.values, stack.ca)
    nsm.handle(bytes.fromhex("a169457874656e64504352a265696e6465781064646174615820") + model_sha)
    nsm.handle(bytes.fromhex("a1674c6f636b504352a165696e64657810"))
    return nsm


def test_nonce_binding(stack: Stack) -> None:
    nsm = _sim(stack, stack.model.sha256)
    nonce = secrets.token_bytes(32)
    document = _document(nsm, nonce)
    now = dt.datetime.now(dt.UTC)
    expectation = Expectation(stack.expected, "t")
    key, _ = verify_enclave_document(
        document, expectation=expectation, roots=[_root(stack)], nonce=nonce, now=now
    )
    assert len(key.public_bytes_raw()) == 32
    with pytest.raises(EnclaveRefused, match="nonce"):
        verify_enclave_document(
            document,
            expectation=expectation,
            roots=[_root(stack)],
            nonce=secrets.token_bytes(32),
            now=now,
        )


def test_stale_document_is_refused(stack: Stack) -> None:
    nsm = _sim(stack, stack.model.sha256)
    nonce = secrets.token_bytes(32)
    document = _document(nsm, nonce)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)
    with pytest.raises(EnclaveRefused):
        verify_enclave_document(
            document,
            expectation=Expectation(stack.expected, "t"),
            roots=[_root(stack)],
            nonce=nonce,
            now=later,
        )


def test_key_of_another_purpose_is_refused(stack: Stack) -> None:
    nsm = _sim(stack, stack.model.sha256)
    nonce = secrets.token_bytes(32)
    document = _document(nsm, nonce, user_data=b"something else")
    with pytest.raises(EnclaveRefused, match="HPKE"):
        verify_enclave_document(
            document,
            expectation=Expectation(stack.expected, "t"),
            roots=[_root(stack)],
            nonce=nonce,
            now=dt.datetime.now(dt.UTC),
        )


def test_a_tampered_answer_does_not_decrypt() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.generate()
    sealed = wire.seal_request(key.public_key(), wire.InferenceRequest("q", 4))
    opened = wire.open_request(key, sealed.body)
    answer = wire.InferenceAnswer("Paris", 1, 3, "end", 0.1, 0.1)
    body = bytearray(wire.seal_answer(opened, answer))
    assert wire.open_answer(sealed, bytes(body)).text == "Paris"
    # an answer sealed for another request does not open
    other = wire.seal_request(key.public_key(), wire.InferenceRequest("q", 4))
    with pytest.raises(ProtocolError):
        wire.open_answer(other, bytes(body))
