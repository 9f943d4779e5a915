# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Key types of the PKI: generation, naming, serialisation and signatures."""

from __future__ import annotations

from .errors import InvalidInput

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
    from cryptography.hazmat.primitives.serialization import pkcs12
except ImportError:  # reported by deps.missing()
    pass

# The key types a domain CA or a device key may have, by the names the API and modules use.
KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096")
DEFAULT_KEY_TYPE = "ecdsa-p256"

_CURVES = {"ecdsa-p256": "secp256r1", "ecdsa-p384": "secp384r1"}
_RSA_SIZES = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}


def generate_private_key(key_type):
    """Generate a private key of one of KEY_TYPES."""
    if key_type in _CURVES:
        return ec.generate_private_key(ec.SECP256R1() if key_type == "ecdsa-p256" else ec.SECP384R1())
    if key_type in _RSA_SIZES:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_SIZES[key_type])
    raise InvalidInput("unsupported key type %r; use one of %s" % (key_type, ", ".join(KEY_TYPES)))


def key_type_of(key):
    """Name the key type of a public or private key, or raise InvalidInput if the PKI does not use it."""
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        for name, curve in _CURVES.items():
            if key.curve.name == curve:
                return name
        raise InvalidInput("unsupported elliptic curve %s" % key.curve.name)
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        for name, size in _RSA_SIZES.items():
            if key.key_size == size:
                return name
        raise InvalidInput("unsupported RSA key size %d; use 2048, 3072 or 4096 bits" % key.key_size)
    raise InvalidInput("unsupported key algorithm %s" % type(key).__name__)


def hash_for(key):
    """The signature hash the PKI uses with a key: SHA-384 for P-384, SHA-256 otherwise."""
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def sign(private_key, data, hash_algorithm=None):
    """Sign data (PKCS#1 v1.5 for RSA, ECDSA with a DER signature)."""
    hash_algorithm = hash_algorithm or hash_for(private_key)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, padding.PKCS1v15(), hash_algorithm)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(hash_algorithm))
    raise InvalidInput("cannot sign with a %s key" % type(private_key).__name__)


def verify_signature(public_key, signature, data, hash_algorithm):
    """Return True if signature over data verifies with public_key (RSA PKCS#1 v1.5, ECDSA, EdDSA)."""
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            public_key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def private_key_to_pem(private_key):
    """Unencrypted PKCS#8 PEM: the caller stores it with mode 0600 or encrypts it at rest."""
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(data, password=None):
    """Load a PEM or DER private key; InvalidInput when it is not one."""
    loader = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
    try:
        return loader(data, password=password)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("not a readable private key: %s" % exc) from exc


def public_key_der(key):
    """SubjectPublicKeyInfo DER of a public or private key."""
    if hasattr(key, "public_key"):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key_der(spki_der):
    """Load a SubjectPublicKeyInfo; InvalidInput when it is not one."""
    try:
        return serialization.load_der_public_key(spki_der)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("not a readable public key: %s" % exc) from exc


def same_public_key(a, b):
    """True when two keys (public or private, or certificates' keys) are the same public key."""
    return public_key_der(a) == public_key_der(b)


# PKCS#12 files the server hands out: PBES2 with AES-256-CBC and a SHA-256 MAC, which OpenSSL 1.1 and 3
# read (the legacy RC2/3DES defaults of older tools are not offered). PBKDF2 rounds as OpenSSL 3 writes them.
PKCS12_KDF_ROUNDS = 2048
# A password protects the key of a download or a PKCS#12 file; shorter ones are refused.
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def check_password(password, what="password"):
    """The password as bytes; InvalidInput when it is too short or too long to protect a private key."""
    if not isinstance(password, str) or not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidInput("%s must be %d to %d characters" % (what, MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH))
    return password.encode("utf-8")


def encrypted_private_key_pem(private_key, password):
    """PKCS#8 PEM encrypted with password (PBES2, AES-256-CBC): `openssl pkey -in key.pem` asks for it."""
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(check_password(password)),
    )


def pkcs12_bundle(name, private_key, certificate, chain, password):
    """DER PKCS#12 of private_key, its certificate and the CA chain, protected by password."""
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(PKCS12_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(check_password(password))
    )
    return pkcs12.serialize_key_and_certificates(
        name.encode("utf-8"), private_key, certificate, list(chain) or None, encryption
    )


def load_pkcs12(data, password):
    """(private key, certificate, CA certificates) of a PKCS#12; InvalidInput for a wrong password or bad data."""
    try:
        key, certificate, chain = pkcs12.load_key_and_certificates(data, password.encode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cannot open the PKCS#12 (wrong password, or not a PKCS#12): %s" % exc) from exc
    return key, certificate, list(chain or ())
