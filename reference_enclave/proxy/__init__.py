"""The untrusted host proxy: relays bytes for the enclave and never holds a key.

* clients (TCP) -> the enclave's listener (vsock port 5000 / ``client.sock``);
* the enclave's KMS channel (vsock port 8000 / ``kms.sock``) -> the KMS URL (TCP);
* the enclave's parent channel (vsock port 8001 / ``parent.sock``): the encrypted
  model files of the model store and the KMS credentials the parent lends the
  enclave (as kmstool's ``SetClient``).

Everything it relays can be captured (``--capture DIR``) to show what a
compromised host sees: attestation documents, HPKE ciphertexts, KMS requests
whose answers are encrypted to the enclave's key, encrypted model chunks.
"""

from reference_enclave.proxy.host import HostProxy, ProxySettings, start_proxy

__all__ = ["HostProxy", "ProxySettings", "start_proxy"]
