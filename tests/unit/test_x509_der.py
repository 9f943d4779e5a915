# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""x509_der: the certificates issue_certificate puts together from parts are, byte for byte, the ones
cryptography's CertificateBuilder writes for the same fields (issue 16), for every CA key type, subject key type,
profile, kind of subject alternative name, CRL distribution point and time encoding."""

from __future__ import annotations

import datetime
import ipaddress
import itertools

import pytest
from conftest import openssl
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from trustpoint_core import asn1, keys, profiles, x509_der
from trustpoint_core import x509 as tp_x509
from trustpoint_core.errors import InvalidInput

UTC = datetime.timezone.utc
NOW = tp_x509.now_utc().replace(microsecond=123456)  # microseconds: cryptography drops them
SANS = [
    x509.DNSName("plc-7.plant1.example"),
    x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
    x509.IPAddress(ipaddress.ip_address("2001:db8::7")),
    x509.UniformResourceIdentifier("urn:plant1:plc-7"),
    x509.RFC822Name("ops@plant1.example"),
]
SUBJECTS = {
    "cn": tp_x509.common_name("plc-7"),
    "several": x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Plant 1"),
            x509.NameAttribute(NameOID.COMMON_NAME, "plc-7 ü"),
        ]
    ),
    "empty": x509.Name([]),
}


def reference(issuer_cert, issuer_key, public_key, subject, serial, not_before, not_after, profile, sans, crl_url):
    """What issue_certificate built with cryptography's builder before x509_der (the same extensions, in order)."""
    flags = dict.fromkeys((*profiles.KEY_USAGE_FLAGS, "encipher_only", "decipher_only"), False)
    flags.update(dict.fromkeys(profile.key_usage, True))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**flags), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False)
    )
    if profile.extended_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(profile.extended_key_usage_oids()), critical=False)
    if sans:
        critical = profile.san_critical or not len(subject)
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=critical)
    if crl_url:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return builder.sign(issuer_key, keys.hash_for(issuer_key))


def ours(issuer_cert, issuer_key, public_key, subject, serial, not_before, not_after, profile, sans, crl_url):
    hash_algorithm = keys.hash_for(issuer_key)
    tbs = x509_der.tbs_certificate(
        issuer_cert,
        issuer_key,
        hash_algorithm,
        public_key,
        subject,
        serial,
        not_before,
        not_after,
        profile.key_usage,
        profile.extended_key_usage_oids(),
        sans,
        san_critical=profile.san_critical or not len(subject),
        crl_url=crl_url,
    )
    return x509_der.sign_certificate(tbs, issuer_key, hash_algorithm)


@pytest.fixture(scope="module")
def chains():
    return {key_type: tp_x509.CaChain.create("d-" + key_type, key_type, now=NOW) for key_type in keys.KEY_TYPES}


@pytest.fixture(scope="module")
def subject_keys():
    generated = {key_type: keys.generate_private_key(key_type).public_key() for key_type in ("ecdsa-p256", "rsa-2048")}
    generated["ecdsa-p384"] = keys.generate_private_key("ecdsa-p384").public_key()
    generated["ed25519"] = ed25519.Ed25519PrivateKey.generate().public_key()
    return generated


def _same(chain, public_key, subject, profile, sans=(), crl_url=None, not_before=NOW, not_after=None, serial=None):
    args = (
        chain.issuing_cert,
        chain.issuing_key,
        public_key,
        subject,
        serial if serial is not None else x509.random_serial_number(),
        not_before,
        not_after or NOW + datetime.timedelta(days=90),
        profile,
        list(sans),
        crl_url,
    )
    expected, got = reference(*args), ours(*args)
    assert got.tbs_certificate_bytes == expected.tbs_certificate_bytes
    # The outer signatureAlgorithm too (RSA's NULL parameters, ECDSA's none).
    assert asn1.der_children(tp_x509.certificate_der(got))[1] == asn1.der_children(tp_x509.certificate_der(expected))[1]
    assert got.verify_directly_issued_by(chain.issuing_cert) is None
    return got


@pytest.mark.parametrize("ca_type", keys.KEY_TYPES)
def test_every_ca_key_type_and_subject_key_type_gives_cryptographys_bytes(chains, subject_keys, ca_type):
    for public_key in subject_keys.values():
        _same(chains[ca_type], public_key, SUBJECTS["cn"], profiles.DOMAIN_CREDENTIAL)


@pytest.mark.parametrize("profile", list(profiles.PROFILES.values()), ids=list(profiles.PROFILES))
def test_every_profile_with_names_and_crl_gives_cryptographys_bytes(chains, subject_keys, profile):
    chain = chains["ecdsa-p256"]
    for (_label, subject), count, crl_url in itertools.product(
        SUBJECTS.items(), (0, 1, len(SANS)), (None, "http://pki.plant1.example:8080/crl/3")
    ):
        if not len(subject) and not count:
            continue
        _same(chain, subject_keys["ecdsa-p256"], subject, profile, SANS[:count], crl_url)


@pytest.mark.parametrize(
    "key_usage",
    [(), *((flag,) for flag in profiles.KEY_USAGE_FLAGS), ("digital_signature", "key_agreement")],
)
def test_every_key_usage_bit_string_is_cryptographys(chains, subject_keys, key_usage):
    """Named bits without their trailing zeros (X.690 11.2.2), one octet or two."""
    profile = profiles.Profile("k", key_usage=key_usage, extended_key_usage=(), validity_days=1)
    _same(chains["ecdsa-p256"], subject_keys["ecdsa-p256"], SUBJECTS["cn"], profile)


def test_times_serials_and_time_zones_are_encoded_as_cryptography_does(chains, subject_keys):
    chain, key, profile = chains["ecdsa-p384"], subject_keys["rsa-2048"], profiles.TLS_CLIENT
    # UTCTime through 2049, GeneralizedTime from 2050; microseconds dropped; another zone turned into UTC.
    _same(chain, key, SUBJECTS["cn"], profile, not_after=datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC))
    _same(chain, key, SUBJECTS["cn"], profile, not_after=datetime.datetime(2050, 1, 1, tzinfo=UTC))
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    got = _same(chain, key, SUBJECTS["cn"], profile, not_before=datetime.datetime(2026, 1, 1, 1, 0, tzinfo=plus_two))
    assert got.not_valid_before_utc == datetime.datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
    for serial in (1, 127, 128, 255, 256, 2**159 - 1, x509.random_serial_number()):
        assert _same(chain, key, SUBJECTS["cn"], profile, serial=serial).serial_number == serial


def test_openssl_reads_and_verifies_an_issued_certificate(chains, subject_keys, tmp_path):
    chain = chains["rsa-2048"]
    cert = tp_x509.issue_certificate(
        chain.issuing_cert,
        chain.issuing_key,
        subject_keys["ecdsa-p256"],
        SUBJECTS["several"],
        profiles.OPC_UA,
        subject_alt_names=SANS[:4],
        crl_url="http://pki.example/crl/1",
    )
    (tmp_path / "ca.pem").write_text(tp_x509.certificates_to_pem([chain.issuing_cert, chain.root_cert]))
    (tmp_path / "leaf.pem").write_text(tp_x509.certificates_to_pem([cert]))
    verified = openssl("verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "leaf.pem"))
    assert verified.returncode == 0, verified.stderr
    text = openssl("x509", "-in", str(tmp_path / "leaf.pem"), "-noout", "-text").stdout
    assert "URI:urn:plant1:plc-7" in text and "IP Address:2001:DB8:0:0:0:0:0:7" in text
    assert "Digital Signature, Non Repudiation, Key Encipherment, Data Encipherment" in text


def test_what_it_cannot_encode_is_refused(chains, subject_keys):
    chain = chains["ecdsa-p256"]
    args = (chain.issuing_cert, chain.issuing_key, keys.hash_for(chain.issuing_key), subject_keys["ecdsa-p256"])
    times = (SUBJECTS["cn"], 1, NOW, NOW + datetime.timedelta(days=1), ("digital_signature",))
    for name in (
        x509.DirectoryName(SUBJECTS["several"]),
        x509.IPAddress(ipaddress.ip_network("192.0.2.0/24")),
        x509.RegisteredID(NameOID.COMMON_NAME),
    ):
        with pytest.raises(InvalidInput, match="not issued"):
            x509_der.tbs_certificate(*args, *times, subject_alt_names=[name])
    with pytest.raises(InvalidInput, match="Ed25519"):
        x509_der.tbs_certificate(chain.issuing_cert, ed25519.Ed25519PrivateKey.generate(), *args[2:], *times)


@pytest.mark.parametrize("dotted", ["2.5.29.19", "1.2.840.113549.1.1.11", "1.3.6.1.4.1.311.20.2.3", "2.999.1", "0.39"])
def test_object_identifiers_are_encoded_as_pyasn1_does(dotted):
    asn1.der_oid.cache_clear()
    assert asn1.der_oid(dotted) == encoder.encode(univ.ObjectIdentifier(dotted))


@pytest.mark.parametrize("dotted", ["1", "3.1", "1.40", "1.-2", "a.b"])
def test_what_is_no_object_identifier_is_refused(dotted):
    with pytest.raises(ValueError):
        asn1.der_oid(dotted)


def test_an_expired_issuing_ca_issues_nothing(subject_keys):
    """The builder refused a notAfter before notBefore; issue_certificate says why instead."""
    old = tp_x509.CaChain.create("old", "ecdsa-p256", now=NOW - datetime.timedelta(days=tp_x509.ISSUING_CA_DAYS + 1))
    with pytest.raises(InvalidInput, match=r"^the issuing CA O=Trustpoint,CN=old Issuing CA expired on 20\d\d-"):
        tp_x509.issue_certificate(
            old.issuing_cert, old.issuing_key, subject_keys["ecdsa-p256"], SUBJECTS["cn"], profiles.DOMAIN_CREDENTIAL
        )
