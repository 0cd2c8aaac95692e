"""Boot an EIF under QEMU's ``nitro-enclave`` machine as an independent check of its PCRs.

* :mod:`verifier.qemu.build` builds (once, cached) a QEMU with the machine from
  Debian's own source package;
* :mod:`verifier.qemu.vhost_vsock` is the vhost-user vsock backend QEMU needs;
* :mod:`verifier.qemu.guest` reads the attestation the guest prints on its serial console;
* :mod:`verifier.qemu.boot` boots an image and compares the guest's PCRs with ours.
"""
