"""The exception tree and the one exit-code table.

Library code raises these; only :mod:`enclave_audit.cli` catches them, prints
``diagnostic()`` as one line on stderr and exits with ``exit_code``.  Every
exit code the program can return is defined here, and the README's table is
generated from :func:`exit_code_table` (a test keeps them equal).

The families the enclave's own code raises (the root, invalid input, trust,
environment, and the model, KMS, bridge and protocol classes) are defined in
:mod:`enclave_runtime.errors`, which the image carries, and re-exported here; the
table covers both modules.  Packages add no exit codes of their own: when a new
failure needs a distinct code, add a class here (or there, if the enclave raises it),
in the range of its family.
"""

from __future__ import annotations

from enclave_runtime import errors as _runtime_errors
from enclave_runtime.errors import (
    BridgeRefused as BridgeRefused,
)
from enclave_runtime.errors import (
    EnclaveAuditError as EnclaveAuditError,
)
from enclave_runtime.errors import (
    EnvironmentProblem as EnvironmentProblem,
)
from enclave_runtime.errors import (
    InputNotFound as InputNotFound,
)
from enclave_runtime.errors import (
    Internal as Internal,
)
from enclave_runtime.errors import (
    InvalidInput as InvalidInput,
)
from enclave_runtime.errors import (
    KeyFileError as KeyFileError,
)
from enclave_runtime.errors import (
    KmsRefused as KmsRefused,
)
from enclave_runtime.errors import (
    ModelTampered as ModelTampered,
)
from enclave_runtime.errors import (
    ProtocolError as ProtocolError,
)
from enclave_runtime.errors import (
    ServiceUnavailable as ServiceUnavailable,
)
from enclave_runtime.errors import (
    TrustError as TrustError,
)

# --- families ------------------------------------------------------------


class AuditFailed(EnclaveAuditError):
    """The check ran and its answer is negative (FAIL or INCONCLUSIVE)."""

    exit_code = 1
    meaning = "audit negative: measurements differ, verdict FAIL/INCONCLUSIVE, gate refused"


class OutputError(EnclaveAuditError):
    """An output could not be written (it was not left half-written)."""

    exit_code = 7
    meaning = "output could not be written"


# --- EIF (10-19) -----------------------------------------------------------


class EifError(InvalidInput):
    exit_code = 10
    meaning = "EIF: malformed image"


class EifTruncated(EifError):
    exit_code = 11
    meaning = "EIF: file shorter than its header or sections say"


class EifBadMagic(EifError):
    exit_code = 12
    meaning = "EIF: wrong magic (not an EIF)"


class EifUnsupportedVersion(EifError):
    exit_code = 13
    meaning = "EIF: unsupported format version"


class EifUnknownSection(EifError):
    exit_code = 14
    meaning = "EIF: unknown or invalid section type"


class EifSectionOverrun(EifError):
    exit_code = 15
    meaning = "EIF: a section runs past the end of the file or trailing bytes follow"


class EifSizeMismatch(EifError):
    exit_code = 16
    meaning = "EIF: header and section header disagree on a size or offset"


class EifCrcMismatch(EifError):
    exit_code = 17
    meaning = "EIF: CRC-32 does not match the contents"


class EifSignatureInvalid(TrustError):
    exit_code = 18
    meaning = "EIF: signature section invalid or does not cover this image"


# --- attestation documents (20-29) --------------------------------------------


class AttestationMalformed(InvalidInput):
    exit_code = 20
    meaning = "attestation: document is not a well-formed COSE_Sign1/CBOR document"


class AttestationSignatureInvalid(TrustError):
    exit_code = 21
    meaning = "attestation: COSE signature does not verify"


class AttestationChainInvalid(TrustError):
    exit_code = 22
    meaning = "attestation: certificate chain does not lead to the trusted root"


class AttestationExpired(TrustError):
    exit_code = 23
    meaning = "attestation: a certificate is not valid at the verification time"


class AttestationPolicyFailed(AuditFailed):
    exit_code = 24
    meaning = "attestation: PCRs, nonce, age or debug policy not met"


class AttestationUnsigned(TrustError):
    exit_code = 25
    meaning = "attestation: unsigned (emulator) document refused"


# --- builder (30-39) --------------------------------------------------------


class SpecInvalid(InvalidInput):
    exit_code = 30
    meaning = "build: spec or manifest unreadable or invalid"


class PinnedInputUnavailable(EnclaveAuditError):
    exit_code = 31
    meaning = "build: a pinned input (package version, file) cannot be obtained"


class DigestMismatch(TrustError):
    exit_code = 32
    meaning = "build: an input or cached file does not match its pinned digest"


class BuildStepFailed(EnclaveAuditError):
    exit_code = 33
    meaning = "build: a build step failed"


class NotReproducible(AuditFailed):
    exit_code = 34
    meaning = "build: rebuilds under variation are not byte-identical"


class CpioError(InvalidInput):
    exit_code = 35
    meaning = "cpio: malformed archive or unsupported member"


# --- signed attestations (40-49) ---------------------------------------------


class BundleMalformed(InvalidInput):
    exit_code = 40
    meaning = "attest: bundle, envelope or statement malformed"


class SignatureInvalid(TrustError):
    exit_code = 41
    meaning = "attest: signature does not verify"


class PolicyNotMet(TrustError):
    exit_code = 42
    meaning = "attest: signer identity or key policy not met"


class SubjectMismatch(TrustError):
    exit_code = 43
    meaning = "attest: statement subject does not match the artifact"


# --- runtime, KMS, bridge (50-59) ----------------------------------------------


class EnclaveRefused(TrustError):
    exit_code = 52
    meaning = "client: enclave attestation or measurements refused"


# --- reports, gate, decision log (60-69) ---------------------------------------


class GateRefused(AuditFailed):
    exit_code = 1
    meaning = "gate refused the change (too few auditors, dissent, expiry, mismatch)"


class DecisionLogTampered(TrustError):
    exit_code = 60
    meaning = "gate: decision log unsigned, malformed, broken, truncated or rolled back"


class ReportInvalid(InvalidInput):
    exit_code = 61
    meaning = "report: saved report unreadable or of an unknown schema version"


class PolicyApplyFailed(EnclaveAuditError):
    exit_code = 62
    meaning = "gate: the KMS key policy could not be written or read back equal"


# --- QEMU (63-69) -----------------------------------------------------------------


class QemuBootFailed(EnclaveAuditError):
    exit_code = 63
    meaning = "qemu: the image did not boot or attest under QEMU"


def _all_error_classes() -> list[type[EnclaveAuditError]]:
    seen: list[type[EnclaveAuditError]] = []
    stack: list[type[EnclaveAuditError]] = [EnclaveAuditError]
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.append(cls)
            stack.extend(cls.__subclasses__())
    return seen


def exit_code_table() -> list[tuple[int, str, str]]:
    """(code, meaning, class names) for every exit code, sorted by code."""
    rows: dict[int, tuple[str, list[str]]] = {
        0: ("success: verified, reproducible, gate updated", []),
        2: ("usage error: unknown option or missing argument", []),
    }
    for cls in _all_error_classes():
        if cls.__module__ not in (__name__, _runtime_errors.__name__):
            continue  # package-level subclasses inherit a code from this table
        _meaning, names = rows.setdefault(cls.exit_code, (cls.meaning, []))
        names.append(cls.__name__)
    return [
        (code, meaning, ", ".join(sorted(names))) for code, (meaning, names) in sorted(rows.items())
    ]
