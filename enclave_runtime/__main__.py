"""``python3 -m enclave_runtime [--self-test]`` (the image's command)."""

import sys

from enclave_runtime.app import main

sys.exit(main())
