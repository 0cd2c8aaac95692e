"""The signer scheme table and the keyless signer's behaviour without credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave_audit.errors import EnvironmentProblem, InvalidInput, KeyFileError
from verifier.attest.signing import (
    SIGNER_FOR_SCHEME,
    KeySigner,
    SigstoreSigner,
    signer_for_uri,
)

AMBIENT = (
    "GITHUB_ACTIONS",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "SIGSTORE_ID_TOKEN",
    "GOOGLE_SERVICE_ACCOUNT_NAME",
    "BUILDKITE",
    "GITLAB_CI",
    "CIRCLECI",
)


def test_scheme_table() -> None:
    assert sorted(SIGNER_FOR_SCHEME) == ["file", "sigstore"]
    assert isinstance(signer_for_uri("sigstore:"), SigstoreSigner)
    assert signer_for_uri("sigstore:staging").describe() == "sigstore keyless (staging)"


def test_file_scheme(keypair) -> None:  # type: ignore[no-untyped-def]
    signer = signer_for_uri(f"file:{keypair.private}")
    assert isinstance(signer, KeySigner)
    assert signer.describe().startswith("key SHA256:")
    assert isinstance(signer_for_uri(f"file://{keypair.private}"), KeySigner)


@pytest.mark.parametrize(
    ("uri", "error", "needle"),
    [
        ("kms:alias/x", InvalidInput, "expected one of file:..., sigstore:..."),
        ("just-a-path", KeyFileError, "no such key file"),  # a plain PATH is file:PATH
        ("file:", InvalidInput, "needs a path"),
        ("file:/nonexistent/key", KeyFileError, "no such key file"),
        ("sigstore:elsewhere", InvalidInput, "staging"),
    ],
)
def test_bad_uris(uri: str, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        signer_for_uri(uri)


def test_keyless_without_ambient_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in AMBIENT:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(EnvironmentProblem, match="no ambient OIDC credential"):
        signer_for_uri("sigstore:").sign_dsse(b"{}", "application/vnd.in-toto+json")


def test_keyless_in_actions_without_id_token_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in AMBIENT:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    with pytest.raises(EnvironmentProblem, match="ACTIONS_ID_TOKEN_REQUEST"):
        signer_for_uri("sigstore:").sign_dsse(b"{}", "application/vnd.in-toto+json")


def test_key_file_is_not_a_key(tmp_path: Path) -> None:
    path = tmp_path / "x.key"
    path.write_text("garbage")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        signer_for_uri(f"file:{path}")
