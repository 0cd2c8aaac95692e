"""The host side of running the image: the simulation launcher and its sandbox stage.

The enclave application itself is :mod:`enclave_runtime` (the image's ``/app``);
:mod:`.launch` starts it (from the image or from the checkout) behind the simulated
NSM, the host proxy and the reference KMS, and :mod:`.sandbox` prepares the
namespaces and the chroot as the image's ``/init`` would.
"""
