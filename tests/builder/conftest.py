"""Session fixtures for builder tests: THE reference image, built once per run.

Other test directories use the same image through
``builder.reference.reference_image()`` (cached by input digest under
``cache_dir("reference-image")``), e.g. in their own conftest.py::

    @pytest.fixture(scope="session")
    def reference_image() -> BuildResult:
        return builder.reference.reference_image()
"""

from __future__ import annotations

import shutil

import pytest
from conftest import need

from builder.pipeline import BuildResult


def _tools_present() -> bool:
    return all(
        shutil.which(t)
        for t in ("mmdebstrap", "musl-gcc", "make", "gcc", "bc", "flex", "bison", "dpkg-deb")
    )


@pytest.fixture(scope="session")
def reference_image() -> BuildResult:
    need(
        _tools_present(),
        "image build tools (apt-get install mmdebstrap musl-tools bc flex bison libelf-dev)",
    )
    from builder.reference import reference_image as build_reference

    return build_reference()
