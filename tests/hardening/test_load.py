"""The reference KMS under concurrent clients: zero errors, RSS flat (short CI variant).

The 60-second run (``bench/load_kms.py --seconds 60``) is recorded in RELIABILITY.md.
"""

from __future__ import annotations

import importlib.util
import os

from conftest import ROOT

SECONDS = float(os.environ.get("ENCLAVE_AUDIT_LOAD_SECONDS", "8"))


def test_kms_under_concurrent_clients() -> None:
    spec = importlib.util.spec_from_file_location("load_kms", ROOT / "bench" / "load_kms.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run(SECONDS, 4)
    assert result["errors"] == 0, result["error_examples"]
    assert result["requests"] > 50
    assert result["p99_ms"] is not None
    # flat: over the second half of the run the server grows by less than 25 MB
    assert result["rss_mb_growth_second_half"] < 25, result["rss_samples"]
