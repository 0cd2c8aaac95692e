"""``enclave-audit kms ...`` through the real console script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import assert_one_line_error, run_cli
from kms_testlib import ADMIN, attested_policy

from reference_enclave.kms import kms_client


def _exe() -> list[str]:
    exe = Path(sys.executable).with_name("enclave-audit")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "enclave_audit"]


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "kms.toml"
    path.write_text(
        "\n".join(
            [
                'account_id = "111122223333"',
                'region = "us-east-1"',
                "max_document_age_seconds = 300",
                "[[credentials]]",
                f'access_key_id = "{ADMIN.access_key_id}"',
                f'secret_access_key = "{ADMIN.secret_access_key}"',
                f'principal = "{ADMIN.principal}"',
            ]
        )
        + "\n"
    )
    return path


def test_serve_create_key_put_policy_and_sigterm(tmp_path: Path, sim_ca) -> None:
    root = tmp_path / "root.pem"
    root.write_bytes(sim_ca.root_pem())
    db = tmp_path / "state" / "kms.db"
    proc = subprocess.Popen(
        [
            *_exe(),
            "kms",
            "serve",
            "--db",
            str(db),
            "--config",
            str(_config(tmp_path)),
            "--root",
            str(root),
            "--max-age",
            "120",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        env = {
            "AWS_ACCESS_KEY_ID": ADMIN.access_key_id,
            "AWS_SECRET_ACCESS_KEY": ADMIN.secret_access_key,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        created = run_cli(["kms", "create-key", "--endpoint", url, "--json"], env=env)
        assert created.exit_code == 0, created.stderr
        key_id = json.loads(created.stdout)["KeyId"]
        policy = tmp_path / "policy.json"
        policy.write_text(attested_policy())
        put = run_cli(["kms", "put-policy", "--endpoint", url, key_id, str(policy)], env=env)
        assert put.exit_code == 0, put.stderr
        got = run_cli(["kms", "get-policy", "--endpoint", url, key_id], env=env)
        assert got.exit_code == 0 and json.loads(got.stdout) == json.loads(attested_policy())
        bad = tmp_path / "bad.json"
        bad.write_text('{"Version": "2012-10-17", "Statement": []}')
        refused = run_cli(["kms", "put-policy", "--endpoint", url, key_id, str(bad)], env=env)
        assert_one_line_error(refused, 51, "MalformedPolicyDocumentException")
        wrong = run_cli(
            ["kms", "create-key", "--endpoint", url], env={**env, "AWS_SECRET_ACCESS_KEY": "x" * 40}
        )
        assert_one_line_error(wrong, 51, "InvalidSignatureException")
        client = kms_client(url, ADMIN.access_key_id, ADMIN.secret_access_key)
        assert client.describe_key(KeyId=key_id)["KeyMetadata"]["KeyId"] == key_id
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert (db.stat().st_mode & 0o777) == 0o600


def test_serve_bad_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "kms.toml"
    config.write_text('account_id = "12"\n')
    result = run_cli(["kms", "serve", "--db", str(tmp_path / "kms.db"), "--config", str(config)])
    assert_one_line_error(result, 3, "account_id")
    missing = run_cli(
        ["kms", "serve", "--db", str(tmp_path / "k.db"), "--root", str(tmp_path / "nope.pem")]
    )
    assert_one_line_error(missing, 6, "nope.pem")


def test_check_policy(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(attested_policy())
    ok = run_cli(["kms", "check-policy", str(good), "--json"])
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["statements"] == 3
    bad = tmp_path / "bad.json"
    bad.write_text(attested_policy().replace('"Deny"', '"Refuse"'))
    result = run_cli(["kms", "check-policy", str(bad)])
    assert_one_line_error(result, 3, "Effect")


def test_help_has_an_example() -> None:
    result = run_cli(["kms", "serve", "--help"])
    assert result.exit_code == 0 and "enclave-audit kms serve --db" in result.stdout
