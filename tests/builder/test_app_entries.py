"""Application entries: pinned wheels unpacked deterministically, sources normalized, cmd/env."""

from __future__ import annotations

import io
import os
from pathlib import Path

from builder.app import (
    collect_sources,
    control_entries,
    source_entries,
    tree_digest,
    wheel_entries,
)
from builder.initramfs import EntryKind, directory, iter_members, write_newc
from builder.inputs.refs import make_resolver, wheel_input
from builder.reference import REFERENCE_SPEC
from builder.spec import load_spec

EPOCH = 1_700_000_000
SITE = "/usr/local/lib/python3.11/dist-packages"


def test_pinned_wheel_unpacks_without_local_files() -> None:
    loaded = load_spec(REFERENCE_SPEC)
    (wheel,) = [w for w in loaded.spec.wheels if w.name == "pycparser"]
    path = make_resolver(loaded).path(wheel_input(wheel))
    entries = wheel_entries(wheel, path, SITE, EPOCH)
    names = {e.name for e in entries}
    base = "rootfs/usr/local/lib/python3.11/dist-packages"
    assert f"{base}/pycparser/__init__.py" in names
    assert any(n.endswith(".dist-info/RECORD") for n in names)
    assert not any(n.endswith(("direct_url.json", "INSTALLER")) or ".pyc" in n for n in names)
    assert all(e.mtime == EPOCH for e in entries)
    assert {e.perm for e in entries if e.kind is EntryKind.FILE} <= {0o644, 0o755}
    assert f"{base}/pycparser" in names  # parent directories come with the entries
    buf = io.BytesIO()
    write_newc(buf, [*entries, directory("rootfs")], epoch=EPOCH)
    again = io.BytesIO()
    write_newc(again, list(reversed([*entries, directory("rootfs")])), epoch=EPOCH)
    assert buf.getvalue() == again.getvalue()


def test_wheel_filter_keeps_only_what_is_listed() -> None:
    loaded = load_spec(REFERENCE_SPEC)
    (botocore,) = [w for w in loaded.spec.wheels if w.name == "botocore"]
    assert botocore.installs("botocore/session.py")
    assert botocore.installs("botocore/data/kms/2014-11-01/service-2.json.gz")
    assert botocore.installs("botocore/data/endpoints.json")
    assert not botocore.installs("botocore/data/ec2/2016-11-15/service-2.json.gz")


def test_sources_ignore_caches_and_checkout_mtimes(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"junk")
    (pkg / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(pkg / "run.sh", 0o700)
    files = collect_sources(tmp_path, ["pkg"])
    assert [f.rel for f in files] == ["pkg/__init__.py", "pkg/run.sh"]
    digest = tree_digest(files)
    os.utime(pkg / "__init__.py", (1, 1))
    assert tree_digest(collect_sources(tmp_path, ["pkg"])) == digest
    entries = {e.name: e for e in source_entries(files, EPOCH)}
    assert entries["rootfs/app/pkg/run.sh"].perm == 0o755
    assert entries["rootfs/app/pkg/__init__.py"].perm == 0o644
    assert entries["rootfs/app/pkg"].kind is EntryKind.DIRECTORY
    assert all(e.mtime == EPOCH for e in entries.values())


def test_cmd_and_env_files() -> None:
    loaded = load_spec(REFERENCE_SPEC)
    buf = io.BytesIO()
    write_newc(buf, control_entries(loaded.spec.app, EPOCH), epoch=EPOCH)
    got = {}
    for m in iter_members(io.BytesIO(buf.getvalue())):
        assert m.data is not None
        got[m.name] = m.data.read().decode()
    assert got["cmd"].splitlines() == list(loaded.spec.app.cmd)
    env_lines = got["env"].splitlines()
    assert env_lines == sorted(env_lines)
    assert "PYTHONDONTWRITEBYTECODE=1" in env_lines
