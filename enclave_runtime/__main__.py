"""``python3 -m reference_enclave.runtime [--self-test]`` (the image's command)."""

import sys

from reference_enclave.runtime.app import main

sys.exit(main())
