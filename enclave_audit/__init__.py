"""enclave-audit: reproducible, auditable confidential-AI enclaves."""

__version__ = "0.1.0"
