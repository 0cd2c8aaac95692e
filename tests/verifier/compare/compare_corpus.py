"""Builders of real artefacts for the comparison tests: gcc-built ELFs, py_compile'd .pyc files,
newc ramdisks written by the builder's writer and EIFs written by ``builder.eif.write_eif``.

Everything is built once per session into a temp directory.  An image is described by
an :class:`ImageSpec` (files of the application ramdisk, their order and owners, the
boot ramdisk, the cmdline, the build time), so a corpus case is a small change to the
base spec.
"""

from __future__ import annotations

import dataclasses
import io
import os
import py_compile
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from builder.eif import write_eif
from builder.initramfs.newc import EntryKind, type_bits
from builder.initramfs.writer import NewcStream
from enclave_audit.fsutil import atomic_write

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
#: the images' BuildTime: SOURCE_DATE_EPOCH, as the builder writes it (the build's window)
BUILD_TIME = "2023-11-14T22:13:20Z"

C_SOURCE = r"""
#include <stdio.h>
__attribute__((noinline)) int compute(int x) { return x * 3 + 7; }
int main(int argc, char **argv) { (void)argv; printf("hello %d\n", compute(argc)); return 0; }
"""

#: a build stamp: __DATE__/__TIME__ follow SOURCE_DATE_EPOCH (gcc >= 7)
STAMP_SOURCE = r"""
#include <stdio.h>
const char build_stamp[] = "built " __DATE__ " " __TIME__;
int main(void) { puts(build_stamp); return 0; }
"""

PY_SOURCE = "import os\n\ndef greet(name):\n    return 'hello ' + name + os.sep\n"

#: a client with its endpoint in .rodata (the host is replaced by one of the same length)
HOST_SOURCE = r"""
#include <stdio.h>
static const char kms_endpoint[] = "https://@HOST@/";
__attribute__((noinline)) const char *endpoint(void) { return kms_endpoint; }
int main(void) { puts(endpoint()); return 0; }
"""
KMS_HOST = "kms.us-east-1.amazonaws.com"
OTHER_HOST = "kms.us-east-1.exfiltrate.io"  # the same length, another host
assert len(OTHER_HOST) == len(KMS_HOST)

LIB_SOURCE = "int helper(int x) { return x + 1; }\n"


@dataclass(frozen=True)
class FileSpec:
    data: bytes = b""
    perm: int = 0o644
    mtime: int = T0
    uid: int = 0
    gid: int = 0
    kind: EntryKind = EntryKind.FILE
    target: str | None = None
    ino: int | None = None  # members with the same ino are hard links (newc: one inode)
    nlink: int = 1
    rdev: tuple[int, int] = (0, 0)


def d(perm: int = 0o755, mtime: int = T0) -> FileSpec:
    return FileSpec(kind=EntryKind.DIRECTORY, perm=perm, mtime=mtime)


@dataclass(frozen=True)
class ImageSpec:
    files: dict[str, FileSpec]
    boot: dict[str, FileSpec]
    order: tuple[str, ...] | None = None  # None: sorted by name (the builder's order)
    cmdline: str = "console=ttyS0 reboot=k panic=30 pci=off nomodules"
    build_time: str = BUILD_TIME

    def replace(self, **changes: object) -> ImageSpec:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def with_file(self, name: str, spec: FileSpec) -> ImageSpec:
        return self.replace(files={**self.files, name: spec})

    def with_boot(self, name: str, spec: FileSpec) -> ImageSpec:
        return self.replace(boot={**self.boot, name: spec})


def write_cpio(
    path: Path, files: dict[str, FileSpec], order: tuple[str, ...] | None = None
) -> None:
    """A newc archive in the given order, with the given owners, through the builder's stream."""
    names = list(order) if order is not None else sorted(files, key=lambda n: n.split("/"))
    with atomic_write(path) as out:
        stream = NewcStream(out)
        for ino, name in enumerate(names, 1):
            f = files[name]
            mode = type_bits(f.kind) | f.perm
            if f.kind is EntryKind.SYMLINK:
                assert f.target is not None
                raw = f.target.encode()
                stream.header(
                    name,
                    mode=mode,
                    ino=ino,
                    nlink=1,
                    mtime=f.mtime,
                    size=len(raw),
                    uid=f.uid,
                    gid=f.gid,
                )
                stream.data_bytes(raw)
            elif f.kind is EntryKind.FILE:
                stream.header(
                    name,
                    mode=mode,
                    ino=f.ino if f.ino is not None else ino,
                    nlink=f.nlink,
                    mtime=f.mtime,
                    size=len(f.data),
                    uid=f.uid,
                    gid=f.gid,
                )
                stream.data(io.BytesIO(f.data), len(f.data), name)
            else:
                nlink = 2 if f.kind is EntryKind.DIRECTORY else 1
                stream.header(
                    name,
                    mode=mode,
                    ino=ino,
                    nlink=nlink,
                    mtime=f.mtime,
                    size=0,
                    uid=f.uid,
                    gid=f.gid,
                    rdev=f.rdev,
                )
        stream.trailer()


@dataclass
class Artefacts:
    root: Path
    elf: bytes  # gcc -g -O1, compiled in src-a
    elf_other_dir: bytes  # same source, compiled in src-b (different DW_AT_comp_dir)
    elf_stripped: bytes
    elf_comment: bytes  # .comment rewritten to another compiler version
    elf_one_byte: bytes  # one byte of compute() changed
    stamped: bytes  # __DATE__ __TIME__ with SOURCE_DATE_EPOCH=T0
    stamped_later: bytes  # the same with SOURCE_DATE_EPOCH=T0 + 2 days
    pyc: bytes  # timestamp-based pyc, source mtime T0
    pyc_later: bytes  # same source, source mtime T0 + 3600
    kernel: Path
    client: bytes  # HOST_SOURCE with KMS_HOST
    client_other_host: bytes  # the same, built with OTHER_HOST (same length)
    library: bytes  # a shared library (gcc -shared)
    needs_libm: bytes  # C_SOURCE linked with an extra DT_NEEDED libm
    ca_bundle: bytes  # two CA certificates (PEM)
    ca_bundle_changed: bytes  # the first, and another in place of the second
    uuid_ids: tuple[bytes, bytes]  # one program linked twice with --build-id=uuid
    counter: list[int] = field(default_factory=lambda: [0])

    def image(self, spec: ImageSpec, name: str | None = None) -> Path:
        self.counter[0] += 1
        n = self.counter[0]
        out = self.root / "images" / f"{n}"
        out.mkdir(parents=True, exist_ok=True)
        boot = out / "boot.cpio"
        app = out / "app.cpio"
        write_cpio(boot, spec.boot)
        write_cpio(app, spec.files, spec.order)
        eif = out / (name or "enclave.eif")
        write_eif(
            eif,
            kernel=self.kernel,
            cmdline=spec.cmdline,
            ramdisks=[boot, app],
            name="corpus",
            version="1.0",
            build_time=spec.build_time,
        )
        return eif


def _gcc(
    src_dir: Path, out: Path, *extra: str, source: str = "main.c", env: dict[str, str] | None = None
) -> bytes:
    subprocess.run(
        ["gcc", "-g", "-O1", *extra, "-o", str(out), source],
        cwd=src_dir,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return out.read_bytes()


def _kernel(root: Path) -> Path:
    """The builder's cached bzImage when one exists, else a stand-in blob."""
    base = Path(os.environ.get("ENCLAVE_AUDIT_CACHE") or Path.home() / ".cache" / "enclave-audit")
    cached = sorted((base / "kernel").glob("*/bzImage"))
    if cached:
        return cached[0]
    path = root / "kernel.bin"
    path.write_bytes(b"\x4d\x5a" + bytes(range(256)) * 64)
    return path


def build_artefacts(root: Path) -> Artefacts:
    for sub in ("src-a", "src-b"):
        (root / sub).mkdir()
        (root / sub / "main.c").write_text(C_SOURCE)
    elf = _gcc(root / "src-a", root / "hello-a")
    elf_other = _gcc(root / "src-b", root / "hello-b")
    shutil.copy(root / "hello-a", root / "hello-stripped")
    subprocess.run(["strip", str(root / "hello-stripped")], check=True)
    # another compiler's identification in .comment (what a toolchain bump changes)
    subprocess.run(
        ["objcopy", "--dump-section", f".comment={root / 'comment.bin'}", str(root / "hello-a")],
        check=True,
    )
    comment = (root / "comment.bin").read_bytes()
    # a compiler upgrade: every version number in the identification moves on
    bumped = re.sub(rb"\b(\d+)\.(\d+)\.(\d+)", lambda m: b"99.%s.%s" % (m[2], m[3]), comment)
    assert bumped != comment
    (root / "comment2.bin").write_bytes(bumped)
    subprocess.run(
        [
            "objcopy",
            "--update-section",
            f".comment={root / 'comment2.bin'}",
            str(root / "hello-a"),
            str(root / "hello-comment"),
        ],
        check=True,
    )
    (root / "src-a" / "stamp.c").write_text(STAMP_SOURCE)
    stamped = _gcc(
        root / "src-a", root / "stamp-1", "-s", source="stamp.c", env={"SOURCE_DATE_EPOCH": str(T0)}
    )
    stamped_later = _gcc(
        root / "src-a",
        root / "stamp-2",
        "-s",
        source="stamp.c",
        env={"SOURCE_DATE_EPOCH": str(T0 + 2 * 86400 + 3723)},
    )
    clients = []
    for i, host in enumerate((KMS_HOST, OTHER_HOST)):
        (root / "src-a" / f"client-{i}.c").write_text(HOST_SOURCE.replace("@HOST@", host))
        clients.append(_gcc(root / "src-a", root / f"client-{i}", "-s", source=f"client-{i}.c"))
    client, client_other = clients
    (root / "src-a" / "lib.c").write_text(LIB_SOURCE)
    library = _gcc(root / "src-a", root / "libhelper.so", "-shared", "-fPIC", "-s", source="lib.c")
    needs_libm = _gcc(
        root / "src-a", root / "hello-m", "-s", "-Wl,--no-as-needed", "-lm", source="main.c"
    )
    certs = [_ca_certificate(f"Corpus Root CA {i}") for i in range(3)]
    uuid_ids = (
        _gcc(root / "src-a", root / "uuid-1", "-s", "-Wl,--build-id=uuid", source="main.c"),
        _gcc(root / "src-a", root / "uuid-2", "-s", "-Wl,--build-id=uuid", source="main.c"),
    )
    one_byte = bytearray(elf)
    offset = _symbol_file_offset(root / "hello-a", "compute") + 3
    one_byte[offset] ^= 0x01
    src = root / "mod.py"
    src.write_text(PY_SOURCE)
    os.utime(src, (T0, T0))
    py_compile.compile(
        str(src),
        cfile=str(root / "mod.pyc"),
        invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
        dfile="/app/mod.py",
    )
    os.utime(src, (T0 + 3600, T0 + 3600))
    py_compile.compile(
        str(src),
        cfile=str(root / "mod-later.pyc"),
        invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
        dfile="/app/mod.py",
    )
    return Artefacts(
        root=root,
        elf=elf,
        elf_other_dir=elf_other,
        elf_stripped=(root / "hello-stripped").read_bytes(),
        elf_comment=(root / "hello-comment").read_bytes(),
        elf_one_byte=bytes(one_byte),
        stamped=stamped,
        stamped_later=stamped_later,
        pyc=(root / "mod.pyc").read_bytes(),
        pyc_later=(root / "mod-later.pyc").read_bytes(),
        kernel=_kernel(root),
        client=client,
        client_other_host=client_other,
        library=library,
        needs_libm=needs_libm,
        ca_bundle=certs[0] + certs[1],
        ca_bundle_changed=certs[0] + certs[2],
        uuid_ids=uuid_ids,
    )


def _ca_certificate(name: str) -> bytes:
    """A self-signed CA certificate (PEM), made with cryptography."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime(2023, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _symbol_file_offset(path: Path, name: str) -> int:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        symtab = elf.get_section_by_name(".symtab")
        sym = next(s for s in symtab.iter_symbols() if s.name == name)
        text = elf.get_section_by_name(".text")
        return int(sym["st_value"] - text["sh_addr"] + text["sh_offset"])


def make_base_spec(artefacts: Artefacts) -> ImageSpec:
    """The application ramdisk in the nitro layout (cmd, env, rootfs/...) without the
    rootfs prefix on the corpus files, and a boot ramdisk with /init."""
    return ImageSpec(
        files={
            "cmd": FileSpec(b"/usr/bin/hello\n"),
            "env": FileSpec(b"PATH=/usr/bin:/bin\nMODEL=m\n"),
            "etc": d(),
            "etc/config.txt": FileSpec(b"mode=production\nthreads=4\n"),
            "etc/ssl": d(),
            "etc/ssl/certs": d(),
            "etc/ssl/certs/ca-certificates.crt": FileSpec(artefacts.ca_bundle),
            "etc/service.conf": FileSpec(
                b"kms_url=https://kms.us-east-1.amazonaws.com/\nmodel_sha256=" + b"3f" * 32 + b"\n"
            ),
            "etc/settings.json": FileSpec(b'{"model": "m", "port": 8080, "tls": true}\n'),
            "usr": d(),
            "usr/bin": d(),
            "usr/bin/hello": FileSpec(artefacts.elf, perm=0o755),
            "usr/bin/tool": FileSpec(artefacts.elf_stripped, perm=0o755),
            "usr/bin/stamp": FileSpec(artefacts.stamped, perm=0o755),
            "usr/bin/worker": FileSpec(artefacts.uuid_ids[0], perm=0o755),
            "usr/lib": d(),
            "usr/lib/app": d(),
            "usr/lib/app/mod.pyc": FileSpec(artefacts.pyc),
            "usr/lib/app/seed.bin": FileSpec(bytes(range(32))),
            "usr/lib/libhelper.so": FileSpec(artefacts.library, perm=0o755),
            "usr/bin/client": FileSpec(artefacts.client, perm=0o755),
            "usr/share": d(),
            "usr/share/words.txt": FileSpec(b"Apple\nbanana\nCherry\ndate\n"),
        },
        boot={
            "init": FileSpec(b"#!/bin/sh\nexec /usr/bin/hello\n", perm=0o755),
            "dev": d(),
        },
    )
