"""The enclave endpoint under concurrent attested clients: zero errors, RSS flat (CI variant).

The runtime is the host process with the tiny test model (inference is cheap; the
load is on the proxy relay, attestation, HPKE and HTTP).  The 60-second run
(``bench/load_enclave.py --seconds 60``) is recorded in RELIABILITY.md.
"""

from __future__ import annotations

import importlib.util
import os

from conftest import ROOT

SECONDS = float(os.environ.get("ENCLAVE_AUDIT_ENCLAVE_LOAD_SECONDS", "10"))


def test_enclave_endpoint_under_concurrent_clients() -> None:
    spec = importlib.util.spec_from_file_location(
        "load_enclave", ROOT / "bench" / "load_enclave.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run(SECONDS, 4)
    assert result["errors"] == 0, result["error_examples"]
    assert result["server_alive"]
    assert result["requests"] > 20, result
    assert result["p50_ms"] is not None and result["p99_ms"] >= result["p50_ms"]
    # flat: over the second half of the run the runtime grows by less than 25 MB
    assert result["rss_mb_growth_second_half"] < 25, result["rss_samples"]
