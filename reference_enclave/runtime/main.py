"""``python3 -m reference_enclave.runtime.main [--self-test]``: the image's command."""

import sys

from reference_enclave.runtime.app import main

if __name__ == "__main__":
    sys.exit(main())
