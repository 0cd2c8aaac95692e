"""The docker rootfs backend against the real engine (scripts/docker-engine starts it).

The sample image (tests/builder/data/docker/) is Debian's essential set plus GNU
hello, pinned by its lock, with a Dockerfile that adds files by COPY and RUN,
makes a hard link and deletes a base file (a whiteout).  Tests that need the
engine skip locally and fail in CI when it cannot be reached.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import assert_one_line_error, need, run_cli

from builder.eif import EifReader
from builder.initramfs import EntryKind, iter_members, plan_tar, write_newc
from builder.inputs.refs import make_resolver
from builder.pipeline import BuildOptions, BuildResult, build
from builder.reference import REFERENCE_SPEC
from builder.rootfs.docker import (
    INIT_LAYER_PATHS,
    DockerBackend,
    ImageEntry,
    connect,
    normalize_export,
)
from builder.rootfs.native import NativeBackend
from builder.spec import LoadedSpec, load_spec
from enclave_audit.errors import (
    BuildStepFailed,
    EnvironmentProblem,
    SpecInvalid,
)
from enclave_audit.fsutil import cache_dir
from enclave_audit.progress import NullProgress

DATA = Path(__file__).resolve().parent / "data" / "docker"
EPOCH = 1700000000
#: the sample's source commit (fixed: a commit landing between two builds must not differ them)
COMMIT = "0" * 40
_BUILD_TOOLS = ("mmdebstrap", "musl-gcc", "make", "gcc", "bc", "flex", "bison", "dpkg-deb")


def _engine_ok() -> bool:
    try:
        connect()
    except EnvironmentProblem:
        return False
    return True


def _need_engine() -> None:
    need(
        _engine_ok(),
        "no Docker engine reachable (apt-get install docker.io; then scripts/docker-engine)",
    )


def _need_build_tools() -> None:
    need(
        all(shutil.which(t) for t in _BUILD_TOOLS),
        "image build tools (apt-get install mmdebstrap musl-tools bc flex bison libelf-dev)",
    )


def _engine_state() -> tuple[set[str], set[str]]:
    client = connect()
    images = {str(i.id) for i in client.images.list(all=True)}
    containers = {str(c.id) for c in client.containers.list(all=True)}
    return images, containers


@pytest.fixture(scope="module")
def sample_spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample source tree (a copy of data/docker/) with the reference kernel config and
    init copied in: every spec path stays inside the source tree."""
    root = tmp_path_factory.mktemp("docker-sample") / "docker"
    shutil.copytree(DATA, root)
    reference = REFERENCE_SPEC.parent
    for rel in ("kernel/enclave.config", "init/init.c"):
        (root / "spec" / rel).parent.mkdir(exist_ok=True)
        shutil.copy(reference / rel, root / "spec" / rel)
    return root / "spec" / "enclave.toml"


@pytest.fixture(scope="module")
def sample_spec(sample_spec_path: Path) -> LoadedSpec:
    _need_engine()
    _need_build_tools()
    loaded = load_spec(sample_spec_path)
    # the pinned base (mmdebstrap), built once and cached like the native backend's
    NativeBackend().build_rootfs(
        loaded,
        epoch=EPOCH,
        use_cache=True,
        progress=NullProgress(),
        resolver=make_resolver(loaded),
    )
    return loaded


@pytest.fixture(scope="module")
def sample_builds(
    sample_spec: LoadedSpec, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BuildResult, BuildResult]:
    out = tmp_path_factory.mktemp("docker-builds")
    results = []
    for n in (1, 2):
        options = BuildOptions(
            backend="docker",
            source_date_epoch=EPOCH,
            source_commit=COMMIT,
            use_rootfs_cache=False,  # a fresh docker build each time, no engine cache
            work_dir=out / f"work{n}",
        )
        results.append(build(sample_spec.path, out / f"run{n}", options=options))
    return results[0], results[1]


def _application_members(eif: Path) -> dict[str, tuple[EntryKind, int, int, bytes | str]]:
    """name -> (kind, perm, mtime, data sha256 or link target) of the application ramdisk."""
    out: dict[str, tuple[EntryKind, int, int, bytes | str]] = {}
    with EifReader.open(eif) as reader:
        app = reader.ramdisks[-1]
        for m in iter_members(reader.section_stream(app)):
            if m.kind is EntryKind.FILE:
                assert m.data is not None
                payload: bytes | str = hashlib.sha256(m.data.read()).digest()
            else:
                payload = m.link_target or ""
            out[m.name] = (m.kind, m.mode & 0o7777, m.mtime, payload)
    return out


@pytest.mark.docker
@pytest.mark.slow
def test_sample_dockerfile_builds_reproducibly(
    sample_builds: tuple[BuildResult, BuildResult],
) -> None:
    first, second = sample_builds
    assert first.manifest.builder.backend == "docker"
    assert first.eif.read_bytes() == second.eif.read_bytes()
    assert first.pcrs == second.pcrs
    assert first.manifest.ramdisks == second.manifest.ramdisks
    assert not first.rootfs_reused and not second.rootfs_reused

    members = _application_members(first.eif)
    # the nitro-cli ramdisk layout: rootfs/, cmd, env
    assert members["cmd"][0] is EntryKind.FILE
    assert members["env"][0] is EntryKind.FILE
    assert members["rootfs"][0] is EntryKind.DIRECTORY
    # COPY and RUN results are there, with mtimes clamped to SOURCE_DATE_EPOCH
    run_sh = members["rootfs/opt/hello/run.sh"]
    assert run_sh[1] == 0o755 and run_sh[2] <= EPOCH
    info = members["rootfs/opt/hello/build-info"]
    assert info[3] == hashlib.sha256(f"built at {EPOCH}\n".encode()).digest()
    assert info[2] == EPOCH  # written by RUN at build time, clamped
    assert members["rootfs/opt/hello/run-linked.sh"][3] == run_sh[3]
    # the whiteout of RUN rm is resolved; the pinned package is in
    assert "rootfs/usr/share/common-licenses/GPL-2" not in members
    assert "rootfs/usr/share/common-licenses/GPL-3" in members
    assert "rootfs/usr/bin/hello" in members
    # the application package from the spec
    assert "rootfs/app/hello_app/__init__.py" in members
    # nothing of the engine's init layer; the image's own /etc/hosts, not the engine's
    for path in (".dockerenv", "etc/hostname", "etc/resolv.conf", "etc/mtab"):
        assert f"rootfs/{path}" not in members, path
    hosts = (DATA / "spec" / "docker" / "hosts").read_bytes()
    assert members["rootfs/etc/hosts"][3] == hashlib.sha256(hosts).digest()
    assert members["rootfs/dev/console"][0] is EntryKind.CHAR_DEVICE  # from the base
    assert all(m[2] <= EPOCH for m in members.values())


@pytest.mark.docker
@pytest.mark.slow
def test_sample_cmd_and_env_come_from_the_image(
    sample_builds: tuple[BuildResult, BuildResult],
) -> None:
    first, _ = sample_builds
    files = {}
    with EifReader.open(first.eif) as reader:
        for m in iter_members(reader.section_stream(reader.ramdisks[-1])):
            if m.name in ("cmd", "env"):
                assert m.data is not None
                files[m.name] = m.data.read().decode()
    # the Dockerfile's CMD and ENV (the engine adds the default PATH), as nitro-cli writes them
    assert files["cmd"] == "/bin/sh\n/opt/hello/run.sh\n"
    assert files["env"] == (
        "GREETING=hello from a Dockerfile\n"
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    )


@pytest.mark.docker
@pytest.mark.slow
def test_failing_dockerfile_is_a_build_step_failure(
    sample_spec: LoadedSpec, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE}\nENV STEP=1\n"  # a step that succeeds: its image is removed too
        "RUN echo preparing && echo 'no such step' >&2 && exit 3\n"
    )
    before = _engine_state()
    cached_before = set(cache_dir("rootfs-docker").iterdir())
    with pytest.raises(BuildStepFailed) as err:
        DockerBackend(dockerfile=ctx / "Dockerfile").build_rootfs(
            sample_spec,
            epoch=EPOCH,
            use_cache=False,
            progress=NullProgress(),
            resolver=make_resolver(sample_spec),
        )
    message = str(err.value)
    assert "\n" not in message
    assert str(ctx / "Dockerfile") in message
    assert "returned a non-zero code: 3" in message  # the engine's last log line
    # no partial output, nothing left behind in the engine
    assert set(cache_dir("rootfs-docker").iterdir()) == cached_before
    after = _engine_state()
    assert after[0] <= before[0] and after[1] <= before[1]


@pytest.mark.docker
@pytest.mark.slow
def test_image_cmd_must_match_the_spec(sample_spec: LoadedSpec, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        'ARG BASE\nFROM ${BASE}\nCMD ["/bin/sh", "-c", "echo other"]\n'
    )
    with pytest.raises(SpecInvalid, match=r"ENTRYPOINT\+CMD .* app\.cmd"):
        DockerBackend(dockerfile=tmp_path / "Dockerfile").build_rootfs(
            sample_spec,
            epoch=EPOCH,
            use_cache=False,
            progress=NullProgress(),
            resolver=make_resolver(sample_spec),
        )


@pytest.mark.docker
@pytest.mark.slow
def test_cli_docker_build_gives_the_same_pcrs(
    sample_spec: LoadedSpec, sample_builds: tuple[BuildResult, BuildResult], tmp_path: Path
) -> None:
    first, _ = sample_builds
    result = run_cli(
        ["build", "--backend", "docker", "--spec", str(sample_spec.path), "-o",
         str(tmp_path / "out"),
         "--source-date-epoch", str(EPOCH), "--source-commit", COMMIT, "--json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["rootfs_reused"] is True  # the docker rootfs of the fixture's builds
    assert doc["Measurements"] == first.pcrs.to_nitro()
    assert (tmp_path / "out" / "enclave.eif").read_bytes() == first.eif.read_bytes()


@pytest.mark.docker
@pytest.mark.slow
def test_cli_failing_dockerfile_exits_33_without_output(
    sample_spec: LoadedSpec, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    shutil.copytree(sample_spec.source_root, src)
    (src / "spec" / "docker" / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE}\nRUN echo 'the step that breaks' >&2; false\n"
    )
    out = tmp_path / "out"
    result = run_cli(
        ["build", "--backend", "docker", "--spec", str(src / "spec" / "enclave.toml"),
         "--source-date-epoch", str(EPOCH), "-o", str(out)]
    )  # fmt: skip
    assert_one_line_error(result, 33, "docker build", "returned a non-zero code: 1")
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))  # no staging directory left behind


@pytest.mark.docker
@pytest.mark.slow
def test_image_not_built_on_the_pinned_base_is_refused(
    sample_spec: LoadedSpec, tmp_path: Path
) -> None:
    (tmp_path / "x").write_text("x\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY x /x\n")
    # refused before the engine builds anything (the engine's layer check stays behind it)
    with pytest.raises(SpecInvalid, match="pinned base"):
        DockerBackend(dockerfile=tmp_path / "Dockerfile").build_rootfs(
            sample_spec,
            epoch=EPOCH,
            use_cache=False,
            progress=NullProgress(),
            resolver=make_resolver(sample_spec),
        )


def test_missing_engine_is_an_environment_problem(sample_spec_path: Path, tmp_path: Path) -> None:
    result = run_cli(
        [
            "build",
            "--backend",
            "docker",
            "--spec",
            str(sample_spec_path),
            "-o",
            str(tmp_path / "out"),
        ],
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"},
    )
    assert_one_line_error(result, 5, "docker engine", "docker.io", "scripts/docker-engine")
    assert not (tmp_path / "out").exists()


def test_missing_dockerfile_is_spec_invalid(sample_spec_path: Path, tmp_path: Path) -> None:
    loaded = load_spec(sample_spec_path)
    with pytest.raises(SpecInvalid, match="Dockerfile"):
        DockerBackend(dockerfile=tmp_path / "Dockerfile", client=object()).build_rootfs(
            loaded,
            epoch=EPOCH,
            use_cache=True,
            progress=NullProgress(),
            resolver=make_resolver(loaded),
        )


# --- the export normalizer (no engine needed) -----------------------------------------


def _add(tf: tarfile.TarFile, name: str, kind: bytes, **kw: object) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    data = kw.pop("data", None)
    for key, value in kw.items():
        setattr(info, key, value)
    if isinstance(data, bytes):
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        tf.addfile(info)


def _export_fixture(path: Path, order: list[str]) -> None:
    late = 2_000_000_000  # what the engine's init layer writes: "now"
    items: dict[str, tuple[bytes, dict[str, object]]] = {
        ".dockerenv": (tarfile.REGTYPE, {"data": b"", "mtime": late, "mode": 0o755}),
        "etc": (tarfile.DIRTYPE, {"mtime": late, "mode": 0o755}),
        "etc/hostname": (tarfile.REGTYPE, {"data": b"", "mtime": late}),
        "etc/hosts": (tarfile.REGTYPE, {"data": b"", "mtime": late, "mode": 0o755}),
        "etc/passwd": (tarfile.REGTYPE, {"data": b"root:x:0:0\n", "mtime": 1_000}),
        "usr": (tarfile.DIRTYPE, {"mtime": 1_000, "mode": 0o755}),
        "usr/b": (tarfile.REGTYPE, {"data": b"shared\n", "mtime": late, "mode": 0o755}),
        "usr/a": (tarfile.LNKTYPE, {"linkname": "usr/b"}),
        "usr/s": (tarfile.SYMTYPE, {"linkname": "b", "mtime": 5}),
    }
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name in order:
            kind, kw = items[name]
            _add(tf, name, kind, uname="someone", gname="group", **kw)


def _info(name: str, kind: bytes, mode: int, mtime: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size = kind, mode, mtime, size
    return info


def test_normalize_export_is_deterministic_and_undoes_the_init_layer(tmp_path: Path) -> None:
    names = [
        ".dockerenv", "etc", "etc/hostname", "etc/hosts", "etc/passwd",
        "usr", "usr/b", "usr/a", "usr/s",
    ]  # fmt: skip
    _export_fixture(tmp_path / "e1.tar", names)
    _export_fixture(tmp_path / "e2.tar", [*reversed(names[5:8]), *names[:5], names[8]])
    hosts = b"127.0.0.1 localhost\n"
    image: dict[str, ImageEntry] = {
        "": (_info(".", tarfile.DIRTYPE, 0o755, 900), None),
        "etc": (_info("etc", tarfile.DIRTYPE, 0o755, 950), None),
        "etc/hosts": (_info("etc/hosts", tarfile.REGTYPE, 0o644, 960, len(hosts)), hosts),
    }
    for n in (1, 2):
        normalize_export(
            tmp_path / f"e{n}.tar",
            tmp_path / f"n{n}.tar",
            epoch=EPOCH,
            replaced=INIT_LAYER_PATHS,
            image=image,
        )
    assert (tmp_path / "n1.tar").read_bytes() == (tmp_path / "n2.tar").read_bytes()
    with tarfile.open(tmp_path / "n1.tar") as tf:
        got = {m.name: m for m in tf.getmembers()}
        names_out = [".", "etc", "etc/hosts", "etc/passwd", "usr", "usr/a", "usr/b", "usr/s"]
        assert list(got) == names_out  # init-layer files the image lacks are gone
        # the image's metadata and data, not what the init layer left in the export
        assert got["."].mtime == 900 and got["etc"].mtime == 950
        hosts_member = tf.extractfile(got["etc/hosts"])
        assert hosts_member is not None and hosts_member.read() == hosts
        assert got["etc/hosts"].mode == 0o644 and got["etc/hosts"].mtime == 960
        # hard links: the first name in order holds the data; mtimes clamped
        assert got["usr/a"].isreg() and got["usr/b"].islnk() and got["usr/b"].linkname == "usr/a"
        assert got["usr/a"].mtime == EPOCH and got["usr/a"].mode == 0o755
        assert all(m.uname == "" and m.gname == "" for m in got.values())
    entries = {e.name: e for e in plan_tar(tmp_path / "n1.tar", "rootfs")}
    assert entries["rootfs"].mtime == 900
    assert entries["rootfs/usr/a"].link_group == entries["rootfs/usr/b"].link_group is not None


def test_normalize_export_rejects_dangling_hard_link(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "bad.tar", "w") as tf:
        _add(tf, "x", tarfile.LNKTYPE, linkname="missing")
    with pytest.raises(BuildStepFailed, match="hard link"):
        normalize_export(
            tmp_path / "bad.tar", tmp_path / "n.tar", epoch=EPOCH, replaced=frozenset(), image={}
        )


# --- the reference spec: same layout as the native backend ----------------------------


class _Sha256Sink:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


def _rootfs_part(tarball: Path, epoch: int) -> str:
    sink = _Sha256Sink()
    write_newc(sink, plan_tar(tarball, "rootfs"), epoch=epoch)  # type: ignore[arg-type]
    return sink.hash.hexdigest()


@pytest.mark.docker
@pytest.mark.slow
def test_reference_spec_docker_build_equals_native(
    reference_image: BuildResult, tmp_path: Path
) -> None:
    """reference_enclave/docker/Dockerfile on the pinned base: the native image, exactly."""
    _need_engine()
    loaded = load_spec(REFERENCE_SPEC)
    # the root filesystems are built with the rootfs epoch (the lock's), as build() does
    epoch = reference_image.manifest.rootfs_source_date_epoch
    native = NativeBackend().build_rootfs(
        loaded,
        epoch=epoch,
        use_cache=True,
        progress=NullProgress(),
        resolver=make_resolver(loaded),
    )
    docker = DockerBackend.connected().build_rootfs(
        loaded,
        epoch=epoch,
        use_cache=False,
        progress=NullProgress(),
        resolver=make_resolver(loaded),
    )
    assert docker.tool.startswith("docker ") and not docker.reused
    assert docker.packages == native.packages
    plan_native = {e.name: e for e in plan_tar(native.tarball, "rootfs")}
    plan_docker = {e.name: e for e in plan_tar(docker.tarball, "rootfs")}
    assert sorted(plan_docker) == sorted(plan_native)
    for name, want in plan_native.items():
        got = plan_docker[name]
        assert (got.kind, got.perm, got.size, got.link_target, got.rdev) == (
            want.kind, want.perm, want.size, want.link_target, want.rdev,
        ), name  # fmt: skip
        assert min(got.mtime, epoch) == min(want.mtime, epoch), name
    # the rootfs/ part of the application ramdisk is byte-identical
    assert _rootfs_part(docker.tarball, epoch) == _rootfs_part(native.tarball, epoch)

    # and so is the whole image: same EIF bytes, same PCRs as a native build of the same
    # sources (built back to back, both from cached root filesystems)
    results = {}
    for backend in ("native", "docker"):
        options = BuildOptions(
            backend=backend,
            source_date_epoch=reference_image.manifest.source_date_epoch,
            source_commit=reference_image.manifest.source.git_commit,
        )
        results[backend] = build(REFERENCE_SPEC, tmp_path / backend, options=options)
        assert results[backend].rootfs_reused  # the root filesystems built above
    assert results["docker"].manifest.builder.backend == "docker"
    assert results["docker"].pcrs == results["native"].pcrs
    assert results["docker"].eif.read_bytes() == results["native"].eif.read_bytes()
