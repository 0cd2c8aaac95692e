"""The simulated NSM: device encodings, PCR semantics, AWS-format signed documents."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from pathlib import Path

import cbor2
import pytest
from cryptography import x509

from builder.eif import describe_eif, measure_parts, write_eif
from enclave_audit.errors import InvalidInput, KeyFileError, ServiceUnavailable
from enclave_audit.model.findings import Verdict
from enclave_audit.model.measurements import PcrSet
from enclave_runtime.nsm import protocol
from enclave_runtime.nsm.client import DeviceTransport, NsmClient, open_nsm
from reference_enclave.nsm.sim_ca import SimulationCa
from reference_enclave.nsm.simulator import NsmSocketServer, SimulatedNsm
from verifier.nitro import TrustRoot, verify_attestation

IMAGE = {0: b"\x10" * 48, 1: b"\x11" * 48, 2: b"\x12" * 48}


@pytest.fixture(scope="module")
def ca() -> SimulationCa:
    return SimulationCa.create()


class _Direct:
    def __init__(self, nsm: SimulatedNsm) -> None:
        self.nsm = nsm

    def exchange(self, request: bytes) -> bytes:
        return self.nsm.handle(request)

    def close(self) -> None:
        return None


def _client(ca: SimulationCa) -> tuple[SimulatedNsm, NsmClient]:
    nsm = SimulatedNsm(IMAGE, ca)
    return nsm, NsmClient(_Direct(nsm))


def test_request_encodings_match_the_device_protocol() -> None:
    # specs/nitro.md 6.1 (serde_cbor external tagging, computed from the Rust definitions)
    assert protocol.describe_pcr(0).hex() == "a16b4465736372696265504352a165696e64657800"
    assert (
        protocol.extend_pcr(16, b"abc").hex()
        == "a169457874656e64504352a265696e64657810646461746143616263"
    )
    assert protocol.lock_pcr(16).hex() == "a1674c6f636b504352a165696e64657810"
    assert protocol.describe_nsm().hex() == "6b44657363726962654e534d"
    assert protocol.get_random().hex() == "6947657452616e646f6d"
    assert protocol.attestation().hex() == (
        "a16b4174746573746174696f6ea369757365725f64617461f6656e6f6e6365f66a7075626c69635f6b6579f6"
    )
    assert cbor2.loads(protocol.lock_pcrs(16)) == {"LockPCRs": {"range": 16}}


def test_pcr_extend_and_lock(ca: SimulationCa) -> None:
    nsm, client = _client(ca)
    assert client.describe_pcr(0).value == IMAGE[0] and client.describe_pcr(0).locked
    assert client.describe_pcr(16).value == bytes(48)
    digest = hashlib.sha256(b"model").digest()
    after = client.extend_pcr(16, digest)
    assert after == hashlib.sha384(bytes(48) + digest).digest()
    assert client.extend_pcr(16, b"x") == hashlib.sha384(after + b"x").digest()
    client.lock_pcr(16)
    with pytest.raises(protocol.NsmError, match="ReadOnlyIndex"):
        client.extend_pcr(16, b"y")
    with pytest.raises(protocol.NsmError, match="ReadOnlyIndex"):
        client.extend_pcr(0, b"y")
    with pytest.raises(protocol.NsmError, match="InvalidIndex"):
        client.describe_pcr(40)
    client.lock_pcrs(20)
    description = client.describe_nsm()
    assert description.locked_pcrs == tuple(range(20))
    assert description.digest == "SHA384" and description.max_pcrs == 32
    assert description.module_id.startswith("i-") and "-enc" in description.module_id
    assert len(client.get_random()) == 256
    # PCR4 is the simulated parent instance id, as on Nitro
    instance = description.module_id.split("-enc")[0]
    assert nsm.pcr(4) == hashlib.sha384(bytes(48) + instance.encode()).digest()


def test_malformed_requests_get_device_errors(ca: SimulationCa) -> None:
    nsm, _ = _client(ca)
    assert cbor2.loads(nsm.handle(b"\xff\x00")) == {"Error": "InvalidOperation"}
    assert cbor2.loads(nsm.handle(cbor2.dumps("Reboot"))) == {"Error": "InvalidOperation"}
    assert cbor2.loads(nsm.handle(cbor2.dumps({"ExtendPCR": {"index": 16}}))) == {
        "Error": "InvalidArgument"
    }
    assert cbor2.loads(nsm.handle(bytes(protocol.MAX_REQUEST + 1))) == {"Error": "InputTooLarge"}


def test_document_is_in_the_aws_layout(ca: SimulationCa) -> None:
    _, client = _client(ca)
    document = client.attestation(nonce=b"n" * 20, public_key=b"k" * 32)
    envelope = cbor2.loads(document)
    assert document[0] == 0x84  # untagged COSE_Sign1
    protected, unprotected, payload, signature = envelope
    assert protected == bytes.fromhex("a1013822") and unprotected == {}
    assert len(signature) == 96
    assert payload[0] == 0xA9
    fields = cbor2.loads(payload)
    assert list(fields) == [
        "module_id",
        "digest",
        "timestamp",
        "pcrs",
        "certificate",
        "cabundle",
        "public_key",
        "user_data",
        "nonce",
    ]
    assert b"timestamp\x1b" in payload  # the 8-byte uint form
    assert sorted(fields["pcrs"]) == list(range(16))
    assert fields["user_data"] is None and fields["nonce"] == b"n" * 20
    root = x509.load_der_x509_certificate(fields["cabundle"][0])
    assert root == ca.root  # root first
    leaf = x509.load_der_x509_certificate(fields["certificate"])
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert dt.timedelta(hours=3) <= lifetime <= dt.timedelta(hours=3, minutes=1)
    oids = {e.oid for e in leaf.extensions}
    assert x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER not in oids


def test_documents_verify_under_the_simulation_root_only(ca: SimulationCa) -> None:
    _, client = _client(ca)
    client.extend_pcr(16, b"\x01" * 32)
    client.lock_pcr(16)
    nonce = secrets.token_bytes(32)
    document = client.attestation(nonce=nonce, public_key=b"k" * 32)
    now = dt.datetime.now(dt.UTC)
    root = TrustRoot.from_pem(ca.root_pem(), name="enclave-audit simulation root")
    expected = PcrSet(values={**IMAGE, 16: hashlib.sha384(bytes(48) + b"\x01" * 32).digest()})
    result = verify_attestation(
        document,
        roots=[root],
        expected_pcrs=expected,
        nonce=nonce,
        now=now,
        max_age=dt.timedelta(minutes=5),
    )
    assert result.verdict is Verdict.PASS
    assert result.root_name == "enclave-audit simulation root"
    assert result.pcrs.get(16) == expected[16]
    aws = verify_attestation(document, nonce=nonce, now=now)
    assert aws.verdict is Verdict.FAIL
    wrong_nonce = verify_attestation(document, roots=[root], nonce=b"x" * 32, now=now)
    assert wrong_nonce.verdict is not Verdict.PASS


def test_socket_transport_round_trip(ca: SimulationCa, tmp_path: Path) -> None:
    nsm = SimulatedNsm(IMAGE, ca)
    with NsmSocketServer(nsm, tmp_path / "nsm.sock"), open_nsm(str(tmp_path / "nsm.sock")) as c:
        assert c.describe_pcr(1).value == IMAGE[1]
        assert c.extend_pcr(17, b"a") == nsm.pcr(17)
    with pytest.raises(ServiceUnavailable):
        open_nsm(str(tmp_path / "nsm.sock"))


def test_device_transport_needs_the_device(tmp_path: Path) -> None:
    with pytest.raises(ServiceUnavailable, match="cannot open"):
        DeviceTransport(str(tmp_path / "nsm"))


def test_pcrs_come_from_the_eif_itself(ca: SimulationCa, tmp_path: Path) -> None:
    kernel, ramdisk = tmp_path / "bzImage", tmp_path / "rd.cpio"
    kernel.write_bytes(os.urandom(4096))
    ramdisk.write_bytes(os.urandom(2048))
    eif = tmp_path / "x.eif"
    write_eif(
        eif,
        kernel=kernel,
        cmdline="console=ttyS0",
        ramdisks=[ramdisk],
        name="x",
        version="1",
        build_time="2026-01-01T00:00:00Z",
    )
    nsm = SimulatedNsm.for_eif(eif, ca)
    pcrs = describe_eif(eif).pcrs
    assert pcrs == measure_parts(kernel, "console=ttyS0", [ramdisk])
    for index in (0, 1, 2):
        assert nsm.pcr(index) == pcrs[index]
    with pytest.raises(InvalidInput):
        SimulatedNsm({5: bytes(48)}, ca)


def test_ca_persists_with_private_keys_0600(ca: SimulationCa, tmp_path: Path) -> None:
    ca.save(tmp_path / "ca")
    assert (tmp_path / "ca" / "root.key.pem").stat().st_mode & 0o777 == 0o600
    loaded = SimulationCa.load(tmp_path / "ca")
    assert loaded.root == ca.root and loaded.intermediate == ca.intermediate
    os.chmod(tmp_path / "ca" / "root.key.pem", 0o644)
    with pytest.raises(KeyFileError):
        SimulationCa.load(tmp_path / "ca")


def test_device_ioctl_matches_the_linux_uapi() -> None:
    from enclave_runtime.nsm import client as nsm_client

    # _IOWR(0x0A, 0, struct nsm_raw): dir read|write (3) << 30 | size << 16 | type << 8 | nr
    struct_size = 2 * (8 + 8)  # two struct nsm_iovec { __u64 addr; __u64 len; }
    assert nsm_client.NSM_IOCTL_RAW == (3 << 30) | (struct_size << 16) | (0x0A << 8) | 0
    assert nsm_client.NSM_IOCTL_RAW == 0xC0200A00
