"""The hostile-vendor corpus: what a dishonest audited party ships to the auditor.

A source tree with a valid small spec, committed to a real git repository, and the
attacks of issue 19 applied to it: a tag named like the reviewed commit's short id
pointing at a backdoored commit, ``core.fsmonitor`` / ``core.hooksPath`` / filter
drivers in the repository's config, a mirror that is an mmdebstrap option, a
``remove_paths`` entry with shell metacharacters, a symlinked application package,
a symlinked docker context, ``.incbin`` of a host file, an escaping
``outputs[].path``, ``ADD`` of a URL.

Every hostile command in the corpus creates :attr:`Host.marker` if it ever runs, and
every host file it tries to leak holds :attr:`Host.secret` (random bytes): a test
asserts the marker is absent and the secret appears in no output.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

KERNEL_SHA256 = "e849faf31ca3555757f3a8877cb01af92122f744f75d1f3102734651c4e14703"

SPEC = """\
schema = 1
name = "hostile-sample"
version = "1.0"

[kernel]
package = "linux-source-6.12"
version = "6.12.117-1~deb12u1"
sha256 = "{kernel_sha256}"
config = "{config}"
cmdline = "console=ttyS0"

[init]
source = "{init}"

[debian]
mirrors = [{mirrors}]
packages = [{{ name = "hello", version = "2.10-3" }}]
lock = "{lock}"
remove_paths = [{remove_paths}]

[app]
packages = [{packages}]
cmd = ["/usr/bin/python3", "-m", "app"]
"""


def toml_list(items: list[str]) -> str:
    return ", ".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items)


def spec_text(
    *,
    config: str = "kernel/k.config",
    init: str = "init/init.c",
    lock: str = "debian.lock",
    mirrors: tuple[str, ...] = ("deb http://deb.debian.org/debian bookworm main",),
    remove_paths: tuple[str, ...] = (),
    packages: tuple[str, ...] = ("app",),
) -> str:
    return SPEC.format(
        kernel_sha256=KERNEL_SHA256,
        config=config,
        init=init,
        lock=lock,
        mirrors=toml_list(list(mirrors)),
        remove_paths=toml_list(list(remove_paths)),
        packages=toml_list(list(packages)),
    )


INIT_C = "int main(void) { return 0; }\n"


@dataclass(frozen=True)
class Host:
    """The auditor's machine as the corpus sees it: a marker path and a secret file."""

    root: Path

    @property
    def marker(self) -> Path:
        """Created by any hostile command that runs."""
        return self.root / "MARKER-hostile-code-ran"

    @property
    def secret_file(self) -> Path:
        return self.root / "host-secret.txt"

    @property
    def secret(self) -> bytes:
        return self.secret_file.read_bytes().strip()

    def touch_command(self) -> str:
        return f"touch {shlex.quote(str(self.marker))}"

    def assert_clean(self, *outputs: Path | str | bytes) -> None:
        """Nothing ran (no marker) and no output holds the host secret."""
        assert not self.marker.exists(), "a hostile command ran on the auditor's machine"
        for out in outputs:
            for data in _contents(out):
                assert self.secret not in data, f"host secret leaked into {out!r:.200}"


def _contents(out: Path | str | bytes) -> list[bytes]:
    if isinstance(out, bytes):
        return [out]
    if isinstance(out, str) and not os.path.exists(out):
        return [out.encode()]
    path = Path(out)
    if path.is_dir():
        return [p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()]
    if path.is_file():
        return [path.read_bytes()]
    return []


def make_host(root: Path) -> Host:
    root.mkdir(parents=True, exist_ok=True)
    host = Host(root)
    host.secret_file.write_text(f"HOST-SECRET-{secrets.token_hex(16)}\n")
    return host


_DATE = "2024-01-01T00:00:00Z"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=vendor", "-c", "user.email=v@example.invalid",
         "-c", "commit.gpgsign=false", *args],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
             "GIT_AUTHOR_DATE": _DATE, "GIT_COMMITTER_DATE": _DATE},
    )  # fmt: skip
    return done.stdout.decode().strip()


def make_tree(root: Path, **spec: object) -> Path:
    """A small valid source tree at ``root``; returns the spec's path (``spec/enclave.toml``)."""
    base = root / "spec"
    (base / "kernel").mkdir(parents=True)
    (base / "init").mkdir()
    (base / "kernel" / "k.config").write_text("CONFIG_64BIT=y\n")
    (base / "init" / "init.c").write_text(INIT_C)
    (base / "debian.lock").write_text("# Debian lock\n")
    app = root / "app"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "server.py").write_text("print('serving the reviewed code')\n")
    path = base / "enclave.toml"
    path.write_text(spec_text(**spec))  # type: ignore[arg-type]
    return path


def make_repo(root: Path) -> tuple[Path, str]:
    """A git repository holding :func:`make_tree`; returns (spec path, commit id)."""
    spec = make_tree(root)
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "add", "-A")
    git(root, "commit", "--quiet", "-m", "reviewed release")
    return spec, git(root, "rev-parse", "HEAD")


def add_backdoor_commit(repo: Path, *, tag: str) -> str:
    """Commit a backdoor on branch ``evil`` and tag it ``tag``; returns its commit id.

    The repository's checked-out branch stays at the reviewed commit.
    """
    git(repo, "checkout", "--quiet", "-b", "evil")
    (repo / "app" / "server.py").write_text("print('serving'); import os; os.system('backdoor')\n")
    git(repo, "commit", "--quiet", "-am", "backdoor")
    evil = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", tag, evil)
    git(repo, "checkout", "--quiet", "main")
    return evil


SAFE = ("-c", "core.hooksPath=/dev/null", "-c", "filter.evil.clean=cat",
        "-c", "filter.evil.smudge=cat", "-c", "core.fsmonitor=false")  # fmt: skip


def plant_git_config(repo: Path, host: Host) -> str:
    """core.fsmonitor, core.hooksPath (with hooks), filter drivers and more, all hostile.

    Commits a ``.gitattributes`` naming the filter; returns the new HEAD.
    """
    hooks = repo / ".git" / "evil-hooks"
    hooks.mkdir()
    for hook in ("post-checkout", "pre-commit", "reference-transaction", "post-index-change"):
        (hooks / hook).write_text(f"#!/bin/sh\n{host.touch_command()}\n")
        (hooks / hook).chmod(0o755)
        (repo / ".git" / "hooks").mkdir(exist_ok=True)
        (repo / ".git" / "hooks" / hook).write_text(f"#!/bin/sh\n{host.touch_command()}\n")
        (repo / ".git" / "hooks" / hook).chmod(0o755)
    cmd = f"{host.touch_command()}; cat"
    for key, value in (
        ("core.fsmonitor", f"{host.touch_command()}; false"),
        ("core.hooksPath", str(hooks)),
        ("filter.evil.clean", cmd),
        ("filter.evil.smudge", cmd),
        ("filter.evil.required", "true"),
        ("diff.evil.textconv", cmd),
        ("core.pager", cmd),
        ("core.sshCommand", cmd),
        ("credential.helper", f"!{host.touch_command()}"),
        ("core.alternateRefsCommand", cmd),
        ("uploadpack.packObjectsHook", cmd),
        ("include.path", str(repo / ".git" / "more-config")),
    ):
        git(repo, "config", key, value)
    (repo / ".git" / "more-config").write_text(
        f'[core]\n\tfsmonitor = "{host.touch_command()}; false"\n'
    )
    (repo / ".gitattributes").write_text("* filter=evil diff=evil\n")
    git(repo, *SAFE, "add", ".gitattributes")
    git(repo, *SAFE, "commit", "--quiet", "-m", "attributes")
    # stat data that no longer matches: git must look at the files again (and would filter)
    for path in (repo / "app").iterdir():
        os.utime(path, (1, 1))
    return git(repo, *SAFE, "rev-parse", "HEAD")
