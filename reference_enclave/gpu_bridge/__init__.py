"""The GPU bridge's host side: the attested accelerator service and its simulated vendor.

The enclave's side (report verification, channel, link, the matmul backend) is
:mod:`enclave_runtime.gpu_bridge`.
"""
