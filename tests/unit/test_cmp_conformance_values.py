# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The core's CMP values as a strict RFC 9480 decoder reads them (issue 15)."""

from __future__ import annotations

import datetime

import pytest
from conftest import openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder, encoder
from pyasn1_alt_modules import rfc5480, rfc5958, rfc9480
from trustpoint_core import cmp_keygen, keys
from trustpoint_core.asn1 import der_oid, der_sequence, der_tlv
from trustpoint_core.cmp_message import (
    ID_EC_PUBLIC_KEY,
    ID_IT_CERT_REQ_TEMPLATE,
    ID_REGCTRL_ALG_ID,
    ID_REGCTRL_RSA_KEY_LEN,
    cert_req_template_value,
    genp_body,
)
from trustpoint_core.errors import CmpFailure
from trustpoint_core.x509 import common_name


def strictly(der, spec):
    """der decoded with spec and every open type (the map of RFC 9480's ASN.1) decoded too."""
    value, rest = decoder.decode(der, asn1Spec=spec, decodeOpenTypes=True)
    assert not rest
    return value


@pytest.mark.parametrize("key_types", [keys.KEY_TYPES, ("ecdsa-p256",), ("rsa-3072",)])
def test_cert_req_template_decodes_strictly(key_types):
    """Every keySpec control decodes with the type RFC 9480 gives its OID: an AlgorithmIdentifier naming the
    curve for EC keys (id-regCtrl-algId), an INTEGER key length for RSA (id-regCtrl-rsaKeyLen)."""
    value = cert_req_template_value(common_name("dev1"), key_types)
    content = strictly(value, rfc9480.CertReqTemplateValue())
    curves, rsa_lengths = [], []
    for control in content["keySpec"]:
        oid = str(control["type"])
        if oid == ID_REGCTRL_ALG_ID:
            algorithm = control["value"]
            assert str(algorithm["algorithm"]) == ID_EC_PUBLIC_KEY
            # The open-type map of RFC 5480 decodes the parameters as ECParameters already.
            curve = algorithm["parameters"]
            assert isinstance(curve, rfc5480.ECParameters), type(curve)
            curves.append(str(curve["namedCurve"]))
        else:
            assert oid == ID_REGCTRL_RSA_KEY_LEN
            rsa_lengths.append(int(control["value"]))
    expected_curves = {"ecdsa-p256": "1.2.840.10045.3.1.7", "ecdsa-p384": "1.3.132.0.34"}
    assert curves == [expected_curves[k] for k in key_types if k in expected_curves]
    assert rsa_lengths == [int(k[4:]) for k in key_types if k.startswith("rsa-")]


def test_cert_req_template_inside_a_genp_decodes_strictly():
    """The whole genp body, its infoValue and the controls in it decode with the open-type maps."""
    _type, content = genp_body([(ID_IT_CERT_REQ_TEMPLATE, cert_req_template_value(None, keys.KEY_TYPES))])
    body = rfc9480.PKIBody()
    body["genp"] = content
    decoded = strictly(encoder.encode(body), rfc9480.PKIBody())
    [itav] = decoded["genp"]
    assert len(itav["infoValue"]["keySpec"]) == len(keys.KEY_TYPES)


# --- central key generation: the core's EnvelopedData against `openssl cms` -------------------------------


def _certificate(key, subject, issuer_key=None, issuer=None, ca=False):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def kga():
    """A root and the key generation authority (an issuing CA) below it."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate(root_key, "Root", ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    return root, key, _certificate(key, "Issuing", root_key, root, ca=True)


def _pem(path, item):
    data = (
        item.public_bytes(serialization.Encoding.PEM)
        if isinstance(item, x509.Certificate)
        else item.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("recipient", ["password", "ec", "rsa"])
def test_envelope_round_trip_and_openssl(kga, tmp_path, recipient):
    """envelope_private_key() and open_private_key() round-trip the key; `openssl cms -decrypt` opens the same
    EnvelopedData (pwri, kari, ktri) and `openssl cms -verify` accepts the SignedData in it."""
    root, kga_key, kga_certificate = kga
    key = ec.generate_private_key(ec.SECP256R1())
    if recipient == "password":
        enveloped = cmp_keygen.envelope_private_key(key, kga_key, kga_certificate, [root], secret=b"one-time")
        opened = cmp_keygen.open_private_key(enveloped, [root], secret=b"one-time")
        args = ["-pwri_password", "one-time"]
    else:
        device_key = (
            ec.generate_private_key(ec.SECP256R1()) if recipient == "ec" else keys.generate_private_key("rsa-2048")
        )
        device = _certificate(device_key, "device", kga_key, kga_certificate)
        enveloped = cmp_keygen.envelope_private_key(key, kga_key, kga_certificate, [root], recipient=device)
        opened = cmp_keygen.open_private_key(enveloped, [root], private_key=device_key, certificate=device)
        args = ["-recip", _pem(tmp_path / "d.pem", device), "-inkey", _pem(tmp_path / "d.key", device_key)]
    assert opened.private_numbers() == key.private_numbers()
    (tmp_path / "env.der").write_bytes(der_sequence(der_oid("1.2.840.113549.1.7.3"), der_tlv(0xA0, enveloped)))
    openssl("cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "env.der"), "-out", str(tmp_path / "sd.der"),
            *args)  # fmt: skip
    signed = der_sequence(der_oid("1.2.840.113549.1.7.2"), der_tlv(0xA0, (tmp_path / "sd.der").read_bytes()))
    (tmp_path / "sdci.der").write_bytes(signed)
    openssl("cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "sdci.der"), "-purpose", "any",
            "-CAfile", _pem(tmp_path / "root.pem", root), "-out", str(tmp_path / "akp.der"))  # fmt: skip
    assert (
        serialization.load_der_private_key(
            encoder.encode(
                decoder.decode((tmp_path / "akp.der").read_bytes(), asn1Spec=rfc5958.AsymmetricKeyPackage())[0][0]
            ),
            None,
        ).private_numbers()
        == key.private_numbers()
    )


def test_envelope_refuses_an_untrusted_signer(kga):
    """A key package signed by a CA outside the device's trust anchors is refused."""
    root, kga_key, kga_certificate = kga
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_root = _certificate(other_key, "Other Root", ca=True)
    enveloped = cmp_keygen.envelope_private_key(
        ec.generate_private_key(ec.SECP256R1()), kga_key, kga_certificate, [root], secret=b"s"
    )
    with pytest.raises(CmpFailure, match="cannot be opened"):
        cmp_keygen.open_private_key(enveloped, [other_root], secret=b"s")
