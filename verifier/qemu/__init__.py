"""Boot an EIF under QEMU's ``nitro-enclave`` machine as an independent check of its PCRs.

* :mod:`verifier.qemu.build` builds (once, cached) a QEMU with the machine from
  Debian's own source package;
* :mod:`verifier.qemu.vhost_vsock` is the vhost-user vsock backend QEMU needs, with a
  real data path (guest ``AF_VSOCK`` streams <-> host Unix sockets);
* :mod:`verifier.qemu.session` runs one guest with its backend (``QemuEnclave``);
* :mod:`verifier.qemu.guest` reads the attestation the guest prints on its console;
* :mod:`verifier.qemu.boot` boots an image and compares the guest's PCRs with ours
  (``boot_and_attest``);
* :mod:`verifier.qemu.testimage` assembles the small probe EIF the tests boot.
"""
