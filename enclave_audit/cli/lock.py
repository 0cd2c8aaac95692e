"""``enclave-audit lock update``: move the Debian lock to what the mirrors serve today."""

from __future__ import annotations

from pathlib import Path

import click

from enclave_audit.cli._common import emit_json, json_option

DEFAULT_SPEC = Path("reference_enclave/enclave.toml")


def run_lock_update(
    spec: Path,
    *,
    source_root: Path | None,
    debian_mirrors: tuple[str, ...],
    keyring: Path | None,
    check: bool,
    as_json: bool,
) -> None:
    from builder.inputs.resolver import parse_mirror_map
    from builder.lockfile import update_lock
    from builder.spec import load_spec
    from enclave_audit.errors import AuditFailed
    from enclave_audit.progress import RichProgress

    loaded = load_spec(spec, source_root=source_root)
    with RichProgress(bytes_mode=False) as progress:
        result = update_lock(
            loaded,
            mirror_map=parse_mirror_map(debian_mirrors),
            keyring=keyring,
            write=not check,
            progress=progress,
        )
    if as_json:
        emit_json(
            {
                "schema": "enclave-audit/lock-update",
                "schema_version": 1,
                "lock": str(result.path),
                "resolved_at": result.resolved_at,
                "source_date_epoch": result.epoch,
                "written": result.written,
                "changes": [
                    {
                        "name": c.name,
                        "arch": c.arch,
                        "old": c.old,
                        "new": c.new,
                        "security": c.security,
                        "suite": c.suite,
                    }
                    for c in result.changes
                ],
                "notes": result.notes,
            }
        )
    else:
        for change in result.changes:
            click.echo(change.line())
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        security = sum(c.security for c in result.changes)
        if not result.changes:
            click.echo(f"{result.path}: current ({len(result.packages)} packages)", err=True)
        elif result.written:
            click.echo(
                f"wrote {result.path}: {len(result.changes)} changes ({security} from the"
                f" security suite), resolved at {result.resolved_at}",
                err=True,
            )
        else:
            click.echo(
                f"{result.path}: {len(result.changes)} packages would change"
                f" ({security} from the security suite)",
                err=True,
            )
    if check and result.changes:
        raise AuditFailed(f"{result.path} is behind the mirrors ({len(result.changes)} changes)")


@click.group("lock")
def lock_group() -> None:
    """Maintain the Debian lock of a build spec.

    \b
    Example:
      enclave-audit lock update --spec reference_enclave/enclave.toml --check
    """


@lock_group.command("update")
@click.option(
    "--spec",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_SPEC,
    show_default=True,
    help="Build spec (TOML) whose lock is updated.",
)
@click.option("--source-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Source tree (default: the directory above the spec's).")  # fmt: skip
@click.option(
    "--debian-mirror",
    "debian_mirrors",
    multiple=True,
    metavar="CANONICAL=URL",
    help="Read a spec mirror from another location (a local mirror or proxy).",
)
@click.option(
    "--keyring",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Keyring the mirrors' InRelease must verify against"
    " (default: /usr/share/keyrings/debian-archive-keyring.gpg).",
)
@click.option("--check", is_flag=True, help="Only report; exit 1 if the lock is behind.")
@json_option
def lock_update(
    spec: Path,
    source_root: Path | None,
    debian_mirrors: tuple[str, ...],
    keyring: Path | None,
    check: bool,
    as_json: bool,
) -> None:
    """Re-resolve the spec's Debian packages against today's mirrors.

    Prints old -> new for every package whose pin moves (marking those from the
    security suite), then rewrites the lock atomically with the time it was
    resolved (the snapshot.debian.org timestamp that serves every pinned version).
    Every package must be listed, with the same sha256, in an index whose
    InRelease signature verifies against the archive keyring.

    \b
    Example:
      enclave-audit lock update --spec reference_enclave/enclave.toml
      enclave-audit lock update --check --json    # CI: is the lock behind?
    """
    run_lock_update(
        spec,
        source_root=source_root,
        debian_mirrors=debian_mirrors,
        keyring=keyring,
        check=check,
        as_json=as_json,
    )
