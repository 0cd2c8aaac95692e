"""Builder: deterministic enclave images (EIF, ramdisks, kernel, rootfs) and their manifests."""
