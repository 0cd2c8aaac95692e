"""EIF writer/reader/measurement round trips and known PCR values."""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import cbor2
import pytest
from conftest import run_cli, shared_fixture
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.eif import (
    EifReader,
    SectionType,
    describe_eif,
    extend_string,
    measure_parts,
    pcr8_from_certificate,
    write_eif,
)
from builder.eif.format import HEADER_SIZE, restamp_crc
from builder.eif.measure import crc32_combine

BUILD_TIME = "2025-01-01T00:00:00+00:00"
SINGLE_RAMDISK_PCR2 = (
    "21b9efbc184807662e966d34f390821309eeac6802309798826296bf3e8bec7c"
    "10edb30948c90ba67310f7b964fc500a"
)


def _write(out: Path, parts, ramdisks=None, **kw):  # type: ignore[no-untyped-def]
    return write_eif(
        out,
        kernel=parts.kernel,
        cmdline=parts.cmdline,
        ramdisks=ramdisks if ramdisks is not None else [parts.boot, parts.app],
        name=kw.pop("name", "test"),
        version=kw.pop("version", "1.0"),
        build_time=kw.pop("build_time", BUILD_TIME),
        **kw,
    ).pcrs


def test_assemble_then_describe_gives_predicted_pcrs(tmp_path, parts):
    predicted = measure_parts(parts.kernel, parts.cmdline, [parts.boot, parts.app])
    written = _write(tmp_path / "a.eif", parts)
    described = describe_eif(tmp_path / "a.eif")
    assert written == predicted
    assert described.pcrs == predicted
    assert described.crc_ok
    assert not described.is_signed
    # independent recomputation of the formulas from the raw inputs
    k, c = parts.kernel.read_bytes(), parts.cmdline.encode()
    b, a = parts.boot.read_bytes(), parts.app.read_bytes()

    def ext(data: bytes) -> bytes:
        return hashlib.sha384(bytes(48) + hashlib.sha384(data).digest()).digest()

    assert predicted[0] == ext(k + c + b + a)
    assert predicted[1] == ext(k + c + b)
    assert predicted[2] == ext(a)


def test_layout_matches_nitro_cli_order_and_crc(tmp_path, parts):
    out = tmp_path / "a.eif"
    _write(out, parts)
    data = out.read_bytes()
    with EifReader.open(out) as reader:
        types = [s.type for s in reader.sections]
        assert types == [
            SectionType.KERNEL,
            SectionType.CMDLINE,
            SectionType.METADATA,
            SectionType.RAMDISK,
            SectionType.RAMDISK,
        ]
        assert reader.sections[0].header_offset == HEADER_SIZE
        assert reader.read(reader.cmdline) == parts.cmdline.encode()  # no trailing NUL
        meta = reader.metadata()
    assert list(meta) == [
        "ImageName",
        "ImageVersion",
        "BuildMetadata",
        "DockerInfo",
        "CustomMetadata",
    ]
    assert meta["BuildMetadata"]["BuildTime"] == BUILD_TIME
    stored = int.from_bytes(data[544:548], "big")
    assert stored == zlib.crc32(data[:544] + data[548:])
    assert (
        len(data)
        == HEADER_SIZE
        + 12 * 5
        + sum(p.stat().st_size for p in (parts.kernel, parts.boot, parts.app))
        + len(parts.cmdline)
        + reader.sections[2].size
    )


def test_assembling_twice_is_byte_identical(tmp_path, parts, signing_pair):
    for signed in (False, True):
        signing = (signing_pair.cert, signing_pair.key) if signed else None
        _write(tmp_path / "a.eif", parts, signing=signing)
        _write(tmp_path / "b.eif", parts, signing=signing)
        assert (tmp_path / "a.eif").read_bytes() == (tmp_path / "b.eif").read_bytes()


def test_build_time_changes_file_not_pcrs(tmp_path, parts):
    a = _write(tmp_path / "a.eif", parts)
    b = _write(tmp_path / "b.eif", parts, build_time="2026-06-01T12:00:00+00:00")
    assert a == b
    assert (tmp_path / "a.eif").read_bytes() != (tmp_path / "b.eif").read_bytes()


def test_single_ramdisk_pcr2_constant_and_pcr0_equals_pcr1(tmp_path, parts):
    pcrs = _write(tmp_path / "one.eif", parts, ramdisks=[parts.boot])
    assert pcrs.hex(2) == SINGLE_RAMDISK_PCR2
    assert pcrs[0] == pcrs[1]
    assert describe_eif(tmp_path / "one.eif").pcrs.hex(2) == SINGLE_RAMDISK_PCR2


def test_pcr_vectors_from_shared_fixtures():
    expected = json.loads(shared_fixture("nitro", "expected.json").read_text())
    vectors = {v["what"].split(" ")[0]: v for v in expected["pcr_vectors"]}
    pcr3 = vectors["PCR3"]
    assert extend_string(pcr3["input"]).hex() == pcr3["value"]
    assert pcr3["value"].startswith("78fce75d")
    single = next(v for v in expected["pcr_vectors"] if v.get("value", "").startswith("21b9efbc"))
    assert single["value"] == SINGLE_RAMDISK_PCR2
    # PCR4 of every real document = extend(instance id), instance id = module_id before "-enc"
    documents = expected["documents"]
    assert len(documents) >= 6
    for doc in documents:
        instance_id = doc["module_id"].split("-enc")[0]
        assert extend_string(instance_id).hex() == doc["pcrs"]["4"], doc["file"]


def test_signed_image_pcr8_and_signature_check(tmp_path, parts, signing_pair):
    out = tmp_path / "signed.eif"
    pcrs = _write(out, parts, signing=(signing_pair.cert, signing_pair.key))
    desc = describe_eif(out)
    assert desc.is_signed and desc.signature_ok and desc.crc_ok
    assert desc.pcrs[8] == pcr8_from_certificate(signing_pair.cert_pem) == pcrs[8]
    unsigned = _write(tmp_path / "plain.eif", parts)
    assert desc.pcrs[0] == unsigned[0]  # signing never changes PCR0
    nitro = desc.to_nitro()
    assert list(nitro) == [
        "EifVersion",
        "Measurements",
        "IsSigned",
        "SigningCertificate",
        "CheckCRC",
        "SignatureCheck",
        "ImageName",
        "ImageVersion",
        "Metadata",
    ]
    assert set(nitro["SigningCertificate"]) == {
        "IssuerName",
        "Algorithm",
        "NotBefore",
        "NotAfter",
        "Signature",
    }
    assert nitro["Measurements"]["PCR8"] == pcrs.hex(8)


def test_signature_section_is_serde_cbor_with_int_arrays(tmp_path, parts, signing_pair):
    out = tmp_path / "signed.eif"
    pcrs = _write(out, parts, signing=(signing_pair.cert, signing_pair.key))
    with EifReader.open(out) as reader:
        assert reader.signature is not None and reader.sections[-1] == reader.signature
        raw = reader.read(reader.signature)
    outer = cbor2.loads(raw)
    assert isinstance(outer, list) and len(outer) == 1
    entry = outer[0]
    assert list(entry) == ["signing_certificate", "signature"]
    assert isinstance(entry["signing_certificate"], list)
    assert bytes(entry["signing_certificate"]) == signing_pair.cert_pem
    cose = cbor2.loads(bytes(entry["signature"]))
    assert cose[0] == bytes.fromhex("a1013822") and cose[1] == {}
    payload = cose[2]
    assert payload.startswith(bytes.fromhex("a26e") + b"register_index" + b"\x00\x6e")
    assert cbor2.loads(payload) == {"register_index": 0, "register_value": list(pcrs[0])}
    assert len(cose[3]) == 96


def test_p256_signer_uses_es256(tmp_path, parts, make_signer):
    pair = make_signer("p256", ec.SECP256R1())
    out = tmp_path / "p256.eif"
    _write(out, parts, signing=(pair.cert, pair.key))
    desc = describe_eif(out)
    assert desc.signature_ok


def test_signature_from_another_image_fails_signature_check(tmp_path, parts, signing_pair):
    a = tmp_path / "a.eif"
    _write(a, parts, signing=(signing_pair.cert, signing_pair.key))
    other_kernel = tmp_path / "k2"
    other_kernel.write_bytes(parts.kernel.read_bytes()[:-1] + b"\x00")
    b = tmp_path / "b.eif"
    write_eif(
        b,
        kernel=other_kernel,
        cmdline=parts.cmdline,
        ramdisks=[parts.boot, parts.app],
        name="test",
        version="1.0",
        build_time=BUILD_TIME,
        signing=(signing_pair.cert, signing_pair.key),
    )
    # graft a's signature section onto b (same size: deterministic-length CBOR may differ)
    with EifReader.open(a) as ra, EifReader.open(b) as rb:
        sig_a = ra.read(ra.signature)  # type: ignore[arg-type]
        sig_b_section = rb.signature
        assert sig_b_section is not None
    data = bytearray(b.read_bytes())
    if len(sig_a) == sig_b_section.size:
        data[sig_b_section.data_offset : sig_b_section.end] = sig_a
        restamp_crc(data)
        grafted = tmp_path / "grafted.eif"
        grafted.write_bytes(bytes(data))
        desc = describe_eif(grafted)
        assert desc.crc_ok and desc.is_signed and desc.signature_ok is False
        assert "different PCR0" in (desc.signature_detail or "")
        result = run_cli(["describe-eif", str(grafted), "--json"])
        assert result.exit_code == 18
        assert json.loads(result.stdout)["SignatureCheck"] is False


def test_flipped_signature_byte_fails_cose(tmp_path, parts, signing_pair):
    out = tmp_path / "s.eif"
    _write(out, parts, signing=(signing_pair.cert, signing_pair.key))
    with EifReader.open(out) as reader:
        sig = reader.signature
        assert sig is not None
    data = bytearray(out.read_bytes())
    data[sig.end - 3] ^= 0x01  # inside the raw r||s, still a valid CBOR uint
    restamp_crc(data)
    out.write_bytes(bytes(data))
    desc = describe_eif(out)
    assert desc.crc_ok and desc.signature_ok is False


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_crc32_combine_matches_zlib(a, b):
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_streaming_writer_and_reader_memory_is_bounded(tmp_path, parts):
    import tracemalloc

    big = tmp_path / "big.cpio"
    with big.open("wb") as fh:
        block = bytes(range(256)) * 4096
        for _ in range(64):  # 64 MiB
            fh.write(block)
    tracemalloc.start()
    write_eif(
        tmp_path / "big.eif",
        kernel=parts.kernel,
        cmdline=parts.cmdline,
        ramdisks=[parts.boot, big],
        name="big",
        version="1",
        build_time=BUILD_TIME,
    )
    describe_eif(tmp_path / "big.eif")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 40 << 20, f"peak {peak} bytes for a 64 MiB image"


@pytest.mark.parametrize("bad_cmdline", ["a\x00b"])
def test_cmdline_with_nul_is_refused(tmp_path, parts, bad_cmdline):
    from enclave_audit.errors import InvalidInput

    with pytest.raises(InvalidInput):
        write_eif(
            tmp_path / "x.eif",
            kernel=parts.kernel,
            cmdline=bad_cmdline,
            ramdisks=[parts.boot],
            name="x",
            version="1",
            build_time=BUILD_TIME,
        )


@pytest.mark.parametrize("signed", [False, True])
def test_writer_digests_are_the_files_and_recorded_crcs_are_checked(
    tmp_path, parts, signing_pair, signed
):
    """The digests taken while writing are the file's; a wrong recorded CRC leaves nothing."""
    from builder.eif import write_eif
    from enclave_audit.errors import DigestMismatch

    common = {
        "kernel": parts.kernel,
        "cmdline": parts.cmdline,
        "ramdisks": [parts.boot, parts.app],
        "name": "test",
        "version": "1.0",
        "build_time": BUILD_TIME,
        "signing": (signing_pair.cert, signing_pair.key) if signed else None,
    }
    out = tmp_path / "a.eif"
    written = write_eif(out, **common)
    data = out.read_bytes()
    assert written.size == len(data)
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert written.sha384 == hashlib.sha384(data).hexdigest()
    assert written.pcrs == describe_eif(out).pcrs
    assert describe_eif(out).crc_ok
    # the same image from recorded CRCs (no CRC pre-pass over the ramdisks)
    known = {p: zlib.crc32(p.read_bytes()) for p in (parts.boot, parts.app)}
    again = write_eif(tmp_path / "b.eif", known_crc32=known, **common)
    assert (tmp_path / "b.eif").read_bytes() == data and again == written
    known[parts.app] ^= 0x10
    with pytest.raises(DigestMismatch, match="recorded CRC is wrong"):
        write_eif(tmp_path / "c.eif", known_crc32=known, **common)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".eif", ".tmp")) == [
        "a.eif",
        "b.eif",
    ]
    assert not any(p.name.startswith(".c.eif") for p in tmp_path.iterdir())
