"""The reference enclave's host side: KMS, proxy, client, launcher, NSM simulator, demo, GPU.

The code that runs inside the enclave is :mod:`enclave_runtime` (the only package the
image's spec, ``reference_enclave/enclave.toml``, copies to ``/app``); nothing here is
in the image, so editing it never moves the image's measurements.
"""
