# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""x509: CA chains, issuance under the domain_credential profile, chain checks, names, loading.

Certificates are checked field by field and by `openssl verify` on every (CA key type x subject key
type) pair.
"""

from __future__ import annotations

import datetime

import pytest
from conftest import openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from trustpoint_core import keys, profiles
from trustpoint_core import x509 as tp_x509
from trustpoint_core.errors import InvalidInput

NOW = tp_x509.now_utc().replace(microsecond=0)
DAY = datetime.timedelta(days=1)
PROFILE = profiles.DOMAIN_CREDENTIAL
SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COMMON_NAME, "Trustpoint Domain Credential"),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, "dev-42"),
    ]
)


@pytest.fixture(scope="module")
def chains():
    """One CA chain per key type for the module (RSA-4096 generation is slow)."""
    return {key_type: tp_x509.CaChain.create("d-" + key_type, key_type, now=NOW) for key_type in keys.KEY_TYPES}


@pytest.fixture(scope="module")
def subject_keys():
    return {key_type: keys.generate_private_key(key_type) for key_type in keys.KEY_TYPES}


@pytest.fixture(scope="module")
def leaf(chains, subject_keys):
    """(chain, key, certificate) of a P-256 device under the P-256 CA."""
    chain = chains["ecdsa-p256"]
    key = subject_keys["ecdsa-p256"]
    return chain, key, issue(chain, key, now=NOW)


def issue(chain, key, now=NOW, **kwargs):
    return tp_x509.issue_certificate(
        chain.issuing_cert, chain.issuing_key, key.public_key(), SUBJECT, PROFILE, now=now, **kwargs
    )


def ext(cert, kind):
    return cert.extensions.get_extension_for_class(kind)


def write(path, certs):
    path.write_text(tp_x509.certificates_to_pem(certs))
    return str(path)


def ski_of(key):
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest


# --- CaChain.create --------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_ca_chain_structure(key_type, chains):
    """Root self-signed, issuing CA signed by it, both keys of key_type, named after the label, signed with hash_for."""
    chain = chains[key_type]
    root, issuing = chain.root_cert, chain.issuing_cert
    assert chain.chain == [issuing, root]
    assert root.subject == root.issuer
    assert tp_x509.is_issued_by(root, root)
    assert issuing.issuer == root.subject
    assert tp_x509.is_issued_by(issuing, root)
    assert not tp_x509.is_issued_by(issuing, issuing)
    assert keys.key_type_of(root.public_key()) == keys.key_type_of(issuing.public_key()) == key_type
    assert keys.same_public_key(root.public_key(), chain.root_key)
    assert keys.same_public_key(issuing.public_key(), chain.issuing_key)
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "d-%s Root CA" % key_type
    assert issuing.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "d-%s Issuing CA" % key_type
    expected_hash = hashes.SHA384 if key_type == "ecdsa-p384" else hashes.SHA256
    assert isinstance(root.signature_hash_algorithm, expected_hash)
    assert isinstance(issuing.signature_hash_algorithm, expected_hash)


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_ca_chain_extensions(key_type, chains):
    """Both CAs: critical BasicConstraints CA (pathlen 1 / 0), critical KU with keyCertSign, cRLSign and
    digitalSignature (to sign CMP responses), SKI of the key, AKI = issuer's SKI."""
    chain = chains[key_type]
    for cert, key, path_length, issuer_key in (
        (chain.root_cert, chain.root_key, 1, chain.root_key),
        (chain.issuing_cert, chain.issuing_key, 0, chain.root_key),
    ):
        basic = ext(cert, x509.BasicConstraints)
        assert basic.critical and basic.value.ca and basic.value.path_length == path_length
        usage = ext(cert, x509.KeyUsage)
        assert usage.critical
        assert usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
        assert not (usage.value.key_encipherment or usage.value.content_commitment or usage.value.key_agreement)
        assert ext(cert, x509.SubjectKeyIdentifier).value.digest == ski_of(key)
        assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ski_of(issuer_key)


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_ca_chain_validity(key_type, chains):
    """Root and issuing CA start BACKDATE before now and last ROOT_CA_DAYS / ISSUING_CA_DAYS."""
    chain = chains[key_type]
    start = NOW - tp_x509.BACKDATE
    assert tp_x509.not_before(chain.root_cert) == tp_x509.not_before(chain.issuing_cert) == start
    assert tp_x509.not_after(chain.root_cert) == NOW + tp_x509.ROOT_CA_DAYS * DAY
    assert tp_x509.not_after(chain.issuing_cert) == NOW + tp_x509.ISSUING_CA_DAYS * DAY


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_openssl_accepts_ca_chain(key_type, chains, tmp_path):
    """`openssl verify` accepts the issuing CA against the root, and the root as self-signed CA."""
    chain = chains[key_type]
    root = write(tmp_path / "root.pem", chain.root_cert)
    openssl("verify", "-x509_strict", "-CAfile", root, write(tmp_path / "issuing.pem", chain.issuing_cert))
    openssl("verify", "-x509_strict", "-CAfile", root, root)


def test_ca_chain_unknown_key_type():
    """An unknown key type is InvalidInput."""
    with pytest.raises(InvalidInput):
        tp_x509.CaChain.create("d", "dsa-1024")


# --- issue_certificate -----------------------------------------------------------------------------


@pytest.mark.parametrize("subject_type", keys.KEY_TYPES)
@pytest.mark.parametrize("ca_type", keys.KEY_TYPES)
def test_issue_domain_credential(ca_type, subject_type, chains, subject_keys, tmp_path):
    """Every key type is certified under every CA type with the domain_credential profile, and openssl agrees:
    KU digitalSignature (critical), EKU clientAuth, BasicConstraints ca=false (critical), SKI/AKI, 365 days."""
    chain = chains[ca_type]
    key = subject_keys[subject_type]
    cert = issue(chain, key)
    assert cert.subject == SUBJECT
    assert cert.issuer == chain.issuing_cert.subject
    assert keys.same_public_key(cert.public_key(), key)
    assert tp_x509.is_issued_by(cert, chain.issuing_cert)
    assert isinstance(cert.signature_hash_algorithm, type(keys.hash_for(chain.issuing_key)))
    assert cert.version == x509.Version.v3

    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value == x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(cert, x509.SubjectKeyIdentifier).value.digest == ski_of(key)
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ski_of(chain.issuing_key)
    assert tp_x509.not_before(cert) == NOW - tp_x509.BACKDATE
    assert tp_x509.not_after(cert) == NOW + PROFILE.validity_days * DAY

    result = openssl(
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-CAfile",
        write(tmp_path / "root.pem", chain.root_cert),
        "-untrusted",
        write(tmp_path / "issuing.pem", chain.issuing_cert),
        write(tmp_path / "leaf.pem", cert),
    )
    assert result.stdout.strip().endswith(": OK")


def test_serial_numbers_are_random_and_positive(leaf, subject_keys):
    """Two certificates for the same key get different, positive serial numbers of at most 20 octets."""
    chain, key, cert = leaf
    other = issue(chain, key)
    assert cert.serial_number != other.serial_number
    for serial in (cert.serial_number, other.serial_number):
        assert 0 < serial < 2 ** (20 * 8 - 1)


def test_validity_days_overrides_profile(leaf):
    """validity_days replaces the profile's lifetime."""
    chain, key, _unused = leaf
    assert tp_x509.not_after(issue(chain, key, validity_days=30)) == NOW + 30 * DAY


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (NOW + 10 * DAY, NOW + 10 * DAY),  # shorter: honoured
        (NOW + 400 * DAY, NOW + 365 * DAY),  # longer than the profile: ignored
        (NOW - DAY, NOW + 365 * DAY),  # in the past: ignored
        (NOW + 365 * DAY, NOW + 365 * DAY),
    ],
    ids=["shorter", "longer", "past", "equal"],
)
def test_requested_not_after(requested, expected, leaf):
    """A request's notAfter can only shorten the lifetime."""
    chain, key, _unused = leaf
    assert tp_x509.not_after(issue(chain, key, requested_not_after=requested)) == expected


def test_validity_capped_at_issuer_not_after(subject_keys):
    """An end-entity certificate never outlives its issuing CA, whatever validity_days asks."""
    chain = tp_x509.CaChain.create("short", "ecdsa-p256", now=NOW, issuing_days=10)
    cert = issue(chain, subject_keys["ecdsa-p256"], validity_days=365)
    assert tp_x509.not_after(cert) == tp_x509.not_after(chain.issuing_cert) == NOW + 10 * DAY


def test_profile_key_types_restrict_subject_keys(chains, subject_keys):
    """A profile certifies only its key_types; others are InvalidInput."""
    profile = profiles.Profile("p256-only", ("digital_signature",), ("CLIENT_AUTH",), 30, key_types=("ecdsa-p256",))
    chain = chains["rsa-2048"]
    tp_x509.issue_certificate(
        chain.issuing_cert, chain.issuing_key, subject_keys["ecdsa-p256"].public_key(), SUBJECT, profile
    )
    with pytest.raises(InvalidInput) as info:
        tp_x509.issue_certificate(
            chain.issuing_cert, chain.issuing_key, subject_keys["rsa-2048"].public_key(), SUBJECT, profile
        )
    assert "rsa-2048" in str(info.value)


@pytest.mark.parametrize(
    "key",
    [lambda: ec.generate_private_key(ec.SECP521R1()), ed25519.Ed25519PrivateKey.generate],
    ids=["p521", "ed25519"],
)
def test_unsupported_subject_key(key, chains):
    """A subject key outside KEY_TYPES is InvalidInput."""
    chain = chains["ecdsa-p256"]
    with pytest.raises(InvalidInput):
        tp_x509.issue_certificate(chain.issuing_cert, chain.issuing_key, key().public_key(), SUBJECT, PROFILE)


# --- verify_chain ----------------------------------------------------------------------------------


def test_verify_chain_to_self_signed_root(leaf):
    """Without anchors, the chain's self-signed root ends the path: [leaf, issuing, root]."""
    chain, _unused, cert = leaf
    assert tp_x509.verify_chain(cert, [chain.root_cert, chain.issuing_cert]) == [
        cert,
        chain.issuing_cert,
        chain.root_cert,
    ]


def test_verify_chain_with_anchors(leaf):
    """With anchors, the path ends at the first trusted certificate (root or an intermediate)."""
    chain, _unused, cert = leaf
    assert tp_x509.verify_chain(cert, [chain.issuing_cert], anchors=[chain.root_cert]) == [
        cert,
        chain.issuing_cert,
        chain.root_cert,
    ]
    assert tp_x509.verify_chain(cert, [], anchors=[chain.issuing_cert]) == [cert, chain.issuing_cert]


@pytest.mark.parametrize(
    ("now", "reason"),
    [(NOW + 400 * DAY, "expired"), (NOW - DAY, "not yet valid")],
    ids=["expired", "not-yet-valid"],
)
def test_verify_chain_outside_validity(now, reason, leaf):
    """A certificate outside its validity at `now` is InvalidInput naming it."""
    chain, _unused, cert = leaf
    with pytest.raises(InvalidInput) as info:
        tp_x509.verify_chain(cert, chain.chain, now=now)
    assert "is not valid now" in str(info.value), reason


def test_verify_chain_checks_time_of_whole_chain(subject_keys):
    """A chain valid at one time fails once its issuing CA (and so the capped leaf) has expired."""
    chain = tp_x509.CaChain.create("old", "ecdsa-p256", now=NOW - 20 * DAY, issuing_days=10)
    cert = issue(chain, subject_keys["ecdsa-p256"], now=NOW - 15 * DAY)
    assert len(tp_x509.verify_chain(cert, chain.chain, now=NOW - 12 * DAY)) == 3
    with pytest.raises(InvalidInput) as info:
        tp_x509.verify_chain(cert, chain.chain)
    assert "is not valid now" in str(info.value)


def test_verify_chain_wrong_anchor(leaf, chains):
    """A chain ending in a root that is not among the anchors is InvalidInput."""
    chain, _unused, cert = leaf
    with pytest.raises(InvalidInput) as info:
        tp_x509.verify_chain(cert, chain.chain, anchors=[chains["rsa-2048"].root_cert])
    assert "not a trusted root" in str(info.value)


def test_verify_chain_missing_issuer(leaf):
    """Without the issuing CA, the leaf has no issuer: InvalidInput naming the missing issuer."""
    chain, _unused, cert = leaf
    with pytest.raises(InvalidInput) as info:
        tp_x509.verify_chain(cert, [chain.root_cert])
    assert "no issuer" in str(info.value) and "Issuing CA" in str(info.value)


def test_verify_chain_rejects_non_ca_issuer(leaf, subject_keys):
    """A certificate signed by an end-entity key does not chain, even with the right name and signature."""
    chain, key, cert = leaf
    child = tp_x509.issue_certificate(
        cert, key, subject_keys["ecdsa-p384"].public_key(), tp_x509.common_name("child"), PROFILE, now=NOW
    )
    assert tp_x509.is_issued_by(child, cert)
    with pytest.raises(InvalidInput) as info:
        tp_x509.verify_chain(child, [cert, *chain.chain])
    assert "no issuer" in str(info.value)


def test_verify_chain_rejects_impostor_ca(leaf):
    """A CA with the same name but another key is not the issuer."""
    chain, _unused, cert = leaf
    impostor = tp_x509.CaChain.create("d-ecdsa-p256", "ecdsa-p256", now=NOW)
    assert impostor.issuing_cert.subject == chain.issuing_cert.subject
    with pytest.raises(InvalidInput):
        tp_x509.verify_chain(cert, impostor.chain)
    with pytest.raises(InvalidInput):
        tp_x509.verify_chain(cert, [impostor.issuing_cert], anchors=[chain.root_cert])


# --- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "attributes"),
    [
        ("/CN=a/O=b", [(NameOID.COMMON_NAME, "a"), (NameOID.ORGANIZATION_NAME, "b")]),
        ("/CN=a\\/b/O=c", [(NameOID.COMMON_NAME, "a/b"), (NameOID.ORGANIZATION_NAME, "c")]),
        ("/cn=x/serialNumber=42", [(NameOID.COMMON_NAME, "x"), (NameOID.SERIAL_NUMBER, "42")]),
        ("/CN=a=b", [(NameOID.COMMON_NAME, "a=b")]),
        ("//CN=a/", [(NameOID.COMMON_NAME, "a")]),
        ("  /C=DE/ST=NRW/L=Bonn/OU=u/DC=example/UID=u1  ", None),
    ],
    ids=["simple", "escaped-slash", "case", "equals-in-value", "empty-parts", "many"],
)
def test_parse_openssl_form(text, attributes):
    """OpenSSL /A=v/B=w names parse in order; an escaped slash stays in the value."""
    name = tp_x509.parse_name(text)
    if attributes is None:
        assert len(name) == 6
    else:
        assert name == x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


@pytest.mark.parametrize("text", ["/CN=a\\/b/O=c", "/CN=Trustpoint Domain Credential/O=Trustpoint/C=DE"])
def test_parse_name_matches_openssl_subj(text, tmp_path):
    """parse_name gives the same name `openssl req -subj` puts in a CSR."""
    key = keys.generate_private_key("ecdsa-p256")
    (tmp_path / "key.pem").write_bytes(keys.private_key_to_pem(key))
    openssl("req", "-new", "-key", str(tmp_path / "key.pem"), "-subj", text, "-out", str(tmp_path / "req.pem"))
    csr = x509.load_pem_x509_csr((tmp_path / "req.pem").read_bytes())
    assert tp_x509.parse_name(text) == csr.subject


@pytest.mark.parametrize(
    ("text", "openssl_form"),
    [("CN=a,O=b", "/O=b/CN=a"), ("CN=a\\,b", None), ("CN=a+O=b", None), ("1.2.3.4=#0403616263", None)],
)
def test_parse_rfc4514_form(text, openssl_form):
    """RFC 4514 names parse (most specific first, escapes, multi-valued RDNs, dotted OIDs)."""
    name = tp_x509.parse_name(text)
    assert name.rfc4514_string() == x509.Name.from_rfc4514_string(text).rfc4514_string()
    if openssl_form:
        assert name == tp_x509.parse_name(openssl_form)


@pytest.mark.parametrize(
    "text",
    ["/CN", "/XX=a", "/CN=a/bogus", "CN", "FOO=bar", "/C=DEU", "/CN=" + "x" * 65],
    ids=["no-value", "unknown-attribute", "no-equals", "rfc-no-value", "rfc-unknown", "bad-country", "long-cn"],
)
def test_parse_name_errors(text):
    """Unparseable names and attribute values X.509 does not allow are InvalidInput.

    Core bug if the last two fail with ValueError: parse_name passes values to cryptography's
    NameAttribute unchecked (country must be 2 characters, CN at most 64).
    """
    with pytest.raises(InvalidInput):
        tp_x509.parse_name(text)


def test_common_name_and_name_to_string():
    """common_name builds CN-only names; name_to_string gives RFC 4514 text."""
    assert tp_x509.name_to_string(tp_x509.common_name("dev 1")) == "CN=dev 1"
    assert tp_x509.name_to_string(tp_x509.parse_name("/CN=a/O=b")) == "O=b,CN=a"


# --- loading and printing -------------------------------------------------------------------------------


def test_load_pem_bundle(chains):
    """load_certificates reads every certificate of a PEM bundle, text between blocks ignored, str or bytes."""
    chain = chains["ecdsa-p256"]
    bundle = "subject=...\n" + tp_x509.certificates_to_pem(chain.chain) + "\ntrailing text\n"
    assert tp_x509.load_certificates(bundle) == chain.chain
    assert tp_x509.load_certificates(bundle.encode()) == chain.chain


def test_load_der(chains):
    """A DER blob is one certificate; load_certificate returns it."""
    cert = chains["ecdsa-p256"].root_cert
    der = tp_x509.certificate_der(cert)
    assert tp_x509.load_certificates(der) == [cert]
    assert tp_x509.load_certificate(der) == cert


def test_load_openssl_pem(tmp_path):
    """A certificate written by openssl loads."""
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=o",
        "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem"),
    )  # fmt: skip
    (cert,) = tp_x509.load_certificates((tmp_path / "c.pem").read_bytes())
    assert cert.subject == tp_x509.common_name("o")


@pytest.mark.parametrize(
    "data",
    [b"\x30\x03\x02\x01\x00", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "garbage"],
    ids=["bad-der", "bad-pem", "text"],
)
def test_load_garbage(data):
    """Unreadable certificate data is InvalidInput."""
    with pytest.raises(InvalidInput):
        tp_x509.load_certificates(data)


@pytest.mark.parametrize("data", ["hello", b"hello", "  just some words\n"])
def test_load_text_without_pem(data):
    """Text without a PEM block (a str, or bytes that are no DER) says that a PEM certificate is
    missing, not how DER parsing failed."""
    with pytest.raises(InvalidInput, match=r"must hold at least one PEM certificate \(-----BEGIN CERTIFICATE-----\)"):
        tp_x509.load_certificates(data)


def test_load_empty_and_count(chains):
    """Empty input holds no certificate; load_certificate wants exactly one."""
    assert tp_x509.load_certificates(b"") == []
    with pytest.raises(InvalidInput):
        tp_x509.load_certificate(b"")
    with pytest.raises(InvalidInput) as info:
        tp_x509.load_certificate(tp_x509.certificates_to_pem(chains["ecdsa-p256"].chain))
    assert "found 2" in str(info.value)


def test_fingerprint_and_summary_match_openssl(leaf, tmp_path):
    """fingerprint is openssl's SHA-256 fingerprint; summary names serial, subject, issuer and dates."""
    chain, _unused, cert = leaf
    output = openssl("x509", "-noout", "-fingerprint", "-sha256", "-serial", "-in", write(tmp_path / "c.pem", cert))
    lines = dict(line.split("=", 1) for line in output.stdout.splitlines())
    assert tp_x509.fingerprint(cert) == lines["sha256 Fingerprint"].replace(":", "").lower()
    info = tp_x509.summary(cert)
    assert int(info["serial_number"], 16) == int(lines["serial"], 16) == cert.serial_number
    assert info["subject"] == SUBJECT.rfc4514_string()
    assert info["issuer"] == chain.issuing_cert.subject.rfc4514_string()
    assert info["not_after"] == (NOW + 365 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("kind", ["certificate", "csr"])
def test_malformed_extensions_are_invalid_input(kind):
    """A peer's certificate or CSR whose subjectAltName has a 3-byte iPAddress: subject_alt_names and
    extension_value raise InvalidInput naming what could not be read (cryptography raises ValueError)."""
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.17"), bytes.fromhex("30058703010203"))
    if kind == "certificate":
        item = (
            x509.CertificateBuilder()
            .subject_name(SUBJECT)
            .issuer_name(SUBJECT)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(NOW - DAY)
            .not_valid_after(NOW + DAY)
            .add_extension(san, critical=False)
            .sign(key, hashes.SHA256())
        )
    else:
        item = x509.CertificateSigningRequestBuilder().subject_name(SUBJECT).add_extension(san, False)
        item = item.sign(key, hashes.SHA256())
    what = "certificate request" if kind == "csr" else "certificate"
    with pytest.raises(InvalidInput, match="the %s's extensions cannot be read" % what):
        tp_x509.subject_alt_names(item)
    with pytest.raises(InvalidInput):
        tp_x509.extension_value(item, x509.BasicConstraints)
