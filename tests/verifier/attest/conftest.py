"""Shared fixtures for attestation tests: key pairs, the real Sigstore fixtures, sigstore-js."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import need_tool, shared_fixture

from enclave_audit.fsutil import cache_dir
from verifier.attest.keys import KeyType, generate_key_pair

#: exact npm versions of the independent verifier (same as specs/signing.md).
SIGSTORE_JS = ("@sigstore/verify@4.1.3", "@sigstore/bundle@5.0.1", "@sigstore/protobuf-specs@0.5.2")


@dataclass(frozen=True)
class KeyPair:
    key_type: KeyType
    private: Path
    public: Path


@pytest.fixture(scope="session")
def sig_dir() -> Path:
    return shared_fixture("sigstore")


@pytest.fixture(scope="session")
def a_txt(sig_dir: Path) -> Path:
    return sig_dir / "artifacts" / "a.txt"


@pytest.fixture(scope="session", params=[KeyType.ECDSA_P256, KeyType.ED25519], ids=str)
def keypair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    key_type: KeyType = request.param
    files = generate_key_pair(key_type, tmp_path_factory.mktemp("keys") / key_type.value)
    return KeyPair(key_type, files.private, files.public)


@pytest.fixture(scope="session")
def other_keypair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    files = generate_key_pair(KeyType.ECDSA_P256, tmp_path_factory.mktemp("other") / "other")
    return KeyPair(KeyType.ECDSA_P256, files.private, files.public)


SigstoreJs = Callable[[Path, Path], "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def sigstore_js() -> SigstoreJs:
    """Runs @sigstore/verify (installed once into the project cache, not the repo) on a bundle."""
    need_tool("node", "nodejs")
    npm = need_tool("npm", "npm")
    prefix = cache_dir("npm", "sigstore-verify-4.1.3")
    modules = prefix / "node_modules"
    if not (modules / "@sigstore" / "verify" / "package.json").exists():
        proc = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(prefix),
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--loglevel=error",
                *SIGSTORE_JS,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "npm_config_update_notifier": "false"},
        )
        if proc.returncode != 0:
            pytest.fail(f"npm install of {' '.join(SIGSTORE_JS)} failed: {proc.stderr[-500:]}")
    script = Path(__file__).with_name("sigstore_js_verify.js")

    def run(bundle: Path, public_key: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["node", str(script), str(bundle), str(public_key)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "NODE_PATH": str(modules)},
        )

    return run
