"""The code that runs inside the reference enclave, and nothing else.

This package is what the image's ``/app`` holds (``reference_enclave/enclave.toml``
lists only it), so every byte of it is covered by PCR2 and is part of the trusted
computing base: the runtime (:mod:`.app`, entry point ``python3 -m enclave_runtime``),
the model loader and LLM (:mod:`.model`), the NSM client (:mod:`.nsm`), HPKE, the KMS
envelope reader (:mod:`.cms`), the encrypted model file format, the GPU bridge's
enclave side and the strict parsers they use (:mod:`.cbor`).

It imports nothing from the host-side packages (``enclave_audit``, ``builder``,
``verifier``, ``reports``, ``reference_enclave``); they import the primitives they
share with the image from here, so the auditor checks with the very code the enclave
runs.  A test keeps the image's ``/app`` equal to the import closure of the entry point.
"""
