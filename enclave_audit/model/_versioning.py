"""Loading the schema-versioned JSON documents we own, with one-line errors."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from enclave_audit.errors import InvalidInput
from enclave_runtime import strictjson

M = TypeVar("M", bound=BaseModel)


def load_versioned(
    model: type[M],
    text: str | bytes,
    *,
    schema: str,
    version: int,
    source: str,
    error: type[InvalidInput] = InvalidInput,
) -> M:
    """Parse ``text`` as ``model``; refuse another schema or an unknown version first."""
    data: Any = strictjson.loads(text, what=source, error=error)
    if not isinstance(data, dict) or data.get("schema") != schema:
        raise error(f"{source}: not an {schema} document")
    if data.get("schema_version") != version:
        raise error(
            f"{source}: schema version {data.get('schema_version')!r} is not supported"
            f" (this tool reads version {version})"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise error(f"{source}: invalid at {where}: {first['msg']}") from None
