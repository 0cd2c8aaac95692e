"""The atheris entry point: ``python -m fuzz.harness TARGET [libFuzzer options] [CORPUS_DIR]``.

The project's packages are instrumented for coverage feedback (only them: the
cryptography and pydantic cores are native code).  An input that raises anything
but an :class:`~enclave_audit.errors.EnclaveAuditError` is a crash; libFuzzer's
``-timeout`` and ``-rss_limit_mb`` turn hangs and memory blow-ups into crashes too.
"""

from __future__ import annotations

import importlib
import sys

import atheris

INSTRUMENTED_MODULES = (
    "builder.eif",
    "builder.initramfs",
    "verifier.nitro",
    "enclave_runtime.cbor",
    "enclave_runtime.cms",
    "enclave_runtime.model_format",
    "verifier.attest.dsse",
    "verifier.attest.verify",
    "verifier.attest.policy",
    "reference_enclave.kms",
    "reference_enclave.kms.service",
    "reference_enclave.kms.policy",
    "reports.key_policy",
    "reports.trust",
    "reports.decision_log",
    "enclave_audit.model.manifest",
    "enclave_runtime.gpu_bridge.attestation",
    "enclave_runtime.gpu_bridge.client",
    "enclave_runtime.wire",
    "enclave_runtime.strictjson",
    "reference_enclave.kms.server",
    "reference_enclave.kms.sigv4",
    "reports.gate",
    "enclave_runtime.app",
    "reference_enclave.proxy.host",
    "fuzz.kms_http",
    "fuzz.gate_scene",
    "fuzz.endpoint",
)
PROJECT_PACKAGES = [
    "enclave_runtime",
    "enclave_audit",
    "builder",
    "verifier",
    "reports",
    "reference_enclave",
    "fuzz",
]


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.stderr.write("usage: python -m fuzz.harness TARGET [libFuzzer options] [CORPUS]\n")
        raise SystemExit(2)
    name = argv[1]
    with atheris.instrument_imports(include=PROJECT_PACKAGES):
        from fuzz.targets import TARGETS, run_one

        if name not in TARGETS:
            sys.stderr.write(f"unknown target {name!r}; known: {', '.join(TARGETS)}\n")
            raise SystemExit(2)
        target = TARGETS[name]
        for module in INSTRUMENTED_MODULES:  # the targets import lazily: import them here
            importlib.import_module(module)

    def test_one_input(data: bytes) -> None:
        run_one(target, data)

    atheris.Setup([argv[0], *argv[2:]], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
