"""``repro-test``: build repeatedly under varied environments and compare, as reprotest does.

Run 1 is the control.  Run 2 varies everything at once; further runs (``runs``
> 2) vary one thing each, in turn, so a failure can be pinned on a variation.
Every run is a separate ``enclave-audit build`` process in its own source copy
and work directory; the rootfs is always rebuilt, the kernel only with
``full``.  An EIF is reproducible when its bytes are identical to the
control's; PCR0/1/2 equality is reported separately.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from builder.pipeline import watched_paths
from builder.source import git_info, source_date_epoch
from builder.spec import LoadedSpec, load_spec
from enclave_audit.errors import BuildStepFailed, NotReproducible, SpecInvalid
from enclave_audit.fsutil import atomic_directory, cache_dir
from enclave_audit.model.manifest import BuildManifest
from enclave_audit.tools import which

REPORT_SCHEMA = "enclave-audit/repro-report"


@dataclass(frozen=True)
class Variation:
    """One thing that differs between the control and the experiment."""

    name: str
    control: str
    varied: str
    needs: str | None = None  # a tool this variation needs


VARIATIONS: tuple[Variation, ...] = (
    Variation("build_path", "src-a/ + work-a/", "deeper/path with space/src-b/ + work-b/"),
    Variation("environment", "HOME=/root USER=root", "HOME=<tmp>/home-b USER=builder-b FOO=bar"),
    Variation("timezone", "TZ=UTC", "TZ=Pacific/Kiritimati"),
    Variation("locales", "LANG=C.UTF-8 LC_ALL=C.UTF-8", "LANG=fr_CH.UTF-8 LC_ALL=fr_CH.UTF-8"),
    Variation("umask", "0022", "0077"),
    Variation("domain_host", "hostname control-host", "hostname varied-host", needs="unshare"),
    Variation("fileordering", "sources copied in sorted order", "sources copied in reverse order"),
    Variation("num_cpus", "all CPUs", "1 CPU (taskset -c 0)", needs="taskset"),
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class RunOutcome(_Model):
    index: int
    label: str
    varied: list[str]
    eif_sha256: str
    pcrs: dict[str, str]
    eif_identical: bool
    pcrs_equal: bool
    #: manifest fields (dotted paths) that differ from the control's
    manifest_differences: list[str]
    seconds: float


class VariationOutcome(_Model):
    name: str
    control: str
    varied: str
    tested: bool
    eif_identical: bool | None
    pcrs_equal: bool | None
    note: str = ""


class ReproReport(_Model):
    schema_: str = REPORT_SCHEMA
    schema_version: int = 1
    spec: str
    full: bool
    source_date_epoch: int
    runs: list[RunOutcome]
    variations: list[VariationOutcome]
    reproducible: bool

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        data = {"schema": data.pop("schema_"), **data}
        return json.dumps(data, indent=2) + "\n"


def _differences(a: object, b: object, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like values differ (lists compared element-wise)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += _differences(x, y, f"{prefix}{i}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def available(v: Variation) -> bool:
    if v.needs is None:
        return True
    if which(v.needs) is None:
        return False
    if v.needs == "unshare":
        probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True, check=False)
        return probe.returncode == 0
    return True


def _copy_sources(loaded: LoadedSpec, dest: Path, *, reverse: bool) -> Path:
    """Copy the spec directory and app packages to ``dest``; returns the copied spec path."""
    root = loaded.source_root
    spec_dir = loaded.base.relative_to(root)
    tops = [spec_dir.as_posix(), *loaded.spec.app.packages]
    files: list[Path] = []
    for top in dict.fromkeys(tops):
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
            files += [Path(dirpath) / f for f in filenames if not f.endswith(".pyc")]
    files.sort(reverse=reverse)
    for f in files:
        target = dest / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        # a symlink stays a symlink: the snapshot's own checks refuse one that leaves it
        shutil.copy2(f, target, follow_symlinks=False)
    return dest / loaded.path.relative_to(root)


def _run_build(
    *,
    spec: Path,
    source_root: Path,
    out: Path,
    work: Path,
    epoch: int,
    commit: str,
    dirty: bool,
    varied: set[str],
    full: bool,
    log: Path,
) -> None:
    home = out.parent / ("home-b" if "environment" in varied else "home-a")
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": str(home),
        "USER": "builder-b" if "environment" in varied else "root",
        "LOGNAME": "builder-b" if "environment" in varied else "root",
        "TZ": "Pacific/Kiritimati" if "timezone" in varied else "UTC",
        "LANG": "fr_CH.UTF-8" if "locales" in varied else "C.UTF-8",
        "LC_ALL": "fr_CH.UTF-8" if "locales" in varied else "C.UTF-8",
        "ENCLAVE_AUDIT_CACHE": str(cache_dir()),
    }
    if "environment" in varied:
        env["FOO"] = "bar"
    for key in ("VIRTUAL_ENV", "PYTHONPATH"):
        if key in os.environ:
            env[key] = os.environ[key]
    build_argv = [
        sys.executable, "-m", "enclave_audit", "build",
        "--spec", str(spec), "--source-root", str(source_root),
        "--source-date-epoch", str(epoch), "--source-commit", commit,
        "--work-dir", str(work), "--no-rootfs-cache", "-o", str(out),
    ]  # fmt: skip
    if dirty:
        build_argv.append("--source-dirty")
    if full:
        build_argv.append("--rebuild-kernel")
    umask = "077" if "umask" in varied else "022"
    host = "varied-host" if "domain_host" in varied else "control-host"
    script = 'umask "$1"; shift; if [ -n "$HOSTSET" ]; then hostname "$HOSTSET"; fi; exec "$@"'
    argv: list[str] = []
    if "domain_host" in varied or available(VARIATIONS[5]):
        argv += ["unshare", "--uts"]
        env["HOSTSET"] = host
    argv += ["sh", "-c", script, "sh", umask]
    if "num_cpus" in varied:
        argv += ["taskset", "-c", "0"]
    argv += build_argv
    with open(log, "wb") as fh:
        proc = subprocess.run(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text("utf-8", "replace").strip().splitlines()
        last = tail[-1] if tail else ""
        raise BuildStepFailed(
            f"repro-test build {out.name} failed (exit {proc.returncode}): {last}"
        )


def repro_test(
    spec_path: Path,
    out_dir: Path,
    *,
    runs: int = 2,
    full: bool = False,
    source_root: Path | None = None,
    source_date_epoch_value: int | None = None,
    on_run: Callable[[str], None] | None = None,
) -> ReproReport:
    """Build ``runs`` times under variation into ``out_dir`` and compare with the control."""
    if runs < 2:
        raise SpecInvalid("repro-test needs at least 2 runs (a control and an experiment)")
    original = load_spec(spec_path, source_root=source_root)
    git = git_info(original.source_root, watched_paths(original))
    epoch = source_date_epoch(source_date_epoch_value, git, original.source_root)
    usable = [v for v in VARIATIONS if available(v)]
    plans: list[tuple[str, set[str]]] = [("control", set()), ("all", {v.name for v in usable})]
    for i in range(runs - 2):
        v = usable[i % len(usable)]
        plans.append((v.name, {v.name}))
    outcomes: list[RunOutcome] = []
    with atomic_directory(Path(out_dir)) as staging:
        # one snapshot of the sources, so every run builds the same tree even while
        # the checkout changes; each run copies it again in its own order and place
        snapshot = staging / "snapshot"
        snap_spec = _copy_sources(original, snapshot, reverse=False)
        loaded = load_spec(snap_spec, source_root=snapshot)
        control_eif: bytes | None = None
        control_pcrs: dict[str, str] = {}
        control_manifest: dict[str, object] = {}
        for index, (label, varied) in enumerate(plans, start=1):
            if on_run:
                on_run(f"run {index}/{len(plans)}: {label}")
            run_dir = staging / f"run-{index}"
            base = run_dir / "deeper" / "path with space" if "build_path" in varied else run_dir
            src = base / ("src-b" if "build_path" in varied else "src-a")
            work = base / ("work-b" if "build_path" in varied else "work-a")
            work.mkdir(parents=True)
            spec_copy = _copy_sources(loaded, src, reverse="fileordering" in varied)
            start = time.perf_counter()
            _run_build(
                spec=spec_copy,
                source_root=src,
                out=run_dir / "out",
                work=work,
                epoch=epoch,
                commit=git.commit if git else "",
                dirty=git.dirty if git else False,
                varied=varied,
                full=full,
                log=run_dir / "build.log",
            )
            seconds = time.perf_counter() - start
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
            manifest = BuildManifest.load(run_dir / "out" / "build-manifest.json")
            eif_out = manifest.output("enclave.eif")
            if eif_out is None:
                raise BuildStepFailed(f"{run_dir}: the build manifest lists no enclave.eif")
            eif_digest = eif_out.sha256
            pcrs = {f"PCR{k}": manifest.pcrs.hex(k) for k in manifest.pcrs.indices()}
            eif_bytes_digest = bytes.fromhex(eif_digest)
            dumped = manifest.without_sources().model_dump(mode="json")
            if control_eif is None:
                control_eif, control_pcrs, control_manifest = eif_bytes_digest, pcrs, dumped
            outcomes.append(
                RunOutcome(
                    index=index,
                    label=label,
                    varied=sorted(varied),
                    eif_sha256=eif_digest,
                    pcrs=pcrs,
                    eif_identical=eif_bytes_digest == control_eif,
                    pcrs_equal=pcrs == control_pcrs,
                    manifest_differences=_differences(control_manifest, dumped),
                    seconds=round(seconds, 1),
                )
            )
        results: list[VariationOutcome] = []
        for v in VARIATIONS:
            if v not in usable:
                results.append(
                    VariationOutcome(
                        name=v.name, control=v.control, varied=v.varied, tested=False,
                        eif_identical=None, pcrs_equal=None, note=f"needs {v.needs}",
                    )
                )  # fmt: skip
                continue
            touched = [o for o in outcomes[1:] if v.name in o.varied]
            results.append(
                VariationOutcome(
                    name=v.name,
                    control=v.control,
                    varied=v.varied,
                    tested=bool(touched),
                    eif_identical=all(o.eif_identical for o in touched),
                    pcrs_equal=all(o.pcrs_equal for o in touched),
                )
            )
        shutil.rmtree(snapshot, ignore_errors=True)
        report = ReproReport(
            spec=str(original.path),
            full=full,
            source_date_epoch=epoch,
            runs=outcomes,
            variations=results,
            reproducible=all(o.eif_identical and o.pcrs_equal for o in outcomes),
        )
        (staging / "repro-report.json").write_text(report.to_json())
    return report


def require_reproducible(report: ReproReport) -> None:
    if not report.reproducible:
        bad = [o.label for o in report.runs if not (o.eif_identical and o.pcrs_equal)]
        raise NotReproducible(
            f"rebuilds under variation differ from the control: {', '.join(bad)}"
            " (see repro-report.json; compare with enclave-audit diff)"
        )
