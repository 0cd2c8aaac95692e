"""Field types whose pydantic behaviour is looked up only when pydantic asks for it.

The attestation types (:mod:`enclave_audit.model.attestation_doc`,
:class:`~enclave_audit.model.measurements.PcrSet`) are standard dataclasses so that the
one-document ``attestation verify`` process never imports pydantic.  Pydantic models
embed them all the same, and the published JSON Schemas are generated from them: a
field annotated ``Annotated[bytes, Pydantic("HexBytes")]`` is, for pydantic, exactly
``enclave_audit.model._pydantic_types.HexBytes`` (validator, serializer and JSON
Schema), and that module, with pydantic, is imported on first use.
"""

from __future__ import annotations

from typing import Any


class Pydantic:
    """``Annotated`` metadata naming a type in :mod:`enclave_audit.model._pydantic_types`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Pydantic({self.name!r})"

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from enclave_audit.model import _pydantic_types

        return handler.generate_schema(getattr(_pydantic_types, self.name))
