"""Which optional dependencies each install extra brings, read from the installed metadata.

``pyproject.toml`` is the one list: the verb-level extras (``build``, ``gate``,
``runtime``) name the distributions a verb imports only when it runs.  The CLI uses this
to turn a missing optional package into an install hint (exit 5) instead of an internal
error, and the demo checks its extra before any work.  Only used on those paths: nothing
here is imported at start-up.
"""

from __future__ import annotations

import re
from functools import cache

DISTRIBUTION = "enclave-audit"
#: extras that only group others, or that no verb needs
_NOT_VERB_EXTRAS = frozenset({"all", "dev", "fuzz"})
_REQUIREMENT = re.compile(r'^([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*;\s*extra\s*==\s*"([a-z0-9-]+)"\s*$')


@cache
def verb_extras() -> dict[str, tuple[str, ...]]:
    """Extra -> the distributions it brings, in declaration order ({} if not installed)."""
    from importlib import metadata

    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return {}
    out: dict[str, list[str]] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match and match.group(2) not in _NOT_VERB_EXTRAS and match.group(1) != DISTRIBUTION:
            out.setdefault(match.group(2), []).append(match.group(1).lower())
    return {extra: tuple(names) for extra, names in out.items()}


def extras_bringing(module: str) -> list[str]:
    """The extras that install the top-level import ``module`` (its distribution's name)."""
    name = module.split(".")[0].lower().replace("_", "-")
    return [extra for extra, names in verb_extras().items() if name in names]


def missing_from(extra: str) -> list[str]:
    """The distributions of ``extra`` that cannot be imported here."""
    import importlib.util

    return [
        name
        for name in verb_extras().get(extra, ())
        if importlib.util.find_spec(name.replace("-", "_")) is None
    ]


def install_hint(extras: list[str]) -> str:
    first = extras[0]
    return (
        f"pip install 'enclave-audit[{first}]', or 'enclave-audit[all]' for every verb"
        " (scripts/setup installs everything)"
    )
