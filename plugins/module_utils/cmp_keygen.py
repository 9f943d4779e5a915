# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Central key generation (RFC 9483 4.1.6): a private key the PKI generated, delivered to the device.

The key travels as RFC 9483 asks: an AsymmetricKeyPackage (RFC 5958) in a SignedData signed by the key
generation authority (here the issuing CA), in an EnvelopedData (RFC 5652) for the requester:

- MAC-protected request: PasswordRecipientInfo (pwri), the key-encryption key derived from the shared
  secret with PBKDF2 (RFC 9481 4.4) and wrapped as RFC 3211 says (id-alg-PWRI-KEK with AES-256-CBC);
- signed request: to the requester's certificate, KeyAgreeRecipientInfo (ECDH ephemeral-static,
  dhSinglePass-stdDH-sha256kdf-scheme, AES-256 key wrap; RFC 5753) for EC keys, KeyTransRecipientInfo
  (RSAES-OAEP with SHA-256, RFC 9481 4.2) for RSA keys.

The content is encrypted with AES-256-CBC. envelope_private_key() is the server's side, open_private_key()
the device's.
"""

from __future__ import annotations

import hmac
import os

from .asn1 import brief, decode, der_integer, der_oid, der_sequence, der_tlv, optional
from .errors import CmpFailure, InvalidInput
from .signatures import HASH_OIDS, algorithm_for
from .signatures import sign as sign_data
from .signatures import verify as verify_data
from .x509 import certificate_der, verify_chain

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, padding, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
    from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
    from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
    from pyasn1.codec.der import encoder
    from pyasn1_alt_modules import rfc5280, rfc5652, rfc5958, rfc8018
except ImportError:  # reported by deps.missing()
    pass

ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_CT_KP_A_KEY_PACKAGE = "2.16.840.1.101.2.1.2.78.5"
ID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
AES256_CBC = "2.16.840.1.101.3.4.1.42"
AES256_WRAP = "2.16.840.1.101.3.4.1.45"
PBKDF2 = "1.2.840.113549.1.5.12"
HMAC_WITH_SHA256 = "1.2.840.113549.2.9"
PWRI_KEK = "1.2.840.113549.1.9.16.3.9"
ECDH_SHA256_KDF = "1.3.132.1.11.1"  # dhSinglePass-stdDH-sha256kdf-scheme
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
RSAES_OAEP = "1.2.840.113549.1.1.7"
MGF1 = "1.2.840.113549.1.1.8"
SHA256 = "2.16.840.1.101.3.4.2.1"
# PBKDF2 iterations of the key-encryption key: the secret is a random one-time secret, not a password a
# person chose, so guessing it is hopeless either way (cmp_protection.DEFAULT_PBM_ITERATIONS says why).
PWRI_ITERATIONS = 10000
BLOCK = 16
_HASH_OID_BY_NAME = {name.lower(): oid for oid, name in HASH_OIDS.items()}


def _algorithm(oid, params_der=b""):
    return der_sequence(der_oid(oid), params_der)


def _issuer_and_serial(certificate):
    return der_sequence(certificate.issuer.public_bytes(), der_integer(certificate.serial_number))


def _cbc(key, iv, data, decrypt=False):
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    worker = cipher.decryptor() if decrypt else cipher.encryptor()
    return worker.update(data) + worker.finalize()


# --- the server's side ------------------------------------------------------------------------------------


def _signed_key_package(private_key, signer_key, signer_certificate, chain):
    """DER SignedData (RFC 5652 5) whose content is an AsymmetricKeyPackage holding private_key."""
    one_key = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    content = der_sequence(one_key)  # AsymmetricKeyPackage ::= SEQUENCE OF OneAsymmetricKey (v1 = PKCS#8)
    oid, params, hash_algorithm = algorithm_for(signer_key)
    if hash_algorithm is None:
        raise InvalidInput("the key generation authority's key cannot sign a SignedData here")
    digest = hashes.Hash(hash_algorithm)
    digest.update(content)
    digest_algorithm = _algorithm(_HASH_OID_BY_NAME[hash_algorithm.name])
    attributes = sorted(
        [
            der_sequence(der_oid(ID_CONTENT_TYPE), der_tlv(0x31, der_oid(ID_CT_KP_A_KEY_PACKAGE))),
            der_sequence(der_oid(ID_MESSAGE_DIGEST), der_tlv(0x31, der_tlv(0x04, digest.finalize()))),
        ]
    )
    signed_attributes = b"".join(attributes)
    # The signature covers the attributes as a SET OF (RFC 5652 5.4), sent as [0] IMPLICIT.
    _oid, _params, signature = sign_data(signer_key, der_tlv(0x31, signed_attributes))
    signer_info = der_sequence(
        der_integer(1),
        _issuer_and_serial(signer_certificate),
        digest_algorithm,
        der_tlv(0xA0, signed_attributes),
        _algorithm(oid, params or b""),
        der_tlv(0x04, signature),
    )
    certificates = b"".join(certificate_der(c) for c in [signer_certificate, *chain])
    return der_sequence(
        der_integer(3),  # eContentType is not id-data
        der_tlv(0x31, digest_algorithm),
        der_sequence(der_oid(ID_CT_KP_A_KEY_PACKAGE), der_tlv(0xA0, der_tlv(0x04, content))),
        der_tlv(0xA0, certificates),
        der_tlv(0x31, signer_info),
    )


def _pwri_wrap(kek, iv, cek):
    """RFC 3211 2.3.1: length, check bytes, key, padding to at least two blocks; CBC twice."""
    block = bytes([len(cek)]) + bytes(b ^ 0xFF for b in cek[:3]) + cek
    size = max(2 * BLOCK, -(-len(block) // BLOCK) * BLOCK)
    block += os.urandom(size - len(block))
    first = _cbc(kek, iv, block)
    return _cbc(kek, first[-BLOCK:], first)


def _pbkdf2(secret, salt, iterations):
    return PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(secret)


def _password_recipient(cek, secret):
    salt, iv = os.urandom(16), os.urandom(BLOCK)
    kdf_params = der_sequence(
        der_tlv(0x04, salt), der_integer(PWRI_ITERATIONS), der_integer(32), _algorithm(HMAC_WITH_SHA256, b"\x05\x00")
    )
    encrypted = _pwri_wrap(_pbkdf2(secret, salt, PWRI_ITERATIONS), iv, cek)
    info = der_sequence(
        der_integer(0),
        der_tlv(0xA0, der_oid(PBKDF2) + kdf_params),  # keyDerivationAlgorithm [0] IMPLICIT AlgorithmIdentifier
        _algorithm(PWRI_KEK, _algorithm(AES256_CBC, der_tlv(0x04, iv))),
        der_tlv(0x04, encrypted),
    )
    return 3, b"\xa3" + info[1:]  # [3] IMPLICIT PasswordRecipientInfo


def _shared_info():
    """ECC-CMS-SharedInfo (RFC 5753 7.2) for AES-256 key wrap: the KDF's other info."""
    return der_sequence(_algorithm(AES256_WRAP), der_tlv(0xA2, der_tlv(0x04, (256).to_bytes(4, "big"))))


def _ecdh_kek(shared_secret):
    return X963KDF(hashes.SHA256(), 32, _shared_info()).derive(shared_secret)


def _key_agreement_recipient(cek, certificate):
    public_key = certificate.public_key()
    ephemeral = ec.generate_private_key(public_key.curve)
    kek = _ecdh_kek(ephemeral.exchange(ec.ECDH(), public_key))
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    originator = der_tlv(0xA0, der_tlv(0xA1, _algorithm(EC_PUBLIC_KEY) + der_tlv(0x03, b"\x00" + point)))
    info = der_sequence(
        der_integer(3),
        originator,
        _algorithm(ECDH_SHA256_KDF, _algorithm(AES256_WRAP)),
        der_sequence(der_sequence(_issuer_and_serial(certificate), der_tlv(0x04, aes_key_wrap(kek, cek)))),
    )
    return 2, b"\xa1" + info[1:]  # [1] IMPLICIT KeyAgreeRecipientInfo


def _oaep_params():
    sha256 = _algorithm(SHA256)
    return der_sequence(der_tlv(0xA0, sha256), der_tlv(0xA1, _algorithm(MGF1, sha256)))


def _oaep():
    return asymmetric_padding.OAEP(asymmetric_padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)


def _key_transport_recipient(cek, certificate):
    encrypted = certificate.public_key().encrypt(cek, _oaep())
    info = der_sequence(
        der_integer(0),
        _issuer_and_serial(certificate),
        _algorithm(RSAES_OAEP, _oaep_params()),
        der_tlv(0x04, encrypted),
    )
    return 0, info


def envelope_private_key(private_key, signer_key, signer_certificate, chain=(), secret=None, recipient=None):
    """DER EnvelopedData carrying private_key for the requester (RFC 9483 4.1.6).

    signer_key/signer_certificate/chain: the key generation authority that signs the key package. secret: the
    shared secret of a MAC-protected request; recipient: otherwise, the certificate that signed the request (EC
    or RSA key). Raises InvalidInput when the recipient's key cannot receive a key.
    """
    signed = _signed_key_package(private_key, signer_key, signer_certificate, list(chain))
    cek, iv = os.urandom(32), os.urandom(BLOCK)
    padder = padding.PKCS7(128).padder()
    encrypted = _cbc(cek, iv, padder.update(signed) + padder.finalize())
    if secret is not None:
        version, info = _password_recipient(cek, secret if isinstance(secret, bytes) else secret.encode())
    else:
        public_key = recipient.public_key()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            version, info = _key_agreement_recipient(cek, recipient)
        elif isinstance(public_key, rsa.RSAPublicKey):
            version, info = _key_transport_recipient(cek, recipient)
        else:
            raise InvalidInput(
                "a key cannot be sent to a %s certificate; central key generation needs an EC or RSA key"
                % type(public_key).__name__
            )
    content_info = der_sequence(
        der_oid(ID_SIGNED_DATA), _algorithm(AES256_CBC, der_tlv(0x04, iv)), der_tlv(0x80, encrypted)
    )
    return der_sequence(der_integer(version), der_tlv(0x31, info), content_info)


# --- the device's side ---------------------------------------------------------------------------------------


def _pwri_unwrap(kek, iv, encrypted):
    if len(encrypted) < 2 * BLOCK or len(encrypted) % BLOCK:
        raise InvalidInput("the wrapped key has a wrong length")
    last = _cbc(kek, encrypted[-2 * BLOCK : -BLOCK], encrypted[-BLOCK:], decrypt=True)
    first = _cbc(kek, last, encrypted, decrypt=True)
    block = _cbc(kek, iv, first, decrypt=True)
    size = block[0]
    check = bytes(b ^ 0xFF for b in block[4 : 4 + 3])
    if size < 16 or 4 + size > len(block) or not hmac.compare_digest(check, block[1:4]):
        raise InvalidInput("the shared secret does not open the key (RFC 3211 check failed)")
    return block[4 : 4 + size]


def _recipient_matches(rid_der, certificate):
    return certificate is not None and rid_der == _issuer_and_serial(certificate)


def _cek(info, secret, private_key, certificate):
    kind = info.getName()
    value = info[kind]
    if kind == "pwri" and secret is not None:
        kdf = value["keyDerivationAlgorithm"]
        if str(kdf["algorithm"]) != PBKDF2:
            raise InvalidInput("unsupported key derivation %s" % kdf["algorithm"])
        params = decode(bytes(kdf["parameters"]), rfc8018.PBKDF2_params())
        prf = optional(params, "prf")
        if prf is not None and str(prf["algorithm"]) != HMAC_WITH_SHA256:
            raise InvalidInput("unsupported PBKDF2 PRF %s" % prf["algorithm"])
        kek_alg = value["keyEncryptionAlgorithm"]
        inner = decode(bytes(kek_alg["parameters"]), rfc5280.AlgorithmIdentifier())
        if str(kek_alg["algorithm"]) != PWRI_KEK or str(inner["algorithm"]) != AES256_CBC:
            raise InvalidInput("unsupported key encryption %s" % kek_alg["algorithm"])
        iv = decode(bytes(inner["parameters"])).asOctets()
        kek = _pbkdf2(secret, params["salt"]["specified"].asOctets(), int(params["iterationCount"]))
        return _pwri_unwrap(kek, iv, value["encryptedKey"].asOctets())
    if kind == "kari" and isinstance(private_key, ec.EllipticCurvePrivateKey):
        for recipient in value["recipientEncryptedKeys"]:
            if not _recipient_matches(encoder.encode(recipient["rid"]["issuerAndSerialNumber"]), certificate):
                continue
            if str(value["keyEncryptionAlgorithm"]["algorithm"]) != ECDH_SHA256_KDF:
                raise InvalidInput("unsupported key agreement %s" % value["keyEncryptionAlgorithm"]["algorithm"])
            originator = value["originator"]["originatorKey"]
            peer = ec.EllipticCurvePublicKey.from_encoded_point(private_key.curve, originator["publicKey"].asOctets())
            kek = _ecdh_kek(private_key.exchange(ec.ECDH(), peer))
            return aes_key_unwrap(kek, recipient["encryptedKey"].asOctets())
    rsa_recipient = kind == "ktri" and isinstance(private_key, rsa.RSAPrivateKey)
    if rsa_recipient and _recipient_matches(encoder.encode(value["rid"]["issuerAndSerialNumber"]), certificate):
        if str(value["keyEncryptionAlgorithm"]["algorithm"]) != RSAES_OAEP:
            raise InvalidInput("unsupported key transport %s" % value["keyEncryptionAlgorithm"]["algorithm"])
        return private_key.decrypt(value["encryptedKey"].asOctets(), _oaep())
    return None


def _verify_key_package(signed_der, trusted):
    """The AsymmetricKeyPackage DER of a SignedData whose signer chains to trusted."""
    signed = decode(signed_der, rfc5652.SignedData())
    content = signed["encapContentInfo"]
    if str(content["eContentType"]) != ID_CT_KP_A_KEY_PACKAGE:
        raise InvalidInput("the SignedData does not hold an asymmetric key package")
    package = content["eContent"].asOctets()
    certificates = [x509.load_der_x509_certificate(encoder.encode(c["certificate"])) for c in signed["certificates"]]
    [signer_info] = list(signed["signerInfos"])
    sid = encoder.encode(signer_info["sid"]["issuerAndSerialNumber"])
    signer = next((c for c in certificates if _issuer_and_serial(c) == sid), None)
    if signer is None:
        raise InvalidInput("the key package's signer certificate is missing")
    verify_chain(signer, [c for c in certificates if c is not signer], list(trusted))
    attributes = signer_info["signedAttrs"]
    values = {str(a["attrType"]): bytes(a["attrValues"][0]) for a in attributes}
    digest_name = HASH_OIDS.get(str(signer_info["digestAlgorithm"]["algorithm"]))
    if digest_name is None:
        raise InvalidInput("unsupported digest %s" % signer_info["digestAlgorithm"]["algorithm"])
    digest = hashes.Hash(getattr(hashes, digest_name)())
    digest.update(package)
    if values.get(ID_CONTENT_TYPE) != der_oid(ID_CT_KP_A_KEY_PACKAGE) or values.get(ID_MESSAGE_DIGEST) != der_tlv(
        0x04, digest.finalize()
    ):
        raise InvalidInput("the key package's signed attributes do not match its content")
    signed_attributes = encoder.encode(attributes)
    algorithm = signer_info["signatureAlgorithm"]
    params = optional(algorithm, "parameters")
    if not verify_data(
        signer.public_key(),
        str(algorithm["algorithm"]),
        bytes(params) if params is not None else None,
        signer_info["signature"].asOctets(),
        b"\x31" + signed_attributes[1:],
    ):
        raise InvalidInput("the key package's signature does not verify")
    return package


def open_private_key(enveloped_der, trusted, secret=None, private_key=None, certificate=None):
    """The private key in an EnvelopedData of RFC 9483 4.1.6, for the device that asked for it.

    trusted: the trust anchors the key generation authority's signature must chain to; secret: the shared
    secret the request was MAC-protected with; else private_key and certificate, the credential that signed
    it. Raises CmpFailure (badMessageCheck) when it cannot be opened or its signature does not verify.
    """
    try:
        envelope = decode(enveloped_der, rfc5652.EnvelopedData())
        secret = secret.encode() if isinstance(secret, str) else secret
        cek = None
        for info in envelope["recipientInfos"]:
            cek = _cek(info, secret, private_key, certificate)
            if cek is not None:
                break
        if cek is None:
            raise InvalidInput("no recipient of the envelope is this device's secret or certificate")
        encrypted = envelope["encryptedContentInfo"]
        algorithm = encrypted["contentEncryptionAlgorithm"]
        if str(algorithm["algorithm"]) != AES256_CBC or str(encrypted["contentType"]) != ID_SIGNED_DATA:
            raise InvalidInput("unsupported content encryption %s" % algorithm["algorithm"])
        iv = decode(bytes(algorithm["parameters"])).asOctets()
        unpadder = padding.PKCS7(128).unpadder()
        plain = _cbc(cek, iv, encrypted["encryptedContent"].asOctets(), decrypt=True)
        signed = unpadder.update(plain) + unpadder.finalize()
        package = decode(_verify_key_package(signed, trusted), rfc5958.AsymmetricKeyPackage())
        return serialization.load_der_private_key(encoder.encode(package[0]), None)
    except CmpFailure:
        raise
    except (InvalidInput, InvalidUnwrap) as exc:
        raise CmpFailure("the centrally generated key cannot be opened: %s" % exc, "badMessageCheck") from exc
    except Exception as exc:  # malformed content from the wire
        raise CmpFailure("the centrally generated key cannot be read: %s" % brief(exc), "badDataFormat") from exc
