"""The exception families the enclave's own code raises, with their exit codes.

They are the root of the project's one exception tree: :mod:`enclave_audit.errors`
re-exports them and adds the auditor's classes, and its exit-code table (the README's)
covers both modules.  They live here because the image carries this package and
nothing of the auditor: the runtime's ``main`` exits with these codes, and the
host-side code that calls in-enclave primitives (the CBOR decoder, the model format,
HPKE) catches the same classes.  A new code is still added in one place: here for a
failure the enclave can raise, in :mod:`enclave_audit.errors` for everything else.
"""

from __future__ import annotations

from typing import ClassVar


class EnclaveAuditError(Exception):
    """Root of every error the project raises on purpose."""

    exit_code: ClassVar[int] = 70
    meaning: ClassVar[str] = "internal error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: what to try instead, printed by the CLI on a second line ("hint: ...")
        self.hint = hint

    def diagnostic(self) -> str:
        """One line for a person: what failed and what it was about."""
        first = " ".join(self.message.split())
        return f"error: {first}"


class InvalidInput(EnclaveAuditError):
    """Input that cannot be parsed or is structurally wrong."""

    exit_code = 3
    meaning = "invalid input: malformed file, CBOR, JSON, spec or manifest"


class TrustError(EnclaveAuditError):
    """A signature, a certificate chain or a trust policy does not hold."""

    exit_code = 4
    meaning = "trust failure: bad signature, untrusted chain, policy not met"


class EnvironmentProblem(EnclaveAuditError):
    """A tool, daemon or device the command needs is not available."""

    exit_code = 5
    meaning = "environment: a required tool, daemon or device is missing"


class InputNotFound(InvalidInput):
    """A path given on the command line does not exist or cannot be read."""

    exit_code = 6
    meaning = "input file missing or unreadable"


class KeyFileError(InvalidInput):
    exit_code = 44
    meaning = "keys: key file unreadable, wrong type or unsafe permissions"


class ModelTampered(TrustError):
    exit_code = 50
    meaning = "model: encrypted model file tampered, truncated or wrong key"


class KmsRefused(TrustError):
    exit_code = 51
    meaning = "kms: request refused (policy, attestation or key state)"


class ServiceUnavailable(EnvironmentProblem):
    exit_code = 53
    meaning = "service: KMS, proxy, enclave or accelerator unreachable"


class BridgeRefused(TrustError):
    exit_code = 54
    meaning = "gpu bridge: accelerator report or channel message refused"


class ProtocolError(InvalidInput):
    exit_code = 55
    meaning = "protocol: malformed message from a peer"


class Internal(EnclaveAuditError):
    exit_code = 70
    meaning = "internal error (rerun with --debug for the traceback)"
