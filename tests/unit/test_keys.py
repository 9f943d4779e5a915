# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""keys: the PKI's key types, their names, serialisation and signatures (checked against openssl too)."""

from __future__ import annotations

import pytest
from conftest import openssl
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from trustpoint_core import keys
from trustpoint_core.errors import InvalidInput

DATA = b"data signed by a device key"
SIZES = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}
CURVES = {"ecdsa-p256": "secp256r1", "ecdsa-p384": "secp384r1"}


@pytest.fixture(scope="module")
def generated():
    """One key of every KEY_TYPE for the module (RSA-4096 generation is slow)."""
    return {key_type: keys.generate_private_key(key_type) for key_type in keys.KEY_TYPES}


def test_key_types_list():
    """The PKI offers P-256, P-384 and RSA 2048/3072/4096; P-256 is the default."""
    assert set(keys.KEY_TYPES) == set(SIZES) | set(CURVES)
    assert keys.DEFAULT_KEY_TYPE == "ecdsa-p256"


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_generate_gives_the_named_type(key_type, generated):
    """generate_private_key makes the named curve or modulus size; key_type_of names it back, private or public."""
    key = generated[key_type]
    if key_type in SIZES:
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size == SIZES[key_type]
        assert key.public_key().public_numbers().e == 65537
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == CURVES[key_type]
    assert keys.key_type_of(key) == key_type
    assert keys.key_type_of(key.public_key()) == key_type


@pytest.mark.parametrize("key_type", ["rsa-1024", "ecdsa-p521", "ed25519", "", "RSA-2048"])
def test_generate_unsupported_type(key_type):
    """An unknown key type name is InvalidInput that lists the supported ones."""
    with pytest.raises(InvalidInput) as info:
        keys.generate_private_key(key_type)
    assert "ecdsa-p256" in str(info.value)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (lambda: ec.generate_private_key(ec.SECP521R1()), "unsupported elliptic curve secp521r1"),
        (lambda: ec.generate_private_key(ec.SECP256K1()).public_key(), "unsupported elliptic curve secp256k1"),
        (lambda: rsa.generate_private_key(65537, 1024), "unsupported RSA key size 1024"),  # noqa: S505
        (ed25519.Ed25519PrivateKey.generate, "unsupported key algorithm"),
    ],
    ids=["p521", "secp256k1", "rsa-1024", "ed25519"],
)
def test_key_type_of_unsupported(key, message):
    """key_type_of refuses curves, sizes and algorithms the PKI does not use, saying which."""
    with pytest.raises(InvalidInput) as info:
        keys.key_type_of(key())
    assert message in str(info.value)


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_hash_for(key_type, generated):
    """SHA-384 for P-384, SHA-256 for everything else."""
    expected = hashes.SHA384 if key_type == "ecdsa-p384" else hashes.SHA256
    assert isinstance(keys.hash_for(generated[key_type]), expected)
    assert isinstance(keys.hash_for(generated[key_type].public_key()), expected)


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_sign_and_verify(key_type, generated):
    """A signature verifies with the key's public key, and fails for other data, another key or another hash."""
    key = generated[key_type]
    other = generated["ecdsa-p256" if key_type != "ecdsa-p256" else "ecdsa-p384"]
    signature = keys.sign(key, DATA)
    algorithm = keys.hash_for(key)
    assert keys.verify_signature(key.public_key(), signature, DATA, algorithm)
    assert not keys.verify_signature(key.public_key(), signature, DATA + b"!", algorithm)
    assert not keys.verify_signature(other.public_key(), signature, DATA, algorithm)
    assert not keys.verify_signature(key.public_key(), signature, DATA, hashes.SHA512())


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_sign_with_explicit_hash(key_type, generated):
    """sign honours an explicit hash algorithm."""
    key = generated[key_type]
    signature = keys.sign(key, DATA, hashes.SHA512())
    assert keys.verify_signature(key.public_key(), signature, DATA, hashes.SHA512())


def test_sign_refuses_unsupported_key():
    """Signing with a key type the PKI does not sign with is InvalidInput."""
    with pytest.raises(InvalidInput):
        keys.sign(ed25519.Ed25519PrivateKey.generate(), DATA)


def test_verify_eddsa_signature():
    """verify_signature also checks EdDSA signatures (IDevIDs may carry Ed25519 keys)."""
    key = ed25519.Ed25519PrivateKey.generate()
    signature = key.sign(DATA)
    assert keys.verify_signature(key.public_key(), signature, DATA, None)
    assert not keys.verify_signature(key.public_key(), signature, DATA + b"!", None)


def test_verify_garbage_signature_is_false(generated):
    """A malformed ECDSA signature verifies as False instead of raising."""
    key = generated["ecdsa-p256"]
    assert not keys.verify_signature(key.public_key(), b"\x30\x00", DATA, hashes.SHA256())


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384", "rsa-2048"])
def test_openssl_verifies_our_signature(key_type, generated, tmp_path):
    """`openssl dgst -verify` accepts a signature made by keys.sign."""
    key = generated[key_type]
    (tmp_path / "data").write_bytes(DATA)
    (tmp_path / "sig").write_bytes(keys.sign(key, DATA))
    (tmp_path / "pub.pem").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    digest = "-" + keys.hash_for(key).name
    result = openssl(
        "dgst",
        digest,
        "-verify",
        str(tmp_path / "pub.pem"),
        "-signature",
        str(tmp_path / "sig"),
        str(tmp_path / "data"),
    )
    assert "Verified OK" in result.stdout


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_private_key_pem_round_trip(key_type, generated):
    """private_key_to_pem writes unencrypted PKCS#8; load_private_key reads it (and DER) back to the same key."""
    key = generated[key_type]
    pem = keys.private_key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert keys.same_public_key(keys.load_private_key(pem), key)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert keys.same_public_key(keys.load_private_key(der), key)


@pytest.mark.parametrize(
    ("algorithm", "key_type"), [("EC -pkeyopt ec_paramgen_curve:P-384", "ecdsa-p384"), ("RSA", "rsa-2048")]
)
def test_load_openssl_generated_key(algorithm, key_type, tmp_path):
    """A key made by `openssl genpkey` loads and is named correctly."""
    path = tmp_path / "key.pem"
    openssl("genpkey", "-algorithm", *algorithm.split(), "-out", str(path))
    assert keys.key_type_of(keys.load_private_key(path.read_bytes())) == key_type


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
    ids=["empty", "garbage", "bad-pem"],
)
def test_load_private_key_garbage(data):
    """Data that is not a private key is InvalidInput."""
    with pytest.raises(InvalidInput):
        keys.load_private_key(data)


def test_load_encrypted_key_without_password(generated):
    """An encrypted key without its password is InvalidInput, and loads with it."""
    pem = generated["ecdsa-p256"].private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(InvalidInput):
        keys.load_private_key(pem)
    assert keys.same_public_key(keys.load_private_key(pem, password=b"pw"), generated["ecdsa-p256"])


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_public_key_der_round_trip(key_type, generated):
    """public_key_der of a private or public key is the SPKI; load_public_key_der reads it back."""
    key = generated[key_type]
    spki = keys.public_key_der(key)
    assert spki == keys.public_key_der(key.public_key())
    assert keys.same_public_key(keys.load_public_key_der(spki), key)


def test_load_public_key_der_garbage():
    """Bytes that are not a SubjectPublicKeyInfo are InvalidInput."""
    with pytest.raises(InvalidInput):
        keys.load_public_key_der(b"\x30\x03\x02\x01\x00")


def test_same_public_key(generated):
    """same_public_key: a private key matches its public key, not another key of the same type."""
    key = generated["ecdsa-p256"]
    assert keys.same_public_key(key, key.public_key())
    assert keys.same_public_key(key.public_key(), key)
    assert not keys.same_public_key(key, keys.generate_private_key("ecdsa-p256"))
    assert not keys.same_public_key(key, generated["rsa-2048"])
