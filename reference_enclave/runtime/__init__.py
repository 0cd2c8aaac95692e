"""The enclave application (runs inside the image) and its host-side launcher.

Modules that run in the image import only the standard library, cryptography,
cbor2, numpy, boto3 and ``enclave_audit.errors``: :mod:`.app`, :mod:`.wire`,
:mod:`.channels`, :mod:`.config`, :mod:`.model_loader`, :mod:`.selftest`.
:mod:`.launch` is the host side (simulation launcher).
"""
