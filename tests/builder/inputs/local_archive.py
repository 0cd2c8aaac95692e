"""Test helpers: a local HTTP server and Debian archives laid out like the real ones.

``DebianArchive`` writes ``dists/<suite>/InRelease|Release`` and
``<component>/binary-amd64/Packages(.xz)`` with ``dpkg-scanpackages`` over real .debs in
``pool/``; ``repack`` makes a real .deb under another version with ``dpkg-deb``;
``gpg_key`` makes a throwaway signing key so indices can be signed as Debian signs them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import lzma
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Server:
    root: Path
    url: str
    requests: list[str] = field(default_factory=list)


@contextlib.contextmanager
def serve(root: Path) -> Iterator[Server]:
    """Serve ``root`` over HTTP on 127.0.0.1 (a random port); records every path asked for."""
    record: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            record.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(root, f"http://127.0.0.1:{httpd.server_address[1]}", record)
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass(frozen=True)
class GpgKey:
    home: Path
    keyring: Path  # exported public keyring (what gpgv --keyring takes)


def gpg_key(home: Path) -> GpgKey:
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
         "enclave-audit test archive <test@invalid>", "ed25519", "sign", "1d"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    keyring = home / "archive.gpg"
    with open(keyring, "wb") as out:
        subprocess.run(["gpg", "--batch", "--export"], env=env, check=True, stdout=out)
    return GpgKey(home, keyring)


def repack(deb: Path, version: str, dest_dir: Path) -> Path:
    """The same package as ``deb`` under ``version`` (a real .deb, rebuilt by dpkg-deb)."""
    work = dest_dir / f".repack-{deb.name}"
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-R", str(deb), str(work)], check=True)
    control = work / "DEBIAN" / "control"
    lines = [
        f"Version: {version}" if ln.startswith("Version:") else ln
        for ln in control.read_text().splitlines()
    ]
    control.write_text("\n".join(lines) + "\n")
    name = control.read_text().split("Package: ", 1)[1].split("\n", 1)[0]
    arch = control.read_text().split("Architecture: ", 1)[1].split("\n", 1)[0]
    out = dest_dir / f"{name}_{version.split(':')[-1]}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(work), str(out)], check=True,
                   capture_output=True)  # fmt: skip
    shutil.rmtree(work)
    return out


class DebianArchive:
    """An archive root (what ``http://deb.debian.org/debian`` is) with one or more suites."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add_suite(
        self, suite: str, debs: list[Path], *, key: GpgKey | None = None, component: str = "main"
    ) -> None:
        pool = self.root / "pool" / suite
        pool.mkdir(parents=True, exist_ok=True)
        for deb in debs:
            target = pool / deb.name
            if not target.exists():
                try:
                    os.link(deb, target)
                except OSError:
                    shutil.copyfile(deb, target)
        packages = subprocess.run(
            ["dpkg-scanpackages", "--multiversion", f"pool/{suite}", "/dev/null"],
            cwd=self.root, check=True, capture_output=True,
        ).stdout  # fmt: skip
        rel = f"{component}/binary-amd64/Packages"
        dists = self.root / "dists" / suite
        (dists / f"{component}/binary-amd64").mkdir(parents=True, exist_ok=True)
        (dists / rel).write_bytes(packages)
        xz = lzma.compress(packages)
        (dists / f"{rel}.xz").write_bytes(xz)
        entries = "".join(
            f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}\n"
            for name, data in ((f"{rel}.xz", xz), (rel, packages))
        )
        release = (
            f"Origin: test\nLabel: test\nSuite: {suite}\nCodename: {suite}\n"
            "Date: Sat, 05 Dec 2026 00:00:00 UTC\nArchitectures: amd64\n"
            f"Components: {component}\nSHA256:\n{entries}"
        )
        (dists / "Release").write_text(release)
        if key is not None:
            env = {**os.environ, "GNUPGHOME": str(key.home)}
            subprocess.run(
                ["gpg", "--batch", "--yes", "--clearsign", "-o", str(dists / "InRelease"),
                 str(dists / "Release")],
                env=env, check=True, capture_output=True,
            )  # fmt: skip


def make_deb(dest_dir: Path, name: str, version: str, *, arch: str = "all",
             payload: bytes = b"", essential: bool = False) -> Path:  # fmt: skip
    """A small real .deb built by dpkg-deb (one file under /usr/share/<name>/)."""
    work = dest_dir / f".build-{name}-{version}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "DEBIAN").mkdir(parents=True)
    data = work / "usr" / "share" / name
    data.mkdir(parents=True)
    (data / "payload").write_bytes(payload or f"{name} {version}\n".encode())
    control = (
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: test <test@invalid>\nDescription: test package\n"
    )
    if essential:
        control += "Essential: yes\n"
    (work / "DEBIAN" / "control").write_text(control)
    out = dest_dir / f"{name}_{version.split(':')[-1]}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "-b", str(work), str(out)],
                   check=True, capture_output=True)  # fmt: skip
    shutil.rmtree(work)
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
