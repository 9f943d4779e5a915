# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""CMP messages (RFC 4210/9480/9483): decode, inspect and build PKIMessages.

Only this module and cmp_protection know the ASN.1 of CMP. Callers see plain Python values:
bytes, ints, names as cryptography x509.Name, certificates as cryptography certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from . import cmp_der, signatures
from .asn1 import brief, decode, der_children, der_integer, der_oid, der_sequence, der_tlv, inner_der, optional
from .errors import CmpFailure, InvalidInput, excerpt
from .keys import load_public_key_der, public_key_der
from .x509 import certificate_der, csr_signature_valid

try:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from pyasn1.codec.der import decoder, encoder
    from pyasn1.error import PyAsn1Error
    from pyasn1.type import univ, useful
    from pyasn1_alt_modules import rfc4211, rfc5280, rfc6402, rfc9480
except ImportError:  # reported by deps.missing()
    pass

PVNO_CMP2000 = 2
PVNO_CMP2021 = 3
ID_IT_IMPLICIT_CONFIRM = "1.3.6.1.5.5.7.4.13"
# RFC 9483 section 3.1: 16 random bytes are enough for nonces and transaction IDs.
NONCE_SIZE = 16

# The highest PKIBody CHOICE number (RFC 9480: pollRep [26]).
_MAX_BODY_TAG = 26
# The most ASN.1 values of a request the server lets pyasn1 decode (about 20 us each): OpenSSL's requests hold
# 30-190 (a signed ir with its chain 185), a certificate 40-90; 128 KiB of tiny values would be 40,000. Not for
# answers: a genp's CRLs hold five values per revoked certificate.
MAX_REQUEST_ASN1_VALUES = 2000
# The PKIBody CHOICE numbers of ir, cr and kur, whose CertReqMessages cmp_der reads.
_CERT_REQUEST_TAGS = (0, 2, 7)
_BODY_NAMES = {}  # PKIBody CHOICE number: its name, filled on first use


def _body_name(number):
    if not _BODY_NAMES:
        for named_type in rfc9480.PKIBody.componentType.namedTypes:
            _BODY_NAMES[named_type.asn1Object.tagSet[-1].tagId] = named_type.name
    return _BODY_NAMES[number]


# PKIFailureInfo bit names, by bit number (RFC 4210 section 5.2.3).
FAIL_INFO_BITS = (
    "badAlg",
    "badMessageCheck",
    "badRequest",
    "badTime",
    "badCertId",
    "badDataFormat",
    "wrongAuthority",
    "incorrectData",
    "missingTimeStamp",
    "badPOP",
    "certRevoked",
    "certConfirmed",
    "wrongIntegrity",
    "badRecipientNonce",
    "timeNotAvailable",
    "unacceptedPolicy",
    "unacceptedExtension",
    "addInfoNotAvailable",
    "badSenderNonce",
    "badCertTemplate",
    "signerNotTrusted",
    "transactionIdInUse",
    "unsupportedVersion",
    "notAuthorized",
    "systemUnavail",
    "systemFailure",
    "duplicateCertReq",
)

STATUS_ACCEPTED = 0
STATUS_GRANTED_WITH_MODS = 1
STATUS_REJECTION = 2
STATUS_WAITING = 3

ID_REGCTRL_OLD_CERT_ID = "1.3.6.1.5.5.7.5.1.5"
ID_CE_SUBJECT_ALT_NAME = "2.5.29.17"
# General message info types (RFC 9480 section 4.3, RFC 9483 section 4.3).
ID_IT_SIGN_KEY_PAIR_TYPES = "1.3.6.1.5.5.7.4.2"
ID_IT_CA_CERTS = "1.3.6.1.5.5.7.4.17"
ID_IT_ROOT_CA_KEY_UPDATE = "1.3.6.1.5.5.7.4.18"
ID_IT_CERT_REQ_TEMPLATE = "1.3.6.1.5.5.7.4.19"
ID_IT_ROOT_CA_CERT = "1.3.6.1.5.5.7.4.20"
ID_IT_CRL_STATUS_LIST = "1.3.6.1.5.5.7.4.22"
ID_IT_CRLS = "1.3.6.1.5.5.7.4.23"
# CRL reason codes (RFC 5280 5.3.1) by name.
REASON_CODES = (
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    None,
    "removeFromCRL",
    "privilegeWithdrawn",
    "aACompromise",
)
# The reasons a device gives when it revokes its own certificate (trustpoint-agent; the enroll module's
# dependency-free list, _ansible/enroll_backends.REVOCATION_REASONS, is the same: test_cmp_message checks).
DEVICE_REVOCATION_REASONS = ("unspecified", "keyCompromise", "affiliationChanged", "superseded", "cessationOfOperation")


def random_nonce():
    return os.urandom(NONCE_SIZE)


def _name_from_general_name(general_name):
    """A GeneralName's directoryName as a cryptography Name; None for NULL-DN or other forms."""
    if not general_name.isValue or general_name.getName() != "directoryName":
        return None
    name = _load_name(general_name["directoryName"])
    return name if len(name) else None


def _load_name(asn1_name):
    """A pyasn1 Name as a cryptography Name (cryptography has no public parser for a bare Name)."""
    attributes = []
    for rdn in asn1_name["rdnSequence"]:
        rdn_attributes = []
        for atv in rdn:
            oid = x509.ObjectIdentifier(str(atv["type"]))
            value = decode(bytes(atv["value"]))
            rdn_attributes.append(x509.NameAttribute(oid, str(value)))
        attributes.append(x509.RelativeDistinguishedName(rdn_attributes))
    return x509.Name(attributes)


def _load_name_der(der):
    """A Name's DER as a cryptography Name: _load_name's result. The common form (string values) is read by
    cmp_der; any other by pyasn1, which then decides what is wrong with it."""
    try:
        rdns = cmp_der.name_values(der)
    except cmp_der.NotCommon:
        return _load_name(decode(der, rfc5280.Name()))
    return x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(x509.ObjectIdentifier(oid), text) for oid, text in rdn])
            for rdn in rdns
        ]
    )


@cmp_der.cached_if_small
def _name_from_der(der):
    """A directoryName's Name DER as a cryptography Name, None for NULL-DN: _name_from_general_name's result.
    Cached: a CA's name is every answer's sender and every request's recipient."""
    name = _load_name_der(der)
    return name if len(name) else None


class CmpMessage:
    """A decoded PKIMessage and the header fields the protocol logic needs.

    decode() reads the common form with cmp_der (the envelope, and the body of an ir, cr or kur; other bodies
    with pyasn1), everything else with pyasn1 alone: the fields are the same either way
    (tests/unit/test_cmp_der.py). asn1_body and body are pyasn1's, decoded on first use when cmp_der read
    the body."""

    def __init__(self, der, asn1):
        self.der = der
        self._asn1 = asn1
        header = asn1["header"]
        self.header = header
        self.pvno = int(header["pvno"])
        self._asn1_body = asn1["body"]
        self.body_type = asn1["body"].getName()
        self.sender = _name_from_general_name(header["sender"])
        # The GeneralName form of sender: RFC 9483 3.1 requires a directoryName.
        self.sender_form = header["sender"].getName() if header["sender"].isValue else None
        self.recipient = _name_from_general_name(header["recipient"])
        self.transaction_id = self._octets("transactionID")
        self.sender_nonce = self._octets("senderNonce")
        self.recip_nonce = self._octets("recipNonce")
        self.sender_kid = self._octets("senderKID")
        self.recip_kid = self._octets("recipKID")
        message_time = optional(header, "messageTime")
        self.message_time = message_time.asDateTime if message_time is not None else None
        if self.message_time is not None and self.message_time.tzinfo is None:
            self.message_time = self.message_time.replace(tzinfo=datetime.timezone.utc)
        protection_alg = optional(header, "protectionAlg")
        self.protection_alg = str(protection_alg["algorithm"]) if protection_alg is not None else None
        params = optional(protection_alg, "parameters") if protection_alg is not None else None
        # Signature algorithms (ecdsa-with-SHA256, Ed25519) carry no parameters.
        self.protection_params = bytes(params) if params is not None else None
        protection = optional(asn1, "protection")
        self.protection = protection.asOctets() if protection is not None else None
        self.implicit_confirm = any(
            str(itav["infoType"]) == ID_IT_IMPLICIT_CONFIRM for itav in (optional(header, "generalInfo") or [])
        )
        extra = optional(asn1, "extraCerts")
        self.extra_certs = [encoder.encode(cert) for cert in extra] if extra is not None else []
        header_der, body_der = der_children(der)[:2]
        # MACs and signatures cover the header and body exactly as received.
        self.protected_part = der_sequence(header_der, body_der)

    def _octets(self, name):
        value = optional(self.header, name)
        return value.asOctets() if value is not None else None

    # ir, cr, kur as cmp_der read them (CertReqFields), when it did: the body is then decoded on first use.
    _cert_req_fields = None

    @classmethod
    def _from_envelope(cls, der, envelope, max_values=None):
        """The message from cmp_der's envelope; the body of an ir, cr or kur read by cmp_der too, any other (and
        one outside cmp_der's common form) decoded with pyasn1."""
        self = cls.__new__(cls)
        self._asn1_body = None
        if envelope.body_tag in _CERT_REQUEST_TAGS:
            try:
                self._cert_req_fields = cmp_der.read_cert_requests(envelope.body_der)
            except cmp_der.NotCommon:
                pass
        if self._cert_req_fields is None:
            if max_values is not None and cmp_der.count_values(envelope.body_der, max_values) > max_values:
                raise cmp_der.NotCommon("too many values for pyasn1")  # decode() refuses it
            asn1_body, rest = decoder.decode(envelope.body_der, asn1Spec=rfc9480.PKIBody())
            if rest:
                raise cmp_der.NotCommon("trailing data after the body")
            self._asn1_body = asn1_body
        self._body_der = envelope.body_der
        self.der = der
        self._asn1 = None
        self.header = None
        self.pvno = envelope.pvno
        self.body_type = _body_name(envelope.body_tag)
        self.sender = _name_from_der(envelope.sender_der)
        self.sender_form = "directoryName"
        self.recipient = _name_from_der(envelope.recipient_der)
        self.transaction_id = envelope.transaction_id
        self.sender_nonce = envelope.sender_nonce
        self.recip_nonce = envelope.recip_nonce
        self.sender_kid = envelope.sender_kid
        self.recip_kid = envelope.recip_kid
        self.message_time = envelope.message_time
        self.protection_alg = envelope.protection_alg
        self.protection_params = envelope.protection_params
        self.protection = envelope.protection
        self.implicit_confirm = envelope.implicit_confirm
        self.extra_certs = list(envelope.extra_certs)
        self.protected_part = envelope.protected_part
        return self

    @property
    def asn1_body(self):
        """The PKIBody as pyasn1 decodes it (decoded on first use when cmp_der read it)."""
        if self._asn1_body is None:
            self._asn1_body = decode(self._body_der, rfc9480.PKIBody())
        return self._asn1_body

    @property
    def body(self):
        """The PKIBody's content (the CHOICE's value) as pyasn1 decodes it."""
        return self.asn1_body[self.body_type]

    @property
    def asn1(self):
        """The whole message as pyasn1 decodes it (decoded on first use when cmp_der read it)."""
        if self._asn1 is None:
            self._asn1 = decode(self.der, rfc9480.PKIMessage())
        return self._asn1

    @classmethod
    def decode(cls, der, fast=True, max_values=None):
        """Decode DER; anything that is not one well-formed PKIMessage is badDataFormat. fast=False: pyasn1
        alone (the reference the tests compare cmp_der with). max_values: refuse a message with more ASN.1
        values for pyasn1 to decode (a server's bound on a request's CPU; a client takes a long CRL)."""
        if not der:
            raise CmpFailure("the request body is empty; expected a DER PKIMessage", "badDataFormat")
        if fast:
            try:
                return cls._from_envelope(der, cmp_der.read(der, _MAX_BODY_TAG), max_values)
            except Exception:  # noqa: S110 (not the common form, or malformed: pyasn1 decides below)
                pass
        if max_values is not None:
            _check_values(der, max_values, "the request")
        try:
            asn1, rest = decoder.decode(der, asn1Spec=rfc9480.PKIMessage())
            if rest:
                raise CmpFailure("%d bytes of trailing data after the PKIMessage" % len(rest), "badDataFormat")
            return cls(der, asn1)
        except CmpFailure:
            raise
        except Exception as exc:  # any library error on untrusted bytes means: not a PKIMessage
            raise CmpFailure("the request is not a DER PKIMessage: %s" % brief(exc), "badDataFormat") from exc

    def extra_certificates(self):
        """extraCerts as cryptography certificates; undecodable ones are badDataFormat."""
        try:
            return [x509.load_der_x509_certificate(der) for der in self.extra_certs]
        except Exception as exc:  # cryptography raises ValueError, InvalidVersion, ...
            raise CmpFailure("extraCerts holds an unreadable certificate: %s" % brief(exc), "badDataFormat") from exc


class Header:
    """The fields of a PKIHeader to build."""

    def __init__(
        self,
        pvno=PVNO_CMP2000,
        sender=None,
        recipient=None,
        transaction_id=None,
        sender_nonce=None,
        recip_nonce=None,
        sender_kid=None,
        implicit_confirm=False,
        message_time=None,
    ):
        self.pvno = pvno
        self.sender = sender
        self.recipient = recipient
        self.transaction_id = transaction_id
        self.sender_nonce = sender_nonce if sender_nonce is not None else random_nonce()
        self.recip_nonce = recip_nonce
        self.sender_kid = sender_kid
        self.implicit_confirm = implicit_confirm
        self.message_time = message_time

    @classmethod
    def response_to(cls, request, sender=None, implicit_confirm=False):
        """A response header: the request's pvno and transactionID, recipNonce = its senderNonce."""
        return cls(
            pvno=request.pvno if request.pvno in (PVNO_CMP2000, PVNO_CMP2021) else PVNO_CMP2000,
            sender=sender,
            recipient=request.sender,
            transaction_id=request.transaction_id,
            recip_nonce=request.sender_nonce,
            implicit_confirm=implicit_confirm,
        )


# PKIBody CHOICE tags (RFC 4210 5.1.2, RFC 9480): the bodies whose DER the core writes directly.
_BODY_TAGS = {"ip": 1, "cp": 3, "kup": 8}
_IMPLICIT_CONFIRM_DER = []  # generalInfo with implicitConfirm, built on first use


def _general_name_der(name):
    """GeneralName directoryName ([4], explicit because Name is a CHOICE) of a Name or None (NULL-DN).

    cryptography writes a Name in DER, SET OF sorted: the bytes pyasn1 would write for it.
    """
    return der_tlv(0xA4, name.public_bytes() if name is not None else b"\x30\x00")


def _implicit_confirm_der():
    if not _IMPLICIT_CONFIRM_DER:
        # generalInfo [8] SEQUENCE OF InfoTypeAndValue { id-it-implicitConfirm, NULL }
        _IMPLICIT_CONFIRM_DER.append(
            der_tlv(0xA8, der_sequence(der_sequence(der_oid(ID_IT_IMPLICIT_CONFIRM), b"\x05\x00")))
        )
    return _IMPLICIT_CONFIRM_DER[0]


def _header_der(header, protector):
    """DER PKIHeader (RFC 4210 5.1.1; the module's tags are EXPLICIT)."""
    when = header.message_time or datetime.datetime.now(datetime.timezone.utc)
    parts = [
        der_integer(header.pvno),
        _general_name_der(header.sender),
        _general_name_der(header.recipient),
        der_tlv(0xA0, der_tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode("ascii"))),
    ]
    sender_kid = header.sender_kid
    if protector is not None:
        oid, params_der = protector.algorithm()
        # AlgorithmIdentifier; its parameters (if any) are DER already
        parts.append(der_tlv(0xA1, der_sequence(der_oid(oid), params_der or b"")))
        sender_kid = protector.kid
    for tag, value in (
        (0xA2, sender_kid),
        (0xA4, header.transaction_id),
        (0xA5, header.sender_nonce),
        (0xA6, header.recip_nonce),
    ):
        if value is not None:
            parts.append(der_tlv(tag, der_tlv(0x04, value)))
    if header.implicit_confirm:
        parts.append(_implicit_confirm_der())
    return der_sequence(*parts)


def encode_message(header, body, protector=None, extra_certs=()):
    """Build and encode a PKIMessage; protector (cmp_protection) sets protectionAlg and protection.

    body is (body type, content): content is a pyasn1 value of that PKIBody alternative, or bytes, the
    DER of the whole PKIBody (as cert_rep_body builds it). extra_certs are certificate DERs, copied as
    they are. Header and body are encoded once: the protection covers exactly the bytes sent.
    """
    header_der = _header_der(header, protector)
    body_type, content = body
    if isinstance(content, bytes):
        body_der = content
    else:
        asn1_body = rfc9480.PKIBody()
        asn1_body[body_type] = content
        body_der = encoder.encode(asn1_body)
    parts = [header_der, body_der]
    if protector is not None:
        protection = protector.protect(der_sequence(header_der, body_der))
        # [0] PKIProtection, a BIT STRING without unused bits
        parts.append(der_tlv(0xA0, der_tlv(0x03, b"\x00" + protection)))
    if extra_certs:
        parts.append(der_tlv(0xA1, der_sequence(*extra_certs)))
    return der_sequence(*parts)


# --- bodies ---------------------------------------------------------------------------------------


def _status_info(status, fail_info=(), text=None):
    info = rfc9480.PKIStatusInfo()
    info["status"] = status
    if text:
        info["statusString"].append(text)
    if fail_info:
        bits = {FAIL_INFO_BITS.index(name) for name in fail_info}
        # A named BIT STRING in DER has no trailing zero bits: its length is the highest set bit + 1.
        info["failInfo"] = info["failInfo"].clone(
            binValue="".join("1" if bit in bits else "0" for bit in range(max(bits) + 1))
        )
    return info


def error_body(fail_info, text):
    content = rfc9480.PKIBody()["error"].clone()
    content["pKIStatusInfo"] = _status_info(STATUS_REJECTION, fail_info, text)
    return "error", content


def pkiconf_body():
    return "pkiconf", rfc9480.PKIBody()["pkiconf"].clone("")


def cert_rep_body(body_type, cert_req_id, certificate, ca_pubs=(), status=STATUS_ACCEPTED, enveloped_key=None):
    """ip, cp or kup with one response carrying certificate (cryptography certificate): status accepted, or
    grantedWithMods when the certificate differs from what was asked for; and the EnvelopedData DER of a
    centrally generated private key if any.

    Written as DER directly: the certificates are copied as they are, not decoded and encoded again.
    """
    if status not in (STATUS_ACCEPTED, STATUS_GRANTED_WITH_MODS):
        raise ValueError("a certificate response's status is accepted or grantedWithMods")
    # CertResponse { certReqId, status, certifiedKeyPair { certOrEncCert: certificate [0],
    #   privateKey [0] EXPLICIT EncryptedKey: envelopedData [0] IMPLICIT EnvelopedData } }
    private_key = der_tlv(0xA0, b"\xa0" + enveloped_key[1:]) if enveloped_key is not None else b""
    response = der_sequence(
        der_integer(cert_req_id),
        der_sequence(der_integer(status)),
        der_sequence(der_tlv(0xA0, certificate_der(certificate)), private_key),
    )
    # CertRepMessage { caPubs [1] OPTIONAL, response SEQUENCE OF CertResponse }
    ca_pubs_der = der_tlv(0xA1, der_sequence(*(certificate_der(ca) for ca in ca_pubs))) if ca_pubs else b""
    content = der_sequence(ca_pubs_der, der_sequence(response))
    return body_type, der_tlv(0xA0 | _BODY_TAGS[body_type], content)


def cert_req_body(body_type, private_key, subject=None, cert_req_id=0, old_certificate=None):
    """ir, cr or kur with one CertReqMsg for private_key's public key and POP by signature; private_key None:
    no key and no POP, the server generates the key (RFC 9483 4.1.6).

    old_certificate (kur): the certificate being updated, named in an oldCertID control.
    """
    request = rfc4211.CertRequest()
    request["certReqId"] = cert_req_id
    template = request["certTemplate"]
    if subject is not None:
        template["subject"] = template["subject"].clone()
        asn1_name = decode(subject.public_bytes(), rfc5280.Name())
        template["subject"]["rdnSequence"] = asn1_name["rdnSequence"]
    if private_key is not None:
        spki = decode(public_key_der(private_key), rfc5280.SubjectPublicKeyInfo())
        public_key = template["publicKey"]
        public_key["algorithm"] = spki["algorithm"]
        public_key["subjectPublicKey"] = spki["subjectPublicKey"]
    if old_certificate is not None:
        # kur names the certificate it updates (RFC 4211 6.5, RFC 9483 4.1.3).
        old_cert_id = rfc4211.OldCertId()
        old_cert_id["issuer"]["directoryName"]["rdnSequence"] = decode(
            old_certificate.issuer.public_bytes(), rfc5280.Name()
        )["rdnSequence"]
        old_cert_id["serialNumber"] = old_certificate.serial_number
        control = rfc4211.AttributeTypeAndValue()
        control["type"] = univ.ObjectIdentifier(ID_REGCTRL_OLD_CERT_ID)
        control["value"] = univ.Any(encoder.encode(old_cert_id))
        request["controls"].append(control)
    message = rfc4211.CertReqMsg()
    message["certReq"] = request
    if private_key is not None:
        oid, params, signature = signatures.sign(private_key, encoder.encode(request))
        pop = message["popo"]["signature"]
        pop["algorithmIdentifier"]["algorithm"] = univ.ObjectIdentifier(oid)
        if params is not None:
            pop["algorithmIdentifier"]["parameters"] = univ.Any(params)
        pop["signature"] = univ.BitString.fromOctetString(signature)
    content = rfc9480.PKIBody()[body_type].clone()
    content.append(message)
    return body_type, content


def cert_conf_body(cert_hash, cert_req_id=0, accepted=True, text=None, fail_info=()):
    content = rfc9480.PKIBody()["certConf"].clone()
    status = rfc9480.CertStatus()
    status["certHash"] = cert_hash
    status["certReqId"] = cert_req_id
    if not accepted:
        status["statusInfo"] = _status_info(STATUS_REJECTION, fail_info, text)
    content.append(status)
    return "certConf", content


# --- reading bodies -------------------------------------------------------------------------------


class CertRequest:
    """One CertReqMsg of an ir/cr/kur: the template's subject and key, and its POP.

    Built from pyasn1's CertReqMsg, or (from_fields) from what cmp_der read of it: the attributes are the same
    either way (tests/unit/test_cmp_der.py), and so is every failure."""

    _fields = None  # cmp_der.CertReqFields when built from them

    def __init__(self, cert_req_msg, cert_req_der=None):
        """cert_req_der: the certReq's DER as received, if the caller has it (the POP signs it)."""
        request = cert_req_msg["certReq"]
        self._asn1 = cert_req_msg
        self.cert_req_der = cert_req_der
        self.cert_req_id = int(request["certReqId"])
        template = request["certTemplate"]
        subject = optional(template, "subject")
        self.subject = _load_name(subject) if subject is not None else None
        public_key = optional(template, "publicKey")
        if public_key is None:
            self._set_key(None)
        else:
            params = optional(public_key["algorithm"], "parameters")
            # publicKey is [6] IMPLICIT SubjectPublicKeyInfo: re-tag it as a plain SEQUENCE to load it.
            spki = rfc5280.SubjectPublicKeyInfo()
            spki["algorithm"] = public_key["algorithm"]
            spki["subjectPublicKey"] = public_key["subjectPublicKey"]
            self._set_key(
                lambda: encoder.encode(spki),
                str(public_key["algorithm"]["algorithm"]),
                bytes(params) if params is not None else None,
                not len(public_key["subjectPublicKey"]),
            )
        self.subject_alt_names, self.extension_oids = _template_extensions(
            (str(extension["extnID"]), bool(extension["critical"]), extension["extnValue"].asOctets())
            for extension in optional(template, "extensions") or []
        )
        self.old_cert_id = _old_cert_id(
            (str(control["type"]), bytes(control["value"])) for control in optional(request, "controls") or []
        )
        validity = optional(template, "validity")
        self.not_after = None
        if validity is not None and optional(validity, "notAfter") is not None:
            time = validity["notAfter"]
            self.not_after = _utc(time[time.getName()].asDateTime)

    @classmethod
    def from_fields(cls, fields):
        """The request from cmp_der.CertReqFields; its pyasn1 form is decoded on first use."""
        self = cls.__new__(cls)
        self._fields = fields
        self._asn1 = None
        self.cert_req_der = fields.cert_req_der
        self.cert_req_id = fields.cert_req_id
        self.subject = _load_name_der(fields.subject_der) if fields.subject_der is not None else None
        if fields.public_key is None:
            self._set_key(None)
        else:
            spki_der, oid, params, key = fields.public_key
            self._set_key(lambda: spki_der, oid, params, not key)
        self.subject_alt_names, self.extension_oids = _template_extensions(fields.extensions)
        self.old_cert_id = _old_cert_id(fields.controls)
        self.not_after = None
        if fields.not_after is not None:
            tag, text = fields.not_after
            self.not_after = _utc((useful.UTCTime if tag == 0x17 else useful.GeneralizedTime)(text).asDateTime)
        return self

    def _set_key(self, spki_der, oid=None, params=None, empty=True):
        """The template's key: spki_der() its SubjectPublicKeyInfo (None when absent), oid and params its algorithm,
        empty whether its subjectPublicKey is. Central key generation (RFC 9483 4.1.6): no publicKey, or only its
        algorithm (an empty key)."""
        self.central_keygen = spki_der is None or empty
        self.key_algorithm = None  # (OID, parameters DER or None) a central key generation request names
        self.spki_der = self.public_key = None
        if self.central_keygen:
            if spki_der is not None:
                self.key_algorithm = (oid, params)
            return
        self.spki_der = spki_der()
        try:
            self.public_key = load_public_key_der(self.spki_der)
        except UnsupportedAlgorithm as exc:  # an unknown key algorithm or curve
            raise CmpFailure("the template's public key: %s" % exc, "badAlg") from exc
        except Exception as exc:  # InvalidInput, or a library error on a malformed key
            raise CmpFailure("the template's public key cannot be read: %s" % brief(exc), "badCertTemplate") from exc

    @property
    def asn1(self):
        """The CertReqMsg as pyasn1 decodes it."""
        if self._asn1 is None:
            self._asn1 = _decode_part(self._fields.cert_req_msg_der, rfc4211.CertReqMsg())
        return self._asn1

    def _proof(self):
        """The name of the POP's CHOICE, None when there is none."""
        if self._fields is not None:
            return self._fields.popo[0] if self._fields.popo is not None else None
        popo = optional(self.asn1, "popo")
        return popo.getName() if popo is not None else None

    def _signature_proof(self):
        """(algorithm OID, parameters DER or None, signature) of a POP by signature."""
        if self._fields is not None:
            return self._fields.popo[1:]  # cmp_der leaves one with poposkInput to pyasn1
        signature = self.asn1["popo"]["signature"]
        if optional(signature, "poposkInput") is not None:
            raise CmpFailure("POP with poposkInput is not supported; sign the CertRequest", "badPOP")
        algorithm = signature["algorithmIdentifier"]
        params = optional(algorithm, "parameters")
        return (
            str(algorithm["algorithm"]),
            bytes(params) if params is not None else None,
            signature["signature"].asOctets(),
        )

    def _cert_req_reencoded(self):
        """DER(CertRequest) as pyasn1 writes it; None when it cannot (a notAfter without "Z" is not DER)."""
        try:
            return encoder.encode(self.asn1["certReq"])
        except (PyAsn1Error, ValueError, IndexError):  # an empty UTCTime (17 00): IndexError
            return None

    def verify_pop(self):
        """Check the signature POP over DER(CertRequest) with the requested key (RFC 4211 4.1); a central key
        generation request has none (RFC 9483 4.1.6)."""
        proof = self._proof()
        if self.central_keygen:
            if proof is not None:
                raise CmpFailure("a request for a centrally generated key carries no proof of possession", "badPOP")
            return
        if proof != "signature":
            raise CmpFailure("proof of possession by signature is required", "badPOP")
        oid, params_der, signature_bytes = self._signature_proof()
        received = self.cert_req_der
        try:
            # The received bytes are DER(CertRequest) unless the client sent another encoding of it: then
            # the signature is checked over the DER encoding too, which is what RFC 4211 4.1 signs.
            valid = received is not None and signatures.verify(
                self.public_key, oid, params_der, signature_bytes, received
            )
            if not valid:
                encoded = self._cert_req_reencoded()
                valid = encoded not in (None, received) and signatures.verify(
                    self.public_key, oid, params_der, signature_bytes, encoded
                )
        except InvalidInput as exc:
            raise CmpFailure("POP: %s" % exc, "badAlg", "badPOP") from exc
        if not valid:
            raise CmpFailure("the proof-of-possession signature does not verify", "badPOP")


def _utc(when):
    return when.replace(tzinfo=datetime.timezone.utc) if when.tzinfo is None else when


def _template_extensions(extensions):
    """(subject alternative names as cryptography GeneralNames, [(OID, critical)] of all extensions) of a
    template's extensions, given as (OID, critical, extnValue)."""
    names, oids = [], []
    for oid, critical, value in extensions:
        if any(oid == seen for seen, _critical in oids):
            # RFC 5280 4.2: an extension appears at most once; which one would count?
            raise CmpFailure("the certificate template carries extension %s twice" % oid, "badCertTemplate")
        oids.append((oid, critical))
        if oid == ID_CE_SUBJECT_ALT_NAME:
            # The four name forms a certificate template carries in practice.
            for kind, name in _general_names(value):
                if kind == "dNSName":
                    names.append(x509.DNSName(name))
                elif kind == "uniformResourceIdentifier":
                    names.append(x509.UniformResourceIdentifier(name))
                elif kind == "rfc822Name":
                    names.append(x509.RFC822Name(name))
                elif kind == "iPAddress":
                    if len(name) not in (4, 16):
                        raise CmpFailure(
                            "subjectAltName iPAddress must be 4 or 16 bytes, not %d" % len(name), "badCertTemplate"
                        )
                    names.append(x509.IPAddress(ipaddress.ip_address(name)))
                else:
                    raise CmpFailure("subjectAltName of type %s is not supported" % kind, "badCertTemplate")
    return names, oids


def _check_values(der, max_values, what):
    """badDataFormat before pyasn1 decodes der when it holds more than max_values ASN.1 values."""
    if cmp_der.count_values(der, max_values) > max_values:
        raise CmpFailure(
            "%s holds more than %d ASN.1 values; a PKIMessage needs a few hundred" % (what, max_values), "badDataFormat"
        )


def _decode_part(der, spec):
    """A part of a request that cmp_der leaves to pyasn1 (an unusual form), decoded within the bound of values a
    request may hold: a subjectAltName of 30,000 directoryNames in 128 KiB would cost pyasn1 about 0.6 s."""
    _check_values(der, MAX_REQUEST_ASN1_VALUES, "a part of the request")
    return decode(der, spec)


# The subjectAltName forms whose value is text.
_SAN_TEXT = ("dNSName", "uniformResourceIdentifier", "rfc822Name")


def _general_names(der):
    """[(form, value)] of a subjectAltName's GeneralNames: text, the bytes of an iPAddress, None for other forms."""
    try:
        return cmp_der.general_names(der)
    except cmp_der.NotCommon:
        pass
    names = []
    for name in _decode_part(der, rfc5280.SubjectAltName()):
        kind = name.getName()
        value = name[kind]
        names.append((kind, value.asOctets() if kind == "iPAddress" else str(value) if kind in _SAN_TEXT else None))
    return names


def _old_cert_id(controls):
    """(issuer Name or None, serialNumber) of the oldCertID among controls ((OID, value DER)), or None."""
    found = None
    for oid, value in controls:
        if oid == ID_REGCTRL_OLD_CERT_ID:
            try:
                issuer_der, serial = cmp_der.old_cert_id(value)
                found = (_load_name_der(issuer_der), serial)
            except cmp_der.NotCommon:
                old = _decode_part(value, rfc4211.OldCertId())
                issuer = old["issuer"]
                found = (
                    _load_name(issuer["directoryName"]) if issuer.getName() == "directoryName" else None,
                    int(old["serialNumber"]),
                )
    return found


def _cert_req_ders(message, count):
    """The received DER of the certReq of each CertReqMsg in an ir/cr/kur, or Nones."""
    try:
        messages = der_children(inner_der(der_children(message.der)[1]))
        if len(messages) == count:
            return [der_children(item)[0] for item in messages]
    except (ValueError, IndexError):  # cannot happen for what pyasn1 decoded; then POP re-encodes
        pass
    return [None] * count


def cert_request_count(message):
    """How many CertReqMsgs an ir/cr/kur holds, without reading them (each may cost a key load and pyasn1 decodings:
    a server checks the count first)."""
    return len(message._cert_req_fields if message._cert_req_fields is not None else message.body)


def cert_requests(message):
    """The CertReqMsgs of an ir/cr/kur as CertRequest objects."""
    try:
        if message._cert_req_fields is not None:
            return [CertRequest.from_fields(fields) for fields in message._cert_req_fields]
        return [CertRequest(item, der) for item, der in zip(message.body, _cert_req_ders(message, len(message.body)))]
    except CmpFailure:
        raise
    except Exception as exc:  # malformed content from the wire
        raise CmpFailure("the certificate request cannot be read: %s" % brief(exc), "badDataFormat") from exc


class CertResponse:
    """One CertResponse of an ip/cp/kup."""

    def __init__(self, response):
        self.cert_req_id = int(response["certReqId"])
        self.status, self.fail_info, self.text = read_status_info(response["status"])
        self.certificate = None
        self.enveloped_key = None  # DER EnvelopedData of a centrally generated key (cmp_keygen opens it)
        pair = optional(response, "certifiedKeyPair")
        if pair is not None and pair["certOrEncCert"].getName() == "certificate":
            self.certificate = x509.load_der_x509_certificate(
                inner_der(encoder.encode(pair["certOrEncCert"]["certificate"]))
            )
        private_key = optional(pair, "privateKey") if pair is not None else None
        if private_key is not None and private_key.getName() == "envelopedData":
            self.enveloped_key = b"\x30" + encoder.encode(private_key["envelopedData"])[1:]


def read_status_info(info):
    """(status, fail_info names, text) of a PKIStatusInfo."""
    status = int(info["status"])
    fail_info = ()
    bits = optional(info, "failInfo")
    if bits is not None:
        fail_info = tuple(FAIL_INFO_BITS[i] for i, bit in enumerate(bits) if bit and i < len(FAIL_INFO_BITS))
    strings = optional(info, "statusString")
    text = "; ".join(str(s) for s in strings) if strings is not None else ""
    return status, fail_info, text


def cert_responses(message):
    """(responses, caPubs) of an ip/cp/kup; unreadable content is badDataFormat."""
    try:
        return _cert_responses(message)
    except Exception as exc:  # certificates from the wire: any library error means malformed
        raise CmpFailure("the certificate response cannot be read: %s" % brief(exc), "badDataFormat") from exc


def _cert_responses(message):
    responses = [CertResponse(r) for r in message.body["response"]]
    ca_pubs = optional(message.body, "caPubs")
    certs = [x509.load_der_x509_certificate(encoder.encode(c)) for c in ca_pubs] if ca_pubs is not None else []
    return responses, certs


class CertStatus:
    """One CertStatus of a certConf."""

    def __init__(self, status):
        self.cert_hash = status["certHash"].asOctets()
        self.cert_req_id = int(status["certReqId"])
        info = optional(status, "statusInfo")
        self.status, self.fail_info, self.text = (
            read_status_info(info) if info is not None else (STATUS_ACCEPTED, (), "")
        )
        hash_alg = optional(status, "hashAlg")
        self.hash_alg = str(hash_alg["algorithm"]) if hash_alg is not None else None

    @property
    def accepted(self):
        return self.status in (STATUS_ACCEPTED, STATUS_GRANTED_WITH_MODS)


def cert_statuses(message):
    try:
        return [CertStatus(s) for s in message.body]
    except Exception as exc:  # malformed content from the wire
        raise CmpFailure("the certConf cannot be read: %s" % brief(exc), "badDataFormat") from exc


def error_content(message):
    """(status, fail_info names, text) of an error body."""
    return read_status_info(message.body["pKIStatusInfo"])


_HASH_OIDS = {
    "1.3.14.3.2.26": "SHA1",
    "2.16.840.1.101.3.4.2.4": "SHA224",
    "2.16.840.1.101.3.4.2.1": "SHA256",
    "2.16.840.1.101.3.4.2.2": "SHA384",
    "2.16.840.1.101.3.4.2.3": "SHA512",
}


def cert_hash(certificate, hash_alg_oid=None):
    """certHash of a certConf: the hash named by hashAlg (pvno 3), else the certificate's signature hash."""
    if hash_alg_oid is not None:
        name = _HASH_OIDS.get(hash_alg_oid)
        if name is None:
            raise CmpFailure("unsupported certConf hashAlg %s" % hash_alg_oid, "badAlg")
        algorithm = getattr(hashes, name)()
    else:
        algorithm = certificate.signature_hash_algorithm or hashes.SHA512()  # EdDSA (RFC 9481 2.1)
    digest = hashes.Hash(algorithm)
    digest.update(certificate_der(certificate))
    return digest.finalize()


# --- p10cr, rr, genm ----------------------------------------------------------------------------------


def pkcs10_request(message):
    """The CSR of a p10cr as a cryptography CertificateSigningRequest; its signature is the POP."""
    try:
        csr = x509.load_der_x509_csr(inner_der(encoder.encode(message.asn1_body)))
    except Exception as exc:  # malformed content from the wire
        raise CmpFailure("the PKCS#10 request cannot be read: %s" % brief(exc), "badDataFormat") from exc
    if csr.signature_algorithm_oid.dotted_string not in signatures.SIGNATURE_ALGORITHMS:
        raise CmpFailure(
            "the PKCS#10 request is signed with %s, an algorithm not supported here"
            % csr.signature_algorithm_oid.dotted_string,
            "badAlg",
        )
    try:
        csr.public_key()
    except UnsupportedAlgorithm as exc:  # an unknown key algorithm or curve
        raise CmpFailure("the PKCS#10 request's key: %s" % exc, "badAlg") from exc
    except ValueError:
        pass  # csr_signature_valid says what is wrong
    try:
        valid = csr_signature_valid(csr)
    except InvalidInput as exc:
        raise CmpFailure("the PKCS#10 request: %s" % exc, "badDataFormat") from exc
    if not valid:
        raise CmpFailure("the PKCS#10 request's signature does not verify", "badPOP")
    return csr


def p10cr_body(csr):
    """p10cr carrying csr (a cryptography CertificateSigningRequest)."""
    content = rfc9480.PKIBody()["p10cr"].clone()
    asn1_csr = decode(csr.public_bytes(serialization.Encoding.DER), rfc6402.CertificationRequest())
    for field in ("certificationRequestInfo", "signatureAlgorithm", "signature"):
        content[field] = asn1_csr[field]
    return "p10cr", content


class RevocationRequest:
    """One RevDetails of an rr: which certificate, and why."""

    def __init__(self, details):
        template = details["certDetails"]
        serial = optional(template, "serialNumber")
        issuer = optional(template, "issuer")
        if serial is None or issuer is None:
            raise CmpFailure("a revocation request names the certificate by issuer and serialNumber", "badCertTemplate")
        self.serial_number = int(serial)
        self.issuer = _load_name(issuer)
        subject = optional(template, "subject")
        # What certDetails says besides issuer and serialNumber must agree with the certificate they name.
        self.subject = _load_name(subject) if subject is not None else None
        public_key = optional(template, "publicKey")
        self.spki_der = None
        if public_key is not None:
            spki = rfc5280.SubjectPublicKeyInfo()
            spki["algorithm"] = public_key["algorithm"]
            spki["subjectPublicKey"] = public_key["subjectPublicKey"]
            self.spki_der = encoder.encode(spki)
        self.reason = "unspecified"
        # How many CRLReason extensions crlEntryDetails carries: RFC 9483 4.2 asks for exactly one.
        self.reason_count = 0
        for extension in optional(details, "crlEntryDetails") or []:
            if str(extension["extnID"]) == "2.5.29.21":  # id-ce-CRLReasons
                self.reason_count += 1
                code = int(decode(extension["extnValue"].asOctets(), univ.Enumerated()))
                if not 0 <= code < len(REASON_CODES) or REASON_CODES[code] is None:
                    raise CmpFailure("unknown CRL reason code %s" % excerpt(code), "badRequest")
                self.reason = REASON_CODES[code]


def revocation_requests(message):
    try:
        return [RevocationRequest(details) for details in message.body]
    except CmpFailure:
        raise
    except Exception as exc:  # malformed content from the wire
        raise CmpFailure("the revocation request cannot be read: %s" % brief(exc), "badDataFormat") from exc


def rr_body(certificate, reason="unspecified"):
    """rr for certificate (a cryptography certificate) with a CRL reason name."""
    content = rfc9480.PKIBody()["rr"].clone()
    details = rfc9480.RevDetails()
    template = details["certDetails"]
    template["serialNumber"] = certificate.serial_number
    template["issuer"]["rdnSequence"] = decode(certificate.issuer.public_bytes(), rfc5280.Name())["rdnSequence"]
    extension = rfc5280.Extension()
    extension["extnID"] = univ.ObjectIdentifier("2.5.29.21")
    extension["extnValue"] = encoder.encode(univ.Enumerated(REASON_CODES.index(reason)))
    details["crlEntryDetails"].append(extension)
    content.append(details)
    return "rr", content


def rp_body(status, fail_info=(), text=None, certificate=None):
    """rp with one status; for an accepted revocation, revCerts names the certificate."""
    content = rfc9480.PKIBody()["rp"].clone()
    content["status"].append(_status_info(status, fail_info, text))
    if certificate is not None:
        cert_id = rfc4211.CertId()
        cert_id["issuer"]["directoryName"]["rdnSequence"] = decode(certificate.issuer.public_bytes(), rfc5280.Name())[
            "rdnSequence"
        ]
        cert_id["serialNumber"] = certificate.serial_number
        content["revCerts"].append(cert_id)
    return "rp", content


def revocation_statuses(message):
    """(status, fail_info, text) of each PKIStatusInfo of an rp."""
    try:
        return [read_status_info(info) for info in message.body["status"]]
    except Exception as exc:  # malformed content from the wire
        raise CmpFailure("the revocation response cannot be read: %s" % brief(exc), "badDataFormat") from exc


def info_values(message):
    """[(infoType OID, infoValue DER or None)] of a genm, in order."""
    try:
        return [
            (str(itav["infoType"]), bytes(value) if value is not None else None)
            for itav, value in ((itav, optional(itav, "infoValue")) for itav in message.body)
        ]
    except Exception as exc:  # malformed content from the wire
        raise CmpFailure("the general message cannot be read: %s" % brief(exc), "badDataFormat") from exc


class CrlStatus:
    """One CRLStatus of a crlStatusList (RFC 9480 2.19): the CRL's source, as distribution point URIs or
    issuer names, and the thisUpdate of the CRL the client holds (None: it holds none)."""

    def __init__(self, uris=(), issuers=(), this_update=None):
        self.uris = list(uris)
        self.issuers = list(issuers)
        self.this_update = this_update


def crl_status_list(value_der):
    """The CrlStatus entries of a genm crlStatusList infoValue; unreadable ones are badDataFormat."""
    try:
        statuses = decode(value_der, rfc9480.CRLStatusListValue())
        return [_crl_status(status) for status in statuses]
    except CmpFailure:
        raise
    except Exception as exc:  # malformed content from the wire
        raise CmpFailure("the crlStatusList cannot be read: %s" % brief(exc), "badDataFormat") from exc


def _crl_status(status):
    source = status["source"]
    uris, issuers = [], []
    if source.getName() == "dpn":
        point = source["dpn"]
        if point.getName() != "fullName":
            raise CmpFailure("name the CRL's distribution point by its fullName (a URI)", "badRequest")
        names = point["fullName"]
    else:
        names = source["issuer"]
    for name in names:
        kind = name.getName()
        if kind == "uniformResourceIdentifier":
            uris.append(str(name[kind]))
        elif kind == "directoryName":
            issuers.append(_load_name(name[kind]))
    this_update = optional(status, "thisUpdate")
    when = this_update[this_update.getName()].asDateTime if this_update is not None else None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return CrlStatus(uris, issuers, when)


def crl_status_list_value(statuses):
    """DER CRLStatusList of (distribution point URI or None, issuer Name or None, thisUpdate or None)."""
    content = rfc9480.CRLStatusListValue()
    for uri, issuer, this_update in statuses:
        status = rfc9480.CRLStatus()
        if uri is not None:
            name = rfc5280.GeneralName()
            name["uniformResourceIdentifier"] = uri
            status["source"]["dpn"]["fullName"].append(name)
        else:
            name = rfc5280.GeneralName()
            name["directoryName"]["rdnSequence"] = decode(issuer.public_bytes(), rfc5280.Name())["rdnSequence"]
            status["source"]["issuer"].append(name)
        if this_update is not None:
            status["thisUpdate"]["generalTime"] = this_update.strftime("%Y%m%d%H%M%SZ")
        content.append(status)
    return encoder.encode(content)


def genm_body(*info_type_oids, values=None):
    """genm asking for info_type_oids; values: {OID: infoValue DER} for those that carry one."""
    content = rfc9480.PKIBody()["genm"].clone()
    for oid in info_type_oids:
        itav = rfc9480.InfoTypeAndValue()
        itav["infoType"] = univ.ObjectIdentifier(oid)
        if values and oid in values:
            itav["infoValue"] = univ.Any(values[oid])
        content.append(itav)
    return "genm", content


def genp_body(answers):
    """genp with one InfoTypeAndValue per (OID, value DER or None) of answers."""
    content = rfc9480.PKIBody()["genp"].clone()
    for oid, value in answers:
        itav = rfc9480.InfoTypeAndValue()
        itav["infoType"] = univ.ObjectIdentifier(oid)
        if value is not None:
            itav["infoValue"] = univ.Any(value)
        content.append(itav)
    return "genp", content


def genp_values(message):
    """{infoType OID: infoValue DER or None} of a genp."""
    try:
        values = {}
        for itav in message.body:
            value = optional(itav, "infoValue")
            values[str(itav["infoType"])] = bytes(value) if value is not None else None
        return values
    except Exception as exc:  # malformed content from the wire
        raise CmpFailure("the general response cannot be read: %s" % brief(exc), "badDataFormat") from exc


def certificates_value(certificates):
    """DER SEQUENCE OF CMPCertificate: the caCerts and rootCaCert-style info values."""
    return der_sequence(*(certificate_der(cert) for cert in certificates))


def crls_value(crls_der):
    """DER SEQUENCE OF CertificateList for id-it-crls."""
    return der_sequence(*crls_der)


def sign_key_pair_types_value(oids):
    """DER SEQUENCE OF AlgorithmIdentifier (parameters absent) for id-it-signKeyPairTypes."""
    return der_sequence(*(encoder.encode(_algorithm(oid)) for oid in oids))


# The controls of a certReqTemplate's keySpec (RFC 9480 2.10, RFC 9483 4.3.3).
ID_REGCTRL_ALG_ID = "1.3.6.1.5.5.7.5.1.11"
ID_REGCTRL_RSA_KEY_LEN = "1.3.6.1.5.5.7.5.1.12"
ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
ID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
# The named curves of the key types keys.KEY_TYPES names.
CURVE_OIDS = {"ecdsa-p256": "1.2.840.10045.3.1.7", "ecdsa-p384": "1.3.132.0.34"}
RSA_KEY_LENGTHS = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}


def cert_req_template_value(subject=None, key_types=()):
    """DER CertReqTemplateContent (RFC 9483 4.3.3): a template with the subject the server will set, and
    a keySpec with one control per key type it certifies: id-regCtrl-algId (id-ecPublicKey, the curve
    as its parameters) for EC keys, id-regCtrl-rsaKeyLen (an INTEGER) per RSA key length."""
    content = rfc9480.CertReqTemplateContent()
    template = content["certTemplate"]
    if subject is not None:
        template["subject"]["rdnSequence"] = decode(subject.public_bytes(), rfc5280.Name())["rdnSequence"]
    for key_type in key_types:
        spec = rfc4211.AttributeTypeAndValue()
        if key_type in CURVE_OIDS:
            algorithm = _algorithm(ID_EC_PUBLIC_KEY)
            algorithm["parameters"] = univ.Any(encoder.encode(univ.ObjectIdentifier(CURVE_OIDS[key_type])))
            spec["type"] = univ.ObjectIdentifier(ID_REGCTRL_ALG_ID)
            spec["value"] = univ.Any(encoder.encode(algorithm))
        elif key_type in RSA_KEY_LENGTHS:
            spec["type"] = univ.ObjectIdentifier(ID_REGCTRL_RSA_KEY_LEN)
            spec["value"] = univ.Any(encoder.encode(univ.Integer(RSA_KEY_LENGTHS[key_type])))
        else:
            raise InvalidInput("key type %r has no certReqTemplate control" % key_type)
        content["keySpec"].append(spec)
    return encoder.encode(content)


def _algorithm(oid):
    algorithm = rfc5280.AlgorithmIdentifier()
    algorithm["algorithm"] = univ.ObjectIdentifier(oid)
    return algorithm
