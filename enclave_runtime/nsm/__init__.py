"""The enclave's side of the Nitro Secure Module: the ioctl/socket client and the CBOR protocol."""
