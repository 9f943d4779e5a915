# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""AOKI zero-touch onboarding in upstream Trustpoint's wire format (spec revision v0.2).

A device leaves the factory with an IDevID and its owner's trust anchor. The owner's server holds a
DevOwnerID: a certificate, issued under that anchor, whose SAN URIs name the IDevIDs it owns
(`dev-owner:cert:<serialNumber>_<sha256 of the IDevID>`, `dev-owner:uri:<IDevID SAN URI>`, or for a whole
domain `dev-owner:ca:<sha256 of the domain's issuing CA>`). The server answers `GET /aoki/init/` (TLS
client authentication with the IDevID) with a JSON body signed by the DevOwnerID's key; the device
checks the DevOwnerID, the reference to its IDevID and the signature before it trusts anything in it.

Server and device both use this module; it knows the formats, not HTTP.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from .errors import InvalidInput
from .x509 import (
    certificate_der,
    certificates_to_pem,
    extension_value,
    fingerprint,
    is_issued_by,
    load_certificates,
    subject_alt_names,
    verify_chain,
)

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.x509.oid import NameOID
except ImportError:  # reported by deps.missing()
    pass

VERSION = "1.0"
SERVICE_TYPE = "_aoki._tcp.local."
INIT_PATH = "/aoki/init/"
CMP_PATH = "/.well-known/cmp/p/.aoki/initialization"
SIGNATURE_HEADER = "AOKI-Signature"
ALGORITHM_HEADER = "AOKI-Signature-Algorithm"
CONTENT_TYPE = "application/json"

# The signature algorithms of AOKI-Signature-Algorithm. RSA and ECDSA always hash with SHA-256, whatever
# the key size: upstream devices assume SHA-256 and ignore the header.
RSA_SHA256 = "1.2.840.113549.1.1.11"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
ED25519 = "1.3.101.112"
SIGNATURE_ALGORITHMS = (RSA_SHA256, ECDSA_SHA256, ED25519)

REF_CERT = "dev-owner:cert:"
REF_URI = "dev-owner:uri:"
REF_CA = "dev-owner:ca:"
REFERENCE_PREFIXES = (REF_CERT, REF_URI, REF_CA)
# Upstream devices verify the DevOwnerID without intermediates: issued directly by an owner anchor.
DEFAULT_OWNER_CHAIN_DEPTH = 2
# The mDNS TXT keys (RFC 6763 6.4: short keys). Upstream advertises none; devices that ignore TXT work.
TXT_VERSION = "ver"
TXT_INIT_PATH = "path"
TXT_CMP_PATH = "cmppath"
TXT_TLS_FINGERPRINT = "tlsfp"


class OwnerRefused(InvalidInput):
    """A server's AOKI answer or DevOwnerID fails a check: the device must not trust that server."""


# --- references: which IDevIDs a DevOwnerID owns --------------------------------------------------


def idevid_serial(idevid):
    """The IDevID's subject serialNumber, '' without one (the reference form then starts with '_')."""
    values = [a.value for a in idevid.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)]
    return values[0] if values else ""


def cert_reference(idevid):
    """dev-owner:cert:<serialNumber>_<sha256 of the IDevID's DER, lowercase hex>."""
    return "%s%s_%s" % (REF_CERT, idevid_serial(idevid), fingerprint(idevid))


def uri_references(idevid):
    """dev-owner:uri:<uri> for each SAN URI of the IDevID."""
    return [
        REF_URI + name.value for name in subject_alt_names(idevid) if isinstance(name, x509.UniformResourceIdentifier)
    ]


def ca_reference(ca_certificate):
    """dev-owner:ca:<sha256 of a domain issuing CA's DER>: a DevOwnerID for every device of that CA."""
    return REF_CA + fingerprint(ca_certificate)


def idevid_references(idevid):
    """The references a DevOwnerID may name this IDevID by, most specific first."""
    return [cert_reference(idevid), *uri_references(idevid)]


def owner_references(devownerid):
    """The dev-owner: SAN URIs of a DevOwnerID."""
    return [
        name.value
        for name in subject_alt_names(devownerid)
        if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(REFERENCE_PREFIXES)
    ]


# --- the signed init answer ------------------------------------------------------------------------


def signature_algorithm(private_key):
    """The AOKI-Signature-Algorithm OID for an owner key: RSA and ECDSA with SHA-256, or Ed25519."""
    if isinstance(private_key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return RSA_SHA256
    if isinstance(private_key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return ECDSA_SHA256
    if isinstance(private_key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return ED25519
    raise InvalidInput("a DevOwnerID key must be RSA, ECDSA or Ed25519, not %s" % type(private_key).__name__)


def sign(private_key, body):
    """(AOKI-Signature value: base64 of the signature over body, AOKI-Signature-Algorithm OID)."""
    oid = signature_algorithm(private_key)
    if oid == RSA_SHA256:
        signature = private_key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    elif oid == ECDSA_SHA256:
        signature = private_key.sign(body, ec.ECDSA(hashes.SHA256()))
    else:
        signature = private_key.sign(body)
    return base64.b64encode(signature).decode("ascii"), oid


def verify_signature(certificate, body, signature, algorithm=None):
    """Check AOKI-Signature over body with the DevOwnerID certificate; raise OwnerRefused otherwise.

    algorithm (the AOKI-Signature-Algorithm header) must name an algorithm that fits the key; without it
    the upstream convention holds (RSA PKCS#1 v1.5 or ECDSA with SHA-256).
    """
    try:
        raw = base64.b64decode((signature or "").strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OwnerRefused("the %s header is not base64: %s" % (SIGNATURE_HEADER, exc)) from exc
    if not raw:
        raise OwnerRefused("the answer carries no %s" % SIGNATURE_HEADER)
    try:
        public_key = certificate.public_key()
        expected = signature_algorithm(public_key)
    except (InvalidInput, ValueError, UnsupportedAlgorithm) as exc:
        raise OwnerRefused("the DevOwnerID's key cannot verify the answer: %s" % exc) from exc
    if algorithm is not None and algorithm.strip() != expected:
        raise OwnerRefused(
            "%s %s does not fit the DevOwnerID's %s key (expected %s)"
            % (ALGORITHM_HEADER, algorithm.strip()[:64], type(public_key).__name__, expected)
        )
    try:
        if expected == RSA_SHA256:
            public_key.verify(raw, body, padding.PKCS1v15(), hashes.SHA256())
        elif expected == ECDSA_SHA256:
            public_key.verify(raw, body, ec.ECDSA(hashes.SHA256()))
        else:
            public_key.verify(raw, body)
    except InvalidSignature:
        raise OwnerRefused("the answer's %s does not verify with the DevOwnerID's key" % SIGNATURE_HEADER) from None


def init_body(owner_certificate, tls_truststore, protocols):
    """The aoki-init JSON body as bytes, exactly as upstream writes it (key order, json.dumps separators).

    tls_truststore: certificates, the anchor the device should pin first (upstream devices read only the
    first PEM block); protocols: (name, absolute URL) pairs, EST first.
    """
    document = {
        "aoki-init": {
            "version": VERSION,
            "enrollment-info": {"protocols": [{"protocol": name, "url": url} for name, url in protocols]},
            "owner-id-cert": certificates_to_pem(owner_certificate),
            "tls-truststore": certificates_to_pem(list(tls_truststore)),
        }
    }
    return json.dumps(document).encode()


class InitAnswer:
    """A parsed aoki-init body: owner_certificate, tls_truststore (certificates), protocols ((name, url))."""

    def __init__(self, version, owner_certificate, tls_truststore, protocols):
        self.version = version
        self.owner_certificate = owner_certificate
        self.tls_truststore = tls_truststore
        self.protocols = protocols

    @classmethod
    def parse(cls, body, base_url=None):
        """Parse body; relative protocol URLs are joined to base_url (as upstream devices do)."""
        try:
            document = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
            init = document["aoki-init"]
            version = str(init.get("version", ""))
            owner_pem, trust_pem = init["owner-id-cert"], init["tls-truststore"]
            entries = init["enrollment-info"]["protocols"]
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:  # nested past the parser
            raise OwnerRefused("the answer is not an aoki-init document: %s" % exc) from exc
        if not version.startswith("1."):
            raise OwnerRefused("aoki-init version %r is not supported (this device speaks 1.x)" % version[:16])
        if not isinstance(owner_pem, str) or not isinstance(trust_pem, str) or not isinstance(entries, list):
            raise OwnerRefused("the aoki-init document has fields of the wrong type")
        try:
            owners = load_certificates(owner_pem)
            tls_truststore = load_certificates(trust_pem)
        except InvalidInput as exc:
            raise OwnerRefused("the aoki-init document holds an unreadable certificate: %s" % exc) from exc
        if len(owners) != 1 or not tls_truststore:
            raise OwnerRefused("owner-id-cert must hold one certificate and tls-truststore at least one")
        protocols = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("protocol"), str):
                continue
            url = entry.get("url")
            if not isinstance(url, str) or not url:
                continue
            if not url.startswith("https://"):
                if base_url is None or url.startswith(("http://", "//")):
                    continue  # credentials travel over TLS only
                url = base_url.rstrip("/") + "/" + url.lstrip("/")
            protocols.append((entry["protocol"].upper(), url))
        if not protocols:
            raise OwnerRefused("the aoki-init document lists no enrollment protocol with an HTTPS URL")
        return cls(version, owners[0], tls_truststore, protocols)


# --- the device's checks of an owner ---------------------------------------------------------------


def check_owner(
    devownerid, owner_anchors, idevid, extra_certificates=(), max_depth=DEFAULT_OWNER_CHAIN_DEPTH, now=None
):
    """Check that devownerid is this device's owner; return the reference that names the IDevID.

    It must chain to owner_anchors in at most max_depth certificates (itself and the anchor count; 2:
    issued directly by an anchor), be valid now, may sign (KeyUsage, if present, allows digitalSignature)
    and name the IDevID (dev-owner:cert: or dev-owner:uri:) or the issuing CA of the domain that certifies
    it (dev-owner:ca: of one of extra_certificates). Raises OwnerRefused saying which check failed.
    """
    if not owner_anchors:
        raise OwnerRefused("the device has no owner trust anchor to check a DevOwnerID with")
    try:
        path = verify_chain(devownerid, list(extra_certificates), list(owner_anchors), now)
    except InvalidInput as exc:
        raise OwnerRefused("the DevOwnerID does not chain to the device's owner trust anchor: %s" % exc) from exc
    if len(path) > max_depth:
        raise OwnerRefused(
            "the DevOwnerID's chain has %d certificates; this device accepts at most %d" % (len(path), max_depth)
        )
    usage = extension_value(devownerid, x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        raise OwnerRefused("the DevOwnerID's KeyUsage does not allow digitalSignature")
    named = set(owner_references(devownerid))
    for reference in idevid_references(idevid):
        if reference in named:
            return reference
    for certificate in extra_certificates:
        reference = ca_reference(certificate)
        if reference in named:
            return reference
    raise OwnerRefused("the DevOwnerID does not name this device's IDevID (%s)" % cert_reference(idevid))


def check_rollback(devownerid, previous):
    """A device that was onboarded accepts only its previous DevOwnerID or one that it issued (ownership
    transfer): raise OwnerRefused for any other."""
    if previous is None or certificate_der(devownerid) == certificate_der(previous):
        return
    if is_issued_by(devownerid, previous):
        return
    raise OwnerRefused(
        "the DevOwnerID is neither the one this device was onboarded with (%s) nor issued by it"
        % previous.subject.rfc4514_string()
    )


def anchor_first(chain):
    """A TLS certificate chain (leaf first, as a server sends it) reordered anchor first, leaf last:
    what tls-truststore carries, since upstream devices pin only its first certificate."""
    chain = list(chain)
    return list(reversed(chain)) if len(chain) > 1 else chain


def pin(certificate):
    """A short, URL-safe SHA-256 pin of a certificate (base64url without padding)."""
    digest = hashlib.sha256(certificate_der(certificate)).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
