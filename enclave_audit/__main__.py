"""``python -m enclave_audit``."""

from enclave_audit.cli import main

if __name__ == "__main__":
    main()
