# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""X.509 for the PKI: names, a domain's CA chain, issuance under a profile, PEM/DER, chain checks."""

from __future__ import annotations

import datetime
import ipaddress
import re

from . import x509_der
from .errors import InvalidInput
from .keys import generate_private_key, hash_for, key_type_of, verify_signature

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
except ImportError:  # reported by deps.missing()
    pass

UTC = datetime.timezone.utc
# Issued certificates start a little in the past: device clocks drift.
BACKDATE = datetime.timedelta(minutes=5)
ROOT_CA_DAYS = 7300
ISSUING_CA_DAYS = 3650

_ATTRIBUTES = {
    "CN": "COMMON_NAME",
    "C": "COUNTRY_NAME",
    "L": "LOCALITY_NAME",
    "ST": "STATE_OR_PROVINCE_NAME",
    "O": "ORGANIZATION_NAME",
    "OU": "ORGANIZATIONAL_UNIT_NAME",
    "SERIALNUMBER": "SERIAL_NUMBER",
    "EMAILADDRESS": "EMAIL_ADDRESS",
    "DC": "DOMAIN_COMPONENT",
    "UID": "USER_ID",
    "PSEUDONYM": "PSEUDONYM",
    "DNQUALIFIER": "DN_QUALIFIER",
}


def now_utc():
    return datetime.datetime.now(UTC)


def parse_name(text):
    """Parse a distinguished name in OpenSSL form (/CN=a/O=b) or RFC 4514 form (CN=a,O=b)."""
    text = (text or "").strip()
    if not text.startswith("/"):
        try:
            return _common_name_bounded(x509.Name.from_rfc4514_string(text), text)
        except ValueError as exc:
            raise InvalidInput("cannot parse subject %r: %s" % (text, exc)) from exc
    attributes = []
    # Split on slashes not escaped by a backslash, as `openssl -subj` does.
    for part in re.split(r"(?<!\\)/", text[1:]):
        if not part:
            continue
        key, sep, value = part.partition("=")
        oid_name = _ATTRIBUTES.get(key.strip().upper())
        if not sep or oid_name is None:
            raise InvalidInput("cannot parse subject %r: unknown attribute in %r" % (text, part))
        if not value:
            raise InvalidInput("cannot parse subject %r: %s has no value" % (text, key))
        try:
            attributes.append(x509.NameAttribute(getattr(NameOID, oid_name), value.replace("\\/", "/")))
        except ValueError as exc:  # e.g. a country that is not two letters, a common name over 64
            raise InvalidInput("cannot parse subject %r: %s" % (text, exc)) from exc
    return _common_name_bounded(x509.Name(attributes), text)


def _common_name_bounded(name, text):
    """name, unless a common name is over 64 characters (RFC 5280 ub-common-name): cryptography refuses one from 43
    on, and the core allows older versions (deps.CRYPTOGRAPHY_FLOOR)."""
    for attribute in name.get_attributes_for_oid(NameOID.COMMON_NAME):
        if len(attribute.value) > 64:
            raise InvalidInput("cannot parse subject %r: a common name is at most 64 characters" % text)
    return name


_SAN_TYPES = {"DNS": "DNSName", "IP": "IPAddress", "URI": "UniformResourceIdentifier", "EMAIL": "RFC822Name"}


def parse_general_name(text):
    """A subject alternative name written as OpenSSL and community.crypto do: DNS:host, IP:10.0.0.1, URI:urn:x,
    email:a@b.example. InvalidInput for another form."""
    kind, sep, value = (text or "").partition(":") if isinstance(text, str) else ("", "", "")
    kind = kind.strip().upper()
    value = value.strip()
    if not sep or kind not in _SAN_TYPES or not value:
        raise InvalidInput(
            "subject alternative name %r must be DNS:<name>, IP:<address>, URI:<uri> or email:<address>" % text
        )
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in value):
        raise InvalidInput("subject alternative name %r contains a space or a control character" % text)
    if kind == "IP":
        try:
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError as exc:
            raise InvalidInput("subject alternative name %r: %s" % (text, exc)) from exc
    try:
        return getattr(x509, _SAN_TYPES[kind])(value)
    except ValueError as exc:
        raise InvalidInput("subject alternative name %r: %s" % (text, exc)) from exc


def general_name_to_string(name):
    """The DNS:/IP:/URI:/email: form of a cryptography GeneralName (what parse_general_name reads)."""
    for prefix, class_name in _SAN_TYPES.items():
        if type(name).__name__ == class_name:
            return "%s:%s" % ("email" if prefix == "EMAIL" else prefix, name.value)
    return "%s:%s" % (type(name).__name__, name.value)


def common_name(value):
    """A Name of just a common name."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


def name_to_string(name):
    return name.rfc4514_string()


def not_after(cert):
    """notAfter as an aware datetime (works with cryptography before 42, as on older devices)."""
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=UTC)


def not_before(cert):
    value = getattr(cert, "not_valid_before_utc", None)
    return value if value is not None else cert.not_valid_before.replace(tzinfo=UTC)


def _ca_certificate(subject, issuer, public_key, signing_key, issuer_cert, path_length, days, now):
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    if issuer_cert is None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    else:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            # digitalSignature too: a CA that signs CMP responses needs it (OpenSSL checks).
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
    )
    return builder.sign(signing_key, hash_for(signing_key))


def self_signed_ca(subject, private_key, days, path_length=None, now=None):
    """A self-signed CA certificate (BasicConstraints, KeyUsage keyCertSign/cRLSign, SKI, AKI)."""
    return _ca_certificate(
        subject, subject, private_key.public_key(), private_key, None, path_length, days, now or now_utc()
    )


class CaChain:
    """A domain's self-made CA chain: a self-signed root and an issuing CA below it."""

    def __init__(self, root_cert, root_key, issuing_cert, issuing_key):
        self.root_cert = root_cert
        self.root_key = root_key
        self.issuing_cert = issuing_cert
        self.issuing_key = issuing_key

    @classmethod
    def create(cls, label, key_type, now=None, root_days=ROOT_CA_DAYS, issuing_days=ISSUING_CA_DAYS):
        """Create a root and an issuing CA of key_type, named after label (the domain name)."""
        now = now or now_utc()
        root_key = generate_private_key(key_type)
        issuing_key = generate_private_key(key_type)
        root_name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "%s Root CA" % label),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Trustpoint"),
            ]
        )
        issuing_name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "%s Issuing CA" % label),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Trustpoint"),
            ]
        )
        root_cert = self_signed_ca(root_name, root_key, root_days, path_length=1, now=now)
        issuing_cert = _ca_certificate(
            issuing_name, root_name, issuing_key.public_key(), root_key, root_cert, 0, issuing_days, now
        )
        return cls(root_cert, root_key, issuing_cert, issuing_key)

    @property
    def chain(self):
        """Issuing CA first, then the root: the order CMP extraCerts and chain files use."""
        return [self.issuing_cert, self.root_cert]


def issue_certificate(
    issuer_cert,
    issuer_key,
    public_key,
    subject,
    profile,
    now=None,
    validity_days=None,
    requested_not_after=None,
    subject_alt_names=(),
    crl_url=None,
):
    """Issue an end-entity certificate for public_key and subject under profile.

    The lifetime is validity_days (default: the profile's), shortened to requested_not_after when the
    request asks for less, and never beyond the issuer's own notAfter. subject_alt_names are
    cryptography GeneralNames; crl_url, when given, becomes the CRL distribution point.
    """
    key_type = key_type_of(public_key)
    if key_type not in profile.key_types:
        raise InvalidInput("profile %s does not certify %s keys" % (profile.name, key_type))
    now = now or now_utc()
    end = now + datetime.timedelta(days=validity_days or profile.validity_days)
    if requested_not_after is not None and now < requested_not_after < end:
        end = requested_not_after
    end = min(end, not_after(issuer_cert))
    if end <= now:
        raise InvalidInput(
            "the issuing CA %s expired on %s: it issues no more certificates"
            % (name_to_string(issuer_cert.subject), not_after(issuer_cert).isoformat())
        )
    # The certificate's DER from parts (x509_der.py): the bytes cryptography's builder would write, at 60 % of its
    # CPU.
    hash_algorithm = hash_for(issuer_key)
    tbs = x509_der.tbs_certificate(
        issuer_cert,
        issuer_key,
        hash_algorithm,
        public_key,
        subject,
        x509.random_serial_number(),
        now - BACKDATE,
        end,
        profile.key_usage,
        profile.extended_key_usage_oids(),
        subject_alt_names,
        # Critical when the subject is empty (RFC 5280 4.2.1.6) or the profile says so.
        san_critical=getattr(profile, "san_critical", False) or not len(subject),
        crl_url=crl_url,
    )
    return x509_der.sign_certificate(tbs, issuer_key, hash_algorithm)


def build_crl(issuer_cert, issuer_key, revoked, number, next_update_hours=24, now=None):
    """A CRL of issuer: revoked is a list of (serial number, revocation time, reason name or None)."""
    now = now or now_utc()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(hours=next_update_hours))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False)
    )
    for serial, when, reason in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        if reason and reason != "unspecified":
            entry = entry.add_extension(
                x509.CRLReason(getattr(x509.ReasonFlags, _REASON_FLAGS[reason])), critical=False
            )
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(issuer_key, hash_for(issuer_key))


# CRL reason names (RFC 5280, as CMP and the database spell them) -> cryptography's ReasonFlags.
_REASON_FLAGS = {
    "keyCompromise": "key_compromise",
    "cACompromise": "ca_compromise",
    "affiliationChanged": "affiliation_changed",
    "superseded": "superseded",
    "cessationOfOperation": "cessation_of_operation",
    "certificateHold": "certificate_hold",
    "privilegeWithdrawn": "privilege_withdrawn",
    "aACompromise": "aa_compromise",
    "removeFromCRL": "remove_from_crl",
}


def load_certificates(data):
    """Load every certificate of a PEM bundle, or the one certificate of a DER blob.

    Text (a str, or bytes that do not start like DER, with a SEQUENCE) must be PEM: text without a PEM
    block is InvalidInput that says so, not an ASN.1 error about DER it never was. Empty input (or only
    whitespace) holds no certificate.
    """
    text = isinstance(data, str)
    if text:
        data = data.encode()
    try:
        if b"-----BEGIN" in data:
            blocks = re.findall(b"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S)
            return [x509.load_pem_x509_certificate(block) for block in blocks]
        if not data.strip():
            return []
        if text or not data.startswith(b"\x30"):
            raise InvalidInput(
                "must hold at least one PEM certificate (-----BEGIN CERTIFICATE-----); this text holds none"
            )
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise InvalidInput("not a readable certificate: %s" % exc) from exc


def load_certificate(data):
    certs = load_certificates(data)
    if len(certs) != 1:
        raise InvalidInput("expected one certificate, found %d" % len(certs))
    return certs[0]


def certificate_der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def certificates_to_pem(certs):
    """PEM of a certificate or a list of certificates, as text."""
    if not isinstance(certs, (list, tuple)):
        certs = [certs]
    return "".join(cert.public_bytes(serialization.Encoding.PEM).decode() for cert in certs)


def fingerprint(cert):
    """SHA-256 fingerprint, lowercase hex without separators."""
    return cert.fingerprint(hashes.SHA256()).hex()


def serial_hex(cert):
    return format(cert.serial_number, "x")


def summary(cert):
    """What the API, the modules and the logs say about a certificate."""
    return {
        "serial_number": serial_hex(cert),
        "subject": name_to_string(cert.subject),
        "issuer": name_to_string(cert.issuer),
        "not_before": not_before(cert).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": not_after(cert).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fingerprint_sha256": fingerprint(cert),
    }


def csr_signature_valid(csr):
    """Whether csr's self-signature (its proof of possession) verifies.

    cryptography reads a CSR's subject and key only when asked, and raises for a peer's it cannot read (an
    unknown key algorithm or curve, a subject attribute of the wrong type): that is InvalidInput here,
    before anything uses the CSR. Its extensions are read by extension_value().
    """
    try:
        csr.subject.rfc4514_string()
        csr.public_key()
        return csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInput("the certificate request cannot be read: %s" % exc) from exc


def extension_value(item, extension_class):
    """The value of the extension_class extension of a certificate or CSR, or None without one.

    cryptography parses the extensions on first access and raises for a peer's malformed ones (the same
    extension twice, an iPAddress that is not 4 or 16 bytes): that is InvalidInput here, not a crash.
    """
    try:
        return item.extensions.get_extension_for_class(extension_class).value
    except x509.ExtensionNotFound:
        return None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        what = "certificate request" if isinstance(item, x509.CertificateSigningRequest) else "certificate"
        raise InvalidInput("the %s's extensions cannot be read: %s" % (what, exc)) from exc


def subject_alt_names(item):
    """The subject alternative names of a certificate or CSR, as a list of cryptography GeneralNames.

    Raises InvalidInput when its extensions are malformed."""
    value = extension_value(item, x509.SubjectAlternativeName)
    return list(value) if value is not None else []


def is_issued_by(cert, issuer):
    """True when issuer's name and key signed cert."""
    if cert.issuer != issuer.subject:
        return False
    if hasattr(cert, "verify_directly_issued_by"):  # cryptography >= 40: every signature algorithm
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False
        return True
    return verify_signature(
        issuer.public_key(), cert.signature, cert.tbs_certificate_bytes, cert.signature_hash_algorithm
    )


def _is_ca(cert):
    constraints = extension_value(cert, x509.BasicConstraints)
    return constraints is not None and constraints.ca


def verify_chain(cert, chain, anchors=None, now=None):
    """Verify that cert chains through chain to a trust anchor, and that all are valid at now.

    anchors are the trusted roots; without them the self-signed certificate that ends the chain is the
    anchor. Returns the path [cert, ..., anchor]; raises InvalidInput saying what is wrong.
    """
    now = now or now_utc()
    candidates = list(chain) + list(anchors or [])
    path = [cert]
    while True:
        current = path[-1]
        if not not_before(current) <= now <= not_after(current):
            raise InvalidInput(
                "certificate %s is not valid now (valid %s to %s)"
                % (
                    name_to_string(current.subject),
                    summary(current)["not_before"],
                    summary(current)["not_after"],
                )
            )
        if anchors is not None and any(certificate_der(current) == certificate_der(a) for a in anchors):
            return path
        if current.issuer == current.subject and is_issued_by(current, current):
            if anchors is None:
                return path
            raise InvalidInput("chain ends in %s, which is not a trusted root" % name_to_string(current.subject))
        if len(path) > 8:
            raise InvalidInput("certificate chain is too long")
        issuer = next((c for c in candidates if _is_ca(c) and is_issued_by(current, c)), None)
        if issuer is None:
            raise InvalidInput(
                "no issuer of %s (issued by %s) in the chain"
                % (name_to_string(current.subject), name_to_string(current.issuer))
            )
        path.append(issuer)
