"""CMS EnvelopedData (CiphertextForRecipient): real AWS sample, OpenSSL both ways, bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import need_tool
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave_audit.errors import ProtocolError
from enclave_runtime.cms import (
    build_enveloped_data,
    open_enveloped_data,
    parse_enveloped_data,
    subject_key_identifier,
)

#: A real KMS CiphertextForRecipient (493 bytes, BER) from aws/aws-nitro-enclaves-sdk-c,
#: tests/cms_test.c (Apache-2.0), with the parts that test expects to be extracted.
AWS_SAMPLE = bytes.fromhex(
    "308006092a864886f70d010703a08030800201023182016b3082016702010280207087b55df94ba3255cdf3c01840a2a"
    "a3ec93620625d601cf56f97bde7a3d2eb1303c06092a864886f70d010107302fa00f300d060960864801650304020105"
    "00a11c301a06092a864886f70d010108300d0609608648016503040201050004820100a0614593a030ee336bfff07661"
    "8b0130d045de9f4d183d83c5da882f13abc1f4bf0d13645869393442ab582e6a04d697d52d5623e367e7e92db6ebd2bd"
    "07735b153f2826bee5df8e16c713a1e85cb6ba85e88681335c7e941a94abf0c0113e030916e2b6e1826db4ffb919b8e1"
    "b6f59ec277e58de40b0ffeecaa0d94fbcb290374ed3dfc35d31a8f43ae1300fe20fdd986d4b8565657451f9dc693e134"
    "678920221c58a28da5e71ab6b31caa445825a6385c6c4f5d5d5ebbc2c2570e9647fded36b559647bcb27e58886255f58"
    "2c63d863ecec307d15763abce0b1b812a550938ca4e2d28a74563db52367558d3e2e82ac2a27fe5c9391a007c15f75b9"
    "0ab0dd308006092a864886f70d010701301d060960864801650304012a0410688c6d5f7f31b0fecedf09f2e7c99ac9a0"
    "80043070e5caaffd49ad24efe15bf903be9d19895b777d269b57b025f6f67e7ef93f94464515f2ebe034ea0b7621a1ff"
    "19292e00000000000000000000"
)
AWS_SAMPLE_IV = bytes.fromhex("688c6d5f7f31b0fecedf09f2e7c99ac9")
AWS_SAMPLE_CIPHERTEXT = bytes.fromhex(
    "70e5caaffd49ad24efe15bf903be9d19895b777d269b57b025f6f67e7ef93f94464515f2ebe034ea0b7621a1ff19292e"
)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, key: rsa.RSAPrivateKey) -> Path:
    """key.pem and a self-signed cert.pem (with SKI) for OpenSSL."""
    directory = tmp_path_factory.mktemp("cms")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enclave")])
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return directory


def test_real_kms_sample_parses_like_the_c_sdk() -> None:
    parts = parse_enveloped_data(AWS_SAMPLE)
    assert parts.version == 2
    assert len(parts.recipient_id) == 32
    assert len(parts.encrypted_key) == 256
    assert parts.encrypted_key[:4] == bytes.fromhex("a0614593")
    assert parts.encrypted_key[-4:] == bytes.fromhex("b90ab0dd")
    assert parts.iv == AWS_SAMPLE_IV
    assert parts.ciphertext == AWS_SAMPLE_CIPHERTEXT


def test_we_emit_the_aws_layout(key: rsa.RSAPrivateKey) -> None:
    data = build_enveloped_data(b"k" * 32, key.public_key())
    # same header as AWS's sample up to the SKI, same key-transport algorithm bytes
    assert data[:33] == AWS_SAMPLE[:33]
    oaep_alg = AWS_SAMPLE[65:127]
    assert data[65:127] == oaep_alg
    assert data[33:65] == subject_key_identifier(key.public_key())
    assert data.endswith(b"\x00" * 10)
    parts = parse_enveloped_data(data)
    assert len(parts.ciphertext) == 48  # a 32-byte key + a full padding block, as AWS
    big = build_enveloped_data(bytes(4100), key.public_key())
    # 4112 content bytes split 1000+1000+1000+1000+112, as in real KMS responses
    assert big.count(b"\x04\x82\x03\xe8") == 4 and b"\x04\x70" in big
    assert open_enveloped_data(big, key) == bytes(4100)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 32, 999, 1000, 1001, 4096])
def test_round_trip(key: rsa.RSAPrivateKey, size: int) -> None:
    plaintext = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert open_enveloped_data(build_enveloped_data(plaintext, key.public_key()), key) == plaintext


def test_public_key_as_spki_der(key: rsa.RSAPrivateKey) -> None:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert open_enveloped_data(build_enveloped_data(b"hi", der), key) == b"hi"
    with pytest.raises(ProtocolError, match="SubjectPublicKeyInfo"):
        build_enveloped_data(b"hi", b"\x30\x03junk")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ProtocolError, match="at least 2048"):
        build_enveloped_data(b"hi", small.public_key())


def test_wrong_key_and_tampering(key: rsa.RSAPrivateKey) -> None:
    data = bytearray(build_enveloped_data(b"secret data key!" * 2, key.public_key()))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ProtocolError, match="does not decrypt"):
        open_enveloped_data(bytes(data), other)
    flipped = bytearray(data)
    flipped[200] ^= 0x01  # inside encryptedKey
    with pytest.raises(ProtocolError, match="does not decrypt"):
        open_enveloped_data(bytes(flipped), key)
    truncated = bytes(data[:-3])
    with pytest.raises(ProtocolError, match="truncated"):
        open_enveloped_data(truncated, key)
    with pytest.raises(ProtocolError, match="trailing"):
        open_enveloped_data(bytes(data) + b"\x00", key)


def test_openssl_decrypts_what_we_build(pki: Path, key: rsa.RSAPrivateKey) -> None:
    openssl = need_tool("openssl")
    plaintext = bytes(range(256)) * 9
    (pki / "ours.ber").write_bytes(build_enveloped_data(plaintext, key.public_key()))
    out = subprocess.run(
        [
            openssl,
            "cms",
            "-decrypt",
            "-inform",
            "DER",
            "-in",
            str(pki / "ours.ber"),
            "-inkey",
            str(pki / "key.pem"),
            "-binary",
        ],
        capture_output=True,
        check=True,
    )
    assert out.stdout == plaintext


@pytest.mark.parametrize("variant", [[], ["-keyid"], ["-stream"]], ids=["issuer", "ski", "ber"])
def test_we_open_what_openssl_builds(pki: Path, key: rsa.RSAPrivateKey, variant: list[str]) -> None:
    openssl = need_tool("openssl")
    plaintext = bytes(range(200)) * 13
    (pki / "plain.bin").write_bytes(plaintext)
    out = pki / f"openssl{''.join(variant)}.der"
    subprocess.run(
        [
            openssl,
            "cms",
            "-encrypt",
            "-binary",
            "-outform",
            "DER",
            "-aes-256-cbc",
            "-recip",
            str(pki / "cert.pem"),
            *variant,
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
            "-keyopt",
            "rsa_mgf1_md:sha256",
            "-in",
            str(pki / "plain.bin"),
            "-out",
            str(out),
        ],
        capture_output=True,
        check=True,
    )
    data = out.read_bytes()
    assert parse_enveloped_data(data).version == (2 if variant == ["-keyid"] else 0)
    assert open_enveloped_data(data, key) == plaintext


def test_sha1_oaep_and_other_ciphers_are_refused(pki: Path) -> None:
    openssl = need_tool("openssl")
    (pki / "p.bin").write_bytes(b"x" * 40)
    for name, cipher, keyopts in (
        ("sha1", "-aes-256-cbc", ["-keyopt", "rsa_padding_mode:oaep"]),
        ("pkcs1", "-aes-256-cbc", []),
        (
            "aes128",
            "-aes-128-cbc",
            [
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
                "-keyopt",
                "rsa_mgf1_md:sha256",
            ],
        ),
    ):
        out = pki / f"{name}.der"
        subprocess.run(
            [
                openssl,
                "cms",
                "-encrypt",
                "-binary",
                "-outform",
                "DER",
                cipher,
                "-recip",
                str(pki / "cert.pem"),
                *keyopts,
                "-in",
                str(pki / "p.bin"),
                "-out",
                str(out),
            ],
            capture_output=True,
            check=True,
        )
        with pytest.raises(ProtocolError, match="CMS:"):
            parse_enveloped_data(out.read_bytes())


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"", "truncated"),
        (b"\x30", "truncated"),
        (b"\x30\x80", "end-of-contents"),
        (b"\x04\x80\x00\x00", "indefinite length on a primitive"),
        (b"\x30\x85\x01\x02\x03\x04\x05", "length field too long"),
        (b"\x30\x03\x02\x01\x02", "ContentInfo"),
        (b"\x1f\x01\x00", "high tag"),
        (b"\x30\x80" * 2000, "nested too deeply"),
        (bytes(70 * 1024), "larger than"),
    ],
)
def test_malformed_input_is_one_protocol_error(data: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle):
        parse_enveloped_data(data)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_mutations_never_raise_foreign_errors(data: st.DataObject) -> None:
    base = bytearray(AWS_SAMPLE)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(base) - 1))
        base[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    try:
        parse_enveloped_data(bytes(base[:cut]))
    except ProtocolError:
        pass
