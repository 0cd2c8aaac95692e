"""``gate --apply`` takes its AWS settings as boto3 users expect and fails cleanly.

Region and profile come from the environment (``AWS_REGION``, ``AWS_DEFAULT_REGION``,
``AWS_PROFILE``) or ``--region``/``--profile``; an unreachable KMS exits 53 before any
decision is made (no policy file, no decision-log entry); a missing region is exit 5
with a hint; an unknown profile is exit 3.
"""

from __future__ import annotations

import socket
from pathlib import Path

from conftest import assert_one_line_error, run_cli


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _base(world, out: Path) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        "gate", "--policy", str(world.policy), "--measurements", str(world.measurements),
        "--trust", str(world.trust), "--eif", str(world.eif), "-o", str(out),
        "--vsa", str(world.vsa("alice")), "--vsa", str(world.vsa("bob")),
        "--at", "2026-11-23T12:00:00Z", "--apply", "--key-id", "alias/models",
    ]  # fmt: skip


ENV = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE000000001", "AWS_SECRET_ACCESS_KEY": "x" * 40}


def test_unreachable_kms_exits_53_and_decides_nothing(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "new.json"
    url = f"http://127.0.0.1:{_closed_port()}"
    result = run_cli(
        [*_base(world, out), "--kms-endpoint", url],
        env={**ENV, "AWS_REGION": "eu-west-1", "AWS_MAX_ATTEMPTS": "1"},
    )
    assert_one_line_error(result, 53, "unreachable", url)
    assert "hint:" in result.stderr
    assert not out.exists()
    assert not (world.trust.parent / "decisions.jsonl").exists()
    # the endpoint from the environment, as the AWS SDKs read it
    result = run_cli(
        _base(world, out),
        env={**ENV, "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL_KMS": url,
             "AWS_MAX_ATTEMPTS": "1"},
    )  # fmt: skip
    assert_one_line_error(result, 53, url)


def test_region_and_profile(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "new.json"
    config = tmp_path / "aws-config"
    config.write_text("[profile release]\nregion = ap-south-1\n")
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        "[release]\naws_access_key_id = AKIAEXAMPLE000000002\n"
        "aws_secret_access_key = " + "y" * 40 + "\n"
    )
    isolated = {
        **ENV,
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    no_region = run_cli([*_base(world, out), "--kms-endpoint", "http://127.0.0.1:9"], env=isolated)
    assert_one_line_error(no_region, 5, "region")
    assert "hint:" in no_region.stderr and "AWS_REGION" in no_region.stderr
    unknown = run_cli([*_base(world, out), "--profile", "nope"], env=isolated)
    assert_one_line_error(unknown, 3, "profile")
    # the profile's region is used: the request goes out (and finds nothing listening)
    url = f"http://127.0.0.1:{_closed_port()}"
    by_profile = run_cli(
        [*_base(world, out), "--profile", "release", "--kms-endpoint", url], env=isolated
    )
    assert_one_line_error(by_profile, 53, url)
    assert not out.exists()
