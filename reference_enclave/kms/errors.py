"""AWS KMS error responses: the ``__type`` codes botocore turns into ``ClientError``.

:class:`KmsApiError` is raised inside the service and turned into AWS's JSON error
shape by the HTTP layer; it never leaves the server.  :func:`error_body` is that shape.
"""

from __future__ import annotations

import json

from enclave_audit.errors import KmsRefused


class KmsApiError(KmsRefused):
    """A request the KMS answers with an AWS error code and an HTTP status."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.api_message = message
        self.status = status

    @classmethod
    def bad_json(cls, message: str) -> KmsApiError:
        """A request body that is not acceptable JSON (AWS: ``SerializationException``)."""
        return cls("SerializationException", message)


def error_body(code: str, message: str) -> bytes:
    """``{"__type": code, "message": message}`` as AWS JSON 1.1 services send it."""
    return json.dumps({"__type": code, "message": message}).encode("utf-8")


def validation(message: str) -> KmsApiError:
    return KmsApiError("ValidationException", message)


def not_found(message: str) -> KmsApiError:
    return KmsApiError("NotFoundException", message)


def access_denied(message: str) -> KmsApiError:
    return KmsApiError("AccessDeniedException", message)


def invalid_ciphertext(
    message: str = "The ciphertext is invalid: it was not produced by this KMS, it was"
    " modified, or the encryption context differs from the one it was encrypted with.",
) -> KmsApiError:
    return KmsApiError("InvalidCiphertextException", message)


def malformed_policy(message: str) -> KmsApiError:
    return KmsApiError("MalformedPolicyDocumentException", message)
