"""Root filesystem backends (``native``: mmdebstrap; others plug in via :class:`RootfsBackend`)."""

from collections.abc import Callable

from builder.rootfs.base import RootfsBackend, RootfsResult
from builder.rootfs.docker import DockerBackend
from builder.rootfs.native import NativeBackend

BACKENDS: dict[str, Callable[[], RootfsBackend]] = {
    "native": NativeBackend,
    "docker": DockerBackend.connected,
}


def get_backend(name: str) -> RootfsBackend:
    """The backend called ``name``; unknown names are an :class:`EnvironmentProblem`."""
    from enclave_audit.errors import EnvironmentProblem

    cls = BACKENDS.get(name)
    if cls is None:
        raise EnvironmentProblem(
            f"build backend {name!r} is not available here"
            f" (available: {', '.join(sorted(BACKENDS))})"
        )
    return cls()


__all__ = [
    "BACKENDS",
    "DockerBackend",
    "NativeBackend",
    "RootfsBackend",
    "RootfsResult",
    "get_backend",
]
