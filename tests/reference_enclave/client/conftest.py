"""The host-side stack (tiny model) as a module-scoped fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reference_enclave.runtime.stack import Stack, stack_fixture


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from stack_fixture(tmp_path_factory)
