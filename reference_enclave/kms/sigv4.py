"""AWS Signature Version 4 verification of incoming requests.

The expected signature is computed with botocore's own signer
(:class:`botocore.auth.SigV4Auth`) over exactly the headers the caller lists in
``SignedHeaders``, the caller's secret and the caller's ``X-Amz-Date``; it is
compared in constant time.  The body hash is always recomputed (an
``X-Amz-Content-SHA256`` header must equal it; ``UNSIGNED-PAYLOAD`` is refused).
Error codes and messages follow what AWS JSON services answer.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from reference_enclave.kms.config import Credential
from reference_enclave.kms.errors import KmsApiError

SERVICE = "kms"
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,"
    r"\s*Signature=([0-9a-f]{64})$"
)
_AMZ_DATE_FMT = "%Y%m%dT%H%M%SZ"
_HEADER_NAME_RE = re.compile(r"^[a-z0-9-]+$")
#: visible ASCII plus space and tab (RFC 9110 field-value without obs-text)
_FIELD_VALUE_RE = re.compile(r"^[\t\x20-\x7e]*$")


def _incomplete(message: str) -> KmsApiError:
    return KmsApiError("IncompleteSignatureException", message)


def _invalid(message: str) -> KmsApiError:
    return KmsApiError("InvalidSignatureException", message)


def single_valued(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The request headers as lower-case name -> value, refusing ambiguous ones.

    Refused (``IncompleteSignatureException``, as AWS answers a request it cannot
    canonicalise): a second copy of any header (``x-amz-*``, ``authorization``,
    ``host`` and the body's framing above all: a second copy would let the
    signature check and the dispatcher read different values), and values with
    control characters or bytes outside ASCII.  Every reader of the request (the
    signature check, the dispatcher, the body reader) then sees one and the same
    value.
    """
    out: dict[str, str] = {}
    for raw_name, value in items:
        name = raw_name.lower()
        if name in out:
            raise _incomplete(f"The request has more than one '{name}' header.")
        if not _FIELD_VALUE_RE.match(value):
            raise _incomplete(f"The '{name}' header holds characters that are not allowed.")
        out[name] = value.strip(" \t")
    return out


def verify_request(
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    region: str,
    lookup: Callable[[str], Credential | None],
    now: float,
    skew_seconds: float,
) -> Credential:
    """Authenticate one request; returns the caller's credential or raises KmsApiError.

    ``headers`` maps lower-case names to values (one value per name, as
    :func:`single_valued` makes them).  Every ``x-amz-*`` header present must be
    among the signed ones, as AWS requires.
    """
    authorization = headers.get("authorization")
    if authorization is None:
        raise KmsApiError("MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTH_RE.match(authorization.strip())
    if match is None:
        raise _incomplete(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
            "parameters (AWS4-HMAC-SHA256)."
        )
    credential_text, signed_text, signature = match.groups()
    parts = credential_text.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise _incomplete(f"Credential {credential_text!r} is malformed.")
    access_key, scope_date, scope_region, scope_service, _ = parts

    amz_date = headers.get("x-amz-date")
    if amz_date is None:
        raise _incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    try:
        signed_at = datetime.strptime(amz_date, _AMZ_DATE_FMT).replace(tzinfo=UTC)
    except ValueError:
        raise _incomplete(f"X-Amz-Date {amz_date!r} is not in the form YYYYMMDDTHHMMSSZ.") from None

    cred = lookup(access_key)
    if cred is None:
        raise KmsApiError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    signed_names = signed_text.split(";")
    if any(not _HEADER_NAME_RE.match(n) for n in signed_names) or signed_names != sorted(
        set(signed_names)
    ):
        raise _incomplete("SignedHeaders must be sorted, unique, lower-case header names.")
    for required in ("host", "x-amz-date"):
        if required not in signed_names:
            raise _incomplete(f"Signed headers must include '{required}'.")
    unsigned = sorted(n for n in headers if n.startswith("x-amz-") and n not in signed_names)
    if unsigned:
        raise _invalid(
            "There were headers present in the request which were not signed: "
            + ", ".join(unsigned)
        )
    if cred.session_token is None and "x-amz-security-token" in headers:
        raise KmsApiError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if cred.session_token is not None and "x-amz-security-token" not in signed_names:
        raise KmsApiError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if scope_date != amz_date[:8]:
        raise _invalid(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{scope_date}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    if scope_service != SERVICE:
        raise _invalid(f"Credential should be scoped to correct service: '{SERVICE}'.")
    if scope_region != region:
        raise _invalid(f"Credential should be scoped to a valid region, not '{scope_region}'.")
    age = now - signed_at.timestamp()
    if abs(age) > skew_seconds:
        now_text = datetime.fromtimestamp(now, UTC).strftime(_AMZ_DATE_FMT)
        raise _invalid(
            f"Signature expired: {amz_date} is now earlier than the allowed window around "
            f"{now_text} ({int(skew_seconds // 60)} min.)"
            if age > 0
            else f"Signature not yet current: {amz_date} is still later than {now_text} "
            f"(+{int(skew_seconds // 60)} min.)"
        )

    body_hash = hashlib.sha256(body).hexdigest()
    declared = headers.get("x-amz-content-sha256")
    if declared is not None and declared != body_hash:
        raise _invalid(
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        )

    request_headers: dict[str, str] = {}
    for name in signed_names:
        value = headers.get(name)
        if value is None:
            raise _incomplete(f"Signed header '{name}' is missing from the request.")
        request_headers[name] = value
    url = f"http://{request_headers['host']}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers=request_headers, data=body)
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(cred.access_key_id, cred.secret_access_key, cred.session_token),
        SERVICE,
        region,
    )
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, signature):
        raise _invalid(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details."
        )
    if cred.session_token is not None and not hmac.compare_digest(
        headers.get("x-amz-security-token", ""), cred.session_token
    ):
        raise KmsApiError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    return cred
