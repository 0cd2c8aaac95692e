"""GPU bridge: same answers as the local path, refusals, and no plaintext in shared memory."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from enclave_audit.errors import BridgeRefused
from enclave_runtime.gpu_bridge.attestation import ReferenceValues
from enclave_runtime.gpu_bridge.channel import Channel, Direction, Kind, derive_export
from enclave_runtime.gpu_bridge.client import BridgeBackend, load_reference_values
from enclave_runtime.model.chat import ChatModel
from reference_enclave.gpu_bridge.service import (
    DEFAULT_MEASUREMENTS,
    AcceleratorService,
    NumpyDevice,
    ServiceConfig,
    device_identity,
)
from reference_enclave.gpu_bridge.vendor import Vendor
from reference_enclave.model.tiny_gguf import write_tiny_gguf

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def service(tmp_path: Path):  # type: ignore[no-untyped-def]
    svc = AcceleratorService(
        ServiceConfig(socket_path=tmp_path / "acc.sock", device=device_identity(NOW))
    ).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf").read_bytes()


def test_answer_through_bridge_equals_local_greedy(service, tiny):
    local = ChatModel.from_gguf(tiny).generate("What is the capital of France?", max_new_tokens=16)
    with BridgeBackend(service.config.socket_path, load_reference_values()) as bridge:
        assert bridge.device is not None
        assert bridge.device.measurements["firmware"] == DEFAULT_MEASUREMENTS["firmware"]
        remote = ChatModel.from_gguf(tiny, backend=bridge).generate(
            "What is the capital of France?", max_new_tokens=16
        )
    assert remote.token_ids == local.token_ids
    assert remote.text == local.text


class SpyingBridge(BridgeBackend):
    """Snapshots the bounce buffer after every transfer (what the host could read)."""

    snapshots: list[bytes]

    def register_weight(self, name, w):  # type: ignore[no-untyped-def]
        super().register_weight(name, w)
        self.snapshots.append(self.buffer.snapshot())

    def matmul(self, name, x):  # type: ignore[no-untyped-def]
        out = super().matmul(name, x)
        self.snapshots.append(self.buffer.snapshot())
        self.seen.append((np.ascontiguousarray(x, dtype=np.float32).tobytes(), out.tobytes()))
        return out


def test_shared_memory_never_holds_plaintext(service, tiny):
    bridge = SpyingBridge(service.config.socket_path, load_reference_values())
    bridge.snapshots, bridge.seen = [], []  # type: ignore[attr-defined]
    with bridge:
        model = ChatModel.from_gguf(tiny, backend=bridge)
        model.generate("hello there", max_new_tokens=6)
    weights = [
        np.ascontiguousarray(w, dtype=np.float32).tobytes()
        for w in model.model.__dict__.values()
        if isinstance(w, np.ndarray) and w.size > 64
    ]
    probes = [w[:48] for w in weights if len(w) >= 48]
    for x, out in bridge.seen:  # type: ignore[attr-defined]
        probes += [x[:32], out[:32]]
    assert bridge.snapshots and len(probes) > 10
    # the device side wrote into the same segment: every snapshot covers both regions
    for snap in bridge.snapshots[:: max(1, len(bridge.snapshots) // 40)] + bridge.snapshots[-1:]:
        for probe in probes:
            if any(probe):  # an all-zero probe would match unused buffer space
                assert probe not in snap


def test_insecure_baseline_is_refused_unless_enabled(service, tiny):
    bridge = BridgeBackend(
        service.config.socket_path, load_reference_values(), insecure_plaintext=True
    )
    with pytest.raises(BridgeRefused, match="insecure plaintext"):
        bridge.connect()
    bridge.close()


def _refused(config: ServiceConfig, reference: ReferenceValues, match: str) -> None:
    svc = AcceleratorService(config).start()
    try:
        bridge = BridgeBackend(config.socket_path, reference)
        with pytest.raises(BridgeRefused, match=match):
            bridge.connect()
        assert bridge._link is None  # no key, nothing sent
        bridge.close()
    finally:
        svc.stop()


def test_wrong_device_root_is_refused(tmp_path):
    rogue = Vendor.create(NOW).issue_device("ROGUE", NOW)
    _refused(
        ServiceConfig(socket_path=tmp_path / "a.sock", device=rogue),
        load_reference_values(),
        "does not chain to the pinned device root",
    )


def test_measurement_not_in_reference_values_is_refused(tmp_path):
    measurements = dict(DEFAULT_MEASUREMENTS, driver="00" * 48)
    _refused(
        ServiceConfig(
            socket_path=tmp_path / "a.sock", device=device_identity(NOW), measurements=measurements
        ),
        load_reference_values(),
        "measurement driver",
    )


def test_debug_mode_and_cc_off_are_refused(tmp_path):
    _refused(
        ServiceConfig(socket_path=tmp_path / "a.sock", device=device_identity(NOW), debug=True),
        load_reference_values(),
        "debug mode",
    )
    _refused(
        ServiceConfig(socket_path=tmp_path / "b.sock", device=device_identity(NOW), cc_mode=False),
        load_reference_values(),
        "confidential-computing",
    )


def test_revoked_device_is_refused(tmp_path):
    device = device_identity(NOW)
    pinned = load_reference_values()
    revoked = ReferenceValues(
        pinned.vendor_root, pinned.signed_rim, frozenset({device.cert.serial_number})
    )
    _refused(ServiceConfig(socket_path=tmp_path / "a.sock", device=device), revoked, "revoked")


def test_tampered_rim_is_refused(tmp_path):
    pinned = load_reference_values()
    forged = Vendor.create(NOW).sign_rim({"measurements": DEFAULT_MEASUREMENTS})
    _refused(
        ServiceConfig(socket_path=tmp_path / "a.sock", device=device_identity(NOW)),
        ReferenceValues(pinned.vendor_root, forged),
        "RIM signature",
    )


def test_stale_nonce_report_is_refused():
    """A report made for an earlier handshake does not verify for a new nonce."""
    from enclave_runtime.gpu_bridge.attestation import verify_report
    from reference_enclave.gpu_bridge.vendor import make_report

    device = device_identity(NOW)
    share, device_share = os.urandom(32), os.urandom(32)
    old = make_report(
        device,
        nonce=b"\x01" * 32,
        enclave_share=share,
        device_share=device_share,
        measurements=DEFAULT_MEASUREMENTS,
        cc_mode=True,
        debug=False,
        version="1",
    )
    reference = load_reference_values()
    verify_report(old, reference, nonce=b"\x01" * 32, enclave_share=share, now=NOW)
    with pytest.raises(BridgeRefused, match="stale nonce"):
        verify_report(old, reference, nonce=b"\x02" * 32, enclave_share=share, now=NOW)


def _pair(rotate_after: int = 1 << 32, **kw):  # type: ignore[no-untyped-def]
    export = derive_export(os.urandom(32), os.urandom(48))
    return (
        Channel(export, sending=Direction.ENCLAVE_TO_DEVICE, rotate_after=rotate_after, **kw),
        Channel(export, sending=Direction.DEVICE_TO_ENCLAVE, rotate_after=rotate_after, **kw),
    )


def test_replayed_reordered_flipped_and_misdirected_messages_are_refused():
    enclave, device = _pair()
    a = enclave.seal(Kind.INPUT, b"desc-a", b"activation a")
    b = enclave.seal(Kind.INPUT, b"desc-b", b"activation b")
    with pytest.raises(BridgeRefused, match="reordered"):
        device.open(b)
    assert device.open(a) == b"activation a"
    with pytest.raises(BridgeRefused, match="replayed"):
        device.open(a)
    flipped = type(b)(
        b.direction,
        b.epoch,
        b.counter,
        b.kind,
        b.descriptor,
        bytes([b.ciphertext[0] ^ 1]) + b.ciphertext[1:],
    )
    with pytest.raises(BridgeRefused, match="authentication failed"):
        device.open(flipped)
    other_desc = type(b)(b.direction, b.epoch, b.counter, b.kind, b"desc-x", b.ciphertext)
    with pytest.raises(BridgeRefused, match="authentication failed"):
        device.open(other_desc)
    reply = device.seal(Kind.OUTPUT, b"r", b"result")
    with pytest.raises(BridgeRefused, match="direction"):
        device.open(reply)  # a device-to-enclave message fed back to the device
    relabelled = type(reply)(
        Direction.ENCLAVE_TO_DEVICE, reply.epoch, 1, reply.kind, reply.descriptor, reply.ciphertext
    )
    with pytest.raises(BridgeRefused, match="authentication failed"):
        device.open(relabelled)  # other direction's key and AAD
    assert enclave.open(reply) == b"result"
    assert device.open(b) == b"activation b"  # the genuine message still opens in order


def test_rotation_and_exhaustion():
    enclave, device = _pair(rotate_after=3)
    for i in range(10):
        sealed = enclave.seal(Kind.INPUT, b"d", bytes([i]))
        assert device.open(sealed) == bytes([i])
    assert sealed.epoch == 3
    stuck, _ = _pair(rotate_after=3, counter_limit=3, auto_rotate=False)
    for _ in range(3):
        stuck.seal(Kind.INPUT, b"d", b"x")
    with pytest.raises(BridgeRefused, match="exhausted"):
        stuck.seal(Kind.INPUT, b"d", b"x")


def test_tampered_bounce_buffer_stops_the_session(service, tiny):
    """The host flips a ciphertext bit in shared memory: the device computes nothing."""
    computed: list[str] = []

    class CountingDevice(NumpyDevice):
        def matmul(self, name, x):  # type: ignore[no-untyped-def]
            computed.append(name)
            return super().matmul(name, x)

    service.config.backend_factory = CountingDevice

    class FlippingBridge(BridgeBackend):
        def matmul(self, name, x):  # type: ignore[no-untyped-def]
            original = self.buffer.write

            def write(to_device, data):  # type: ignore[no-untyped-def]
                return original(to_device, bytes([data[0] ^ 0x80]) + data[1:])

            self.buffer.write = write  # type: ignore[method-assign]
            try:
                return super().matmul(name, x)
            finally:
                self.buffer.write = original  # type: ignore[method-assign]

    bridge = FlippingBridge(service.config.socket_path, load_reference_values())
    with bridge:
        bridge.register_weight("w", np.ones((4, 3), dtype=np.float32))
        with pytest.raises(BridgeRefused, match="authentication failed"):
            bridge.matmul("w", np.ones((1, 3), dtype=np.float32))
    assert computed == []


def test_cli_serve_and_reference_values(tmp_path, tiny):
    values = run_cli(["accelerator", "reference-values", "--json"])
    assert values.exit_code == 0, values.stderr
    assert '"firmware"' in values.stdout
    sock = tmp_path / "cli.sock"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("enclave-audit")),
            "accelerator",
            "serve",
            "--socket",
            str(sock),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        with BridgeBackend(sock, load_reference_values()) as bridge:
            bridge.register_weight("w", np.eye(3, dtype=np.float32))
            out = bridge.matmul("w", np.array([[1, 2, 3]], dtype=np.float32))
        assert out.tolist() == [[1.0, 2.0, 3.0]]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_file_backed_bounce_buffer_in_shared_directory(service, tiny):
    """The enclave simulation's path: a buffer file in the directory both sides see."""
    directory = service.config.socket_path.parent
    local = ChatModel.from_gguf(tiny).generate("hi", max_new_tokens=8)
    with BridgeBackend(
        service.config.socket_path, load_reference_values(), buffer_dir=directory
    ) as bridge:
        name = bridge.buffer.name
        assert name.startswith("file:bridge-") and (directory / name[5:]).exists()
        remote = ChatModel.from_gguf(tiny, backend=bridge).generate("hi", max_new_tokens=8)
    assert remote.token_ids == local.token_ids
    assert not (directory / name[5:]).exists()


def test_buffer_names_cannot_escape_the_directory(tmp_path):
    from enclave_audit.errors import ProtocolError
    from enclave_runtime.gpu_bridge.transport import BounceBuffer

    for bad in ("file:../etc/passwd", "file:bridge-x.buf", "file:/tmp/bridge-0.buf"):
        with pytest.raises(ProtocolError):
            BounceBuffer.attach(bad, tmp_path)
