"""Runtime pieces on their own: config, wire format, endpoints, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from enclave_audit.errors import InputNotFound, InvalidInput, ProtocolError
from enclave_runtime import wire
from enclave_runtime.channels import Endpoint
from enclave_runtime.config import HostLinks, RuntimeConfig

GOOD = {
    "schema": "enclave-audit/runtime-config/v1",
    "model": {"name": "m", "file": "m.cimf", "sha256": "ab" * 32},
    "kms": {"region": "eu-west-1"},
    "max_tokens": 8,
}


def test_config_round_trip_and_environment(tmp_path: Path) -> None:
    config = RuntimeConfig.from_json(GOOD, source="t")
    assert RuntimeConfig.from_json(config.to_json(), source="t") == config
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(GOOD))
    assert RuntimeConfig.load(str(path)) == config
    env = RuntimeConfig.from_environment(
        {
            "ENCLAVE_MODEL_SHA256": "ab" * 32,
            "ENCLAVE_MODEL_FILE": "m.cimf",
            "ENCLAVE_MAX_TOKENS": "8",
        }
    )
    assert env.model_sha256 == config.model_sha256 and env.max_tokens == 8


@pytest.mark.parametrize(
    "change",
    [
        {"schema": "other"},
        {"model": {"file": "m.cimf", "sha256": "AB" * 32}},
        {"model": {"file": "../etc/passwd", "sha256": "ab" * 32}},
        {"max_tokens": 0},
    ],
)
def test_config_refuses_bad_values(change: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        RuntimeConfig.from_json({**GOOD, **change}, source="t")


def test_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFound):
        RuntimeConfig.load(str(tmp_path / "nope.json"))


def test_endpoints() -> None:
    assert Endpoint.parse("vsock:3:8000") == Endpoint("vsock", "3", 8000)
    assert str(Endpoint.parse("unix:/run/x.sock")) == "unix:/run/x.sock"
    for bad in ("tcp:nohost", "ftp:x", "unix:", "vsock:3:port"):
        with pytest.raises(InvalidInput):
            Endpoint.parse(bad)
    links = HostLinks.in_directory("/r")
    assert links.kms == Endpoint("unix", "/r/kms.sock")


def test_requests_are_validated_inside_the_ciphertext() -> None:
    key = X25519PrivateKey.generate()
    for request in (
        wire.InferenceRequest("", 4),
        wire.InferenceRequest("x", 0),
        wire.InferenceRequest("x" * (wire.MAX_PROMPT_CHARS + 1), 4),
    ):
        sealed = wire.seal_request(key.public_key(), request)
        with pytest.raises(ProtocolError):
            wire.open_request(key, sealed.body)
    with pytest.raises(ProtocolError):
        wire.open_request(key, b'{"enc": "!!", "ciphertext": ""}')
    with pytest.raises(ProtocolError):
        wire.open_request(key, b"[]")
    sealed = wire.seal_request(X25519PrivateKey.generate().public_key(), wire.InferenceRequest("q"))
    with pytest.raises(ProtocolError, match="does not decrypt"):
        wire.open_request(key, sealed.body)


def test_runtime_imports_only_what_the_image_carries() -> None:
    """The image has no pydantic/rich/click/jinja2: the runtime and self-test must not need them."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        top = name.split('.')[0]\n"
        "        if top in ('pydantic', 'pydantic_core', 'rich', 'click', 'jinja2'):\n"
        "            raise ImportError('not in the image: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from enclave_runtime import selftest\n"
        "sys.exit(selftest.run())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
