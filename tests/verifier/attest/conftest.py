"""Shared fixtures for attestation tests: key pairs, the real Sigstore fixtures, sigstore-js."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from enclave_audit.fsutil import cache_dir
from tests.conftest import need_tool, shared_fixture
from verifier.attest.keys import KeyType, generate_key_pair

BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
WHEEL_IDENTITY = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
WHEEL_DIGEST = "sha256:c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201"
A_TXT_SHA256 = "a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf"

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


@pytest.fixture(scope="session")
def sigstore_js() -> Path:
    """node_modules with @sigstore/verify, installed once into the project cache (not the repo)."""
    need_tool("node", "nodejs")
    npm = need_tool("npm", "npm")
    prefix = cache_dir("npm", "sigstore-verify-4.1.3")
    modules = prefix / "node_modules"
    if not (modules / "@sigstore" / "verify" / "package.json").exists():
        proc = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-save",
             "--loglevel=error", *SIGSTORE_JS],
            capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "npm_config_update_notifier": "false"},
        )
        if proc.returncode != 0:
            pytest.fail(f"npm install of {' '.join(SIGSTORE_JS)} failed: {proc.stderr[-500:]}")
    return modules


def run_sigstore_js(modules: Path, bundle: Path, public_key: Path) -> subprocess.CompletedProcess[str]:
    script = Path(__file__).with_name("sigstore_js_verify.js")
    return subprocess.run(
        ["node", str(script), str(bundle), str(public_key)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "NODE_PATH": str(modules)},
    )
