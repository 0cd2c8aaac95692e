"""Raw HTTP/1.1 to the reference KMS: signed requests built by botocore, then mutated.

The KMS's HTTP layer is where a request's meaning is decided (which header is the
operation, which bytes are the body, which headers were signed), so the hostile
requests of the hardening tests and of the ``kms_http`` fuzz target are written to
the socket byte for byte, not through an HTTP client that would normalise them.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

CONTENT_TYPE = "application/x-amz-json-1.1"

Header = tuple[str, str]


def signed_headers(
    host: str,
    operation: str,
    body: bytes,
    *,
    access_key: str,
    secret: str,
    region: str = "us-east-1",
) -> list[Header]:
    """The headers botocore's SigV4 signer puts on a KMS request (in its order)."""
    request = AWSRequest(
        method="POST",
        url=f"http://{host}/",
        data=body,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": f"TrentService.{operation}"},
    )
    SigV4Auth(Credentials(access_key, secret), "kms", region).add_auth(request)
    return [("Host", host), *((k, str(v)) for k, v in request.headers.items())]


def raw_request(headers: list[Header], body: bytes, *, length: str | None = None) -> bytes:
    """``POST /`` with exactly these header lines (and Content-Length unless given in them)."""
    lines = ["POST / HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    elif not any(name.lower() == "content-length" for name, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return b"\r\n".join(_wire(line) for line in lines) + b"\r\n\r\n" + body


def _wire(line: str) -> bytes:
    """One header line as bytes: latin-1 where it can be (one byte per character), else UTF-8."""
    try:
        return line.encode("latin-1")
    except UnicodeEncodeError:
        return line.encode("utf-8")


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value

    @property
    def error_type(self) -> str:
        return str(self.json().get("__type", "")) if self.status != 200 else ""


class ConnectionDropped(Exception):
    """The server closed the connection without an HTTP answer."""


def send(address: tuple[str, int], data: bytes, *, timeout: float = 10.0) -> Reply:
    """Send ``data`` as is and read one response (the request asks to close)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ConnectionDropped(f"no HTTP answer ({len(raw)} bytes)")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return Reply(status, headers, rest[:length])


# --- structured mutations of a signed request (the ``kms_http`` fuzz target) --------------

#: operations a fuzz input signs (the first byte picks one)
OPERATIONS = ("ListKeys", "DescribeKey", "CreateKey", "GenerateRandom", "Encrypt", "GetKeyPolicy")
#: JSON bodies per operation, before mutation ("$key" is replaced with a real key id)
BODIES = {
    "ListKeys": b'{"Limit": 5}',
    "DescribeKey": b'{"KeyId": "$key"}',
    "CreateKey": b'{"Description": "fuzz"}',
    "GenerateRandom": b'{"NumberOfBytes": 16}',
    "Encrypt": b'{"KeyId": "$key", "Plaintext": "aGVsbG8="}',
    "GetKeyPolicy": b'{"KeyId": "$key", "PolicyName": "default"}',
}
#: hostile JSON values that a mutated body may carry in place of a member's value
HOSTILE_VALUES = (
    b"1" * 5000,
    b"-" + b"9" * 400,
    b"1e999",
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b"[" * 5000 + b"]" * 5000,
    b"{" * 3000 + b"}" * 3000,
    b"NaN",
    b"null",
    b"true",
    b'"' + b"A" * 3000 + b'"',
    b"1.5",
    b"[]",
    b'{"a": 1, "a": 2}',
)
#: Content-Length spellings that are not plain ASCII digits (and some that are)
LENGTHS = ("\u00b2", "\u0661", "+5", "-1", " 5", "0x10", "99999999999", "1e3", "", "007")


class _Bytes:
    """A cursor over fuzz input bytes; reads past the end give zeros."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        value = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return value

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


class _PartialSigner(SigV4Auth):
    """botocore's signer, told to leave some headers out of ``SignedHeaders``."""

    def __init__(self, credentials: Credentials, region: str, leave_out: set[str]) -> None:
        super().__init__(credentials, "kms", region)
        self.leave_out = leave_out

    def headers_to_sign(self, request: AWSRequest) -> object:
        headers = super().headers_to_sign(request)
        for name in self.leave_out:
            if name in headers:
                del headers[name]
        return headers


@dataclass(frozen=True)
class Mutated:
    """A request to send and the operation its signer meant."""

    data: bytes
    operation: str


def mutated_request(
    fuzz: bytes, host: str, *, access_key: str, secret: str, key_id: str
) -> Mutated:
    """Decode fuzz bytes into a (possibly) signed, then mutated, raw KMS request."""
    cur = _Bytes(fuzz)
    operation = OPERATIONS[cur.byte() % len(OPERATIONS)]
    body = BODIES[operation].replace(b"$key", key_id.encode())
    flags = cur.byte()
    if flags & 1:  # a hostile value in place of the body's first member value
        value = HOSTILE_VALUES[cur.byte() % len(HOSTILE_VALUES)]
        start = body.index(b":") + 1
        end = body.index(b",", start) if b"," in body[start:] else len(body) - 1
        body = body[:start] + b" " + value + body[end:]
    if flags & 2:  # the body is the rest of the input, signed as is
        body = cur.rest() if cur.pos < len(fuzz) else body
    leave_out = set()
    if flags & 4:
        leave_out.add(("x-amz-target", "content-type", "x-amz-date")[cur.byte() % 3])
    request = AWSRequest(
        method="POST",
        url=f"http://{host}/",
        data=body,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": f"TrentService.{operation}"},
    )
    _PartialSigner(Credentials(access_key, secret), "us-east-1", leave_out).add_auth(request)
    headers: list[Header] = [("Host", host), *((k, str(v)) for k, v in request.headers.items())]
    length: str | None = None
    for _ in range(cur.byte() % 5):
        op, arg = cur.byte() % 8, cur.byte()
        if op == 0:  # a second copy of a header, before or after, with another value
            name, value = headers[arg % len(headers)]
            other = OPERATIONS[(arg >> 3) % len(OPERATIONS)]
            if name.lower() == "x-amz-target":
                value = f"TrentService.{other}"
            elif name.lower() == "host":
                value = "evil.example"
            position = 0 if arg & 128 else len(headers)
            headers.insert(position, (name, value))
        elif op == 1:  # a header removed
            del headers[arg % len(headers)]
        elif op == 2:  # a header name in another case
            name, value = headers[arg % len(headers)]
            headers[arg % len(headers)] = (name.upper() if arg & 1 else name.lower(), value)
        elif op == 3:  # an unsigned x-amz header
            headers.append(
                (f"X-Amz-{('Target', 'Extra', 'Date')[arg % 3]}", "TrentService.CreateKey")
            )
        elif op == 4:  # a Content-Length that is not what it seems
            length = LENGTHS[arg % len(LENGTHS)]
        elif op == 5:
            headers.append(("Transfer-Encoding", "chunked"))
        elif op == 6:  # whitespace or a control character in a value
            name, value = headers[arg % len(headers)]
            headers[arg % len(headers)] = (name, value + ("\t", " ", "\x0b", "\x7f")[arg % 4])
        else:  # non-ASCII bytes in a value
            name, value = headers[arg % len(headers)]
            headers[arg % len(headers)] = (name, value + "\u00e9")
    return Mutated(raw_request(headers, body, length=length), operation)
