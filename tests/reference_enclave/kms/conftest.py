"""Fixtures for the reference KMS tests: a running KMS and simulated attestation."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

# --import-mode=importlib: make the helper module next to this file importable by the tests here
sys.path.append(str(Path(__file__).resolve().parent))

from kms_testlib import CALLERS, KmsHarness, StartKms, attest, spki

from reference_enclave.kms import RunningKms, start_kms
from reference_enclave.nsm.sim_ca import SimulationCa
from verifier.nitro import TrustRoot


@pytest.fixture(scope="session")
def sim_ca() -> SimulationCa:
    return SimulationCa.create()


@pytest.fixture(scope="session")
def other_ca() -> SimulationCa:
    return SimulationCa.create()


@pytest.fixture(scope="session")
def sim_root(sim_ca: SimulationCa) -> TrustRoot:
    return TrustRoot.from_pem(sim_ca.root_pem(), name="simulation root")


@pytest.fixture(scope="session")
def enclave_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture()
def document(sim_ca: SimulationCa, enclave_key: rsa.RSAPrivateKey) -> bytes:
    return attest(sim_ca, spki(enclave_key))


@pytest.fixture()
def start(tmp_path: Path, sim_root: TrustRoot) -> Iterator[StartKms]:
    """Start (and later stop) KMS servers on a database under tmp_path."""
    running: list[RunningKms] = []

    def _start(**kwargs: Any) -> KmsHarness:
        kwargs.setdefault("roots", [sim_root])
        kwargs.setdefault("credentials", CALLERS)
        kwargs.setdefault("max_age", 300.0)
        db = kwargs.pop("db", tmp_path / "kms.db")
        server = start_kms(db, **kwargs)
        running.append(server)
        return KmsHarness(server, db)

    yield _start
    for server in running:
        server.stop()


@pytest.fixture()
def kms(start: StartKms) -> KmsHarness:
    return start()
