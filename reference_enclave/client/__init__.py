"""The client: attest the enclave, then talk to it only through HPKE.

``ask`` sends a fresh nonce, verifies the attestation document (chain to the given
root, every expected PCR including the model's PCR16, the nonce, the age, not
debug, and that the document's ``public_key`` is an HPKE key for this protocol),
encrypts the prompt to that attested key and decrypts the answer with the
response key derived from the same HPKE context. Any doubt is
:class:`~enclave_audit.errors.EnclaveRefused` (exit 52) and nothing is sent.
"""

from reference_enclave.client.ask import AskResult, Expectation, ask, load_expectation

__all__ = ["AskResult", "Expectation", "ask", "load_expectation"]
