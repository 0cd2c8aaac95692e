"""The simulated Nitro Secure Module (host side of the launcher).

The enclave's client and the CBOR protocol are :mod:`enclave_runtime.nsm`; the
simulator (:mod:`.simulator`, :mod:`.sim_ca`, :mod:`.document`) answers the same
requests, signs attestation documents in AWS's layout and runs on the host.
"""
