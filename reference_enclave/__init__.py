"""The reference enclave: the audited subject (runtime, KMS, proxy, client, GPU bridge)."""
