# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A strict DER reader for what the server reads of a PKIMessage (RFC 4210 5.1): the envelope (header fields,
the body's bytes, the protection and the extraCerts, as slices of the received message), the body of an ir, cr
or kur (RFC 4211 CertReqMessages), Names, subjectAltName, oldCertID and the PBM parameters.

pyasn1 decodes a 500-byte ir in 1-2 ms, and it decodes every extraCert only for cmp_message to encode it again
(issue 16). This reader takes the common form only: strict DER (definite, minimal lengths, one-byte tags,
INTEGERs in their shortest form, BIT STRINGs without unused bits, primitive strings), fields in order,
sender and recipient as directoryNames, extraCerts that are X.509 certificates in DER, the template fields,
POP forms and name forms clients send. Anything else raises NotCommon, and cmp_message reads that part with
pyasn1 as before: what this reader takes gives the same fields, and what it does not gets the same answer
(failInfo and text) as before. It takes nothing pyasn1's decoder refuses (constraints included: the PBM salt's
SIZE); tests/unit/test_cmp_der.py compares both on captured, built, fuzzed and random input.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import re

from .deps import CRYPTOGRAPHY_FLOOR, major_version

try:
    import cryptography
    from cryptography import x509
    from pyasn1.type import useful
except ImportError:  # reported by deps.missing()
    pass
else:
    # _check_certificate relies on cryptography's parser being as strict as the versions it was compared with
    # (CRYPTOGRAPHY_FLOOR and later); an older one (a distribution's 3.x, 36 or 37) leaves extraCerts to pyasn1.
    _VERIFIED_PARSER = major_version(cryptography.__version__) >= CRYPTOGRAPHY_FLOOR


class NotCommon(ValueError):
    """Not the common form this reader takes: pyasn1 decodes the message instead."""


def read_tlv(data, pos, end):
    """(tag, content start, content end) of the DER value at data[pos:end]; one-byte tags only."""
    if pos + 2 > end:
        raise NotCommon("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise NotCommon("multi-byte tag")
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 3 or start + count > end:
            raise NotCommon("indefinite or oversized length")
        length = int.from_bytes(data[start : start + count], "big")
        # DER: the shortest form (X.690 10.1).
        if length < 0x80 or data[start] == 0:
            raise NotCommon("length not in its shortest form")
        start += count
    if start + length > end:
        raise NotCommon("truncated")
    return tag, start, start + length


def count_values(data, limit):
    """The number of BER values in data, at every depth, counted up to limit + 1: what pyasn1 builds an object
    for (about 20 us each). A linear walk of the headers, tolerant of what pyasn1 takes (tags of several bytes,
    lengths longer than needed, indefinite lengths); where a header cannot be read the count ends."""
    count, pos, end = 0, 0, len(data)
    while pos < end and count <= limit:
        tag = data[pos]
        pos += 1
        if tag & 0x1F == 0x1F:  # a tag number in base-128 bytes
            while pos < end and data[pos] & 0x80:
                pos += 1
            pos += 1
        if pos >= end:
            break
        length = data[pos]
        pos += 1
        if length & 0x80:
            size = length & 0x7F  # 0: indefinite, the content follows and ends with two zero bytes
            length = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        count += 1
        if not tag & 0x20:  # primitive: skip its content; a constructed value's content is its children
            pos += length
    return count


def children(data, start, end):
    """[(tag, content start, content end, value start)] of the values in data[start:end]."""
    items = []
    pos = start
    while pos < end:
        tag, content, stop = read_tlv(data, pos, end)
        items.append((tag, content, stop, pos))
        pos = stop
    return items


def cached_if_small(function=None, size=None):
    """functools.lru_cache for values of at most size (CACHED_SIZE) bytes: the cache is for what every device sends
    (its CA's chain and names), and an unauthenticated sender's big values must not fill memory. As a decorator,
    bare or with size=."""
    if function is None:
        return functools.partial(cached_if_small, size=size)
    cached = functools.lru_cache(maxsize=CACHE_ENTRIES)(function)
    limit = CACHED_SIZE if size is None else size

    @functools.wraps(function)
    def call(der):
        return cached(der) if len(der) <= limit else function(der)

    call.cache_info, call.cache_clear = cached.cache_info, cached.cache_clear
    return call


# At most 256 entries of at most 8 KiB (2 MiB) per cache and process; OIDs of at most 64 bytes (a dotted string of
# up to about 180 characters).
CACHE_ENTRIES, CACHED_SIZE, OID_CACHED_SIZE = 256, 8192, 64


@cached_if_small(size=OID_CACHED_SIZE)
def read_oid(content):
    """The dotted string of an OBJECT IDENTIFIER's content (X.690 8.19); a message names a dozen, the same in every
    message (issue 16). Cached up to OID_CACHED_SIZE bytes (the OIDs in use have 3-12)."""
    if not content or content[-1] & 0x80:
        raise NotCommon("bad OID")
    arcs, value, first = [], 0, True
    for byte in content:
        if value == 0 and byte == 0x80:
            raise NotCommon("OID arc not in its shortest form")
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            if first:
                arcs += [0, value] if value < 40 else [1, value - 40] if value < 80 else [2, value - 80]
                first = False
            else:
                arcs.append(value)
            value = 0
    return ".".join(str(arc) for arc in arcs)


@cached_if_small
def _check_certificate(der):
    """NotCommon unless der is a certificate that cryptography reads and pyasn1 would encode to the same bytes.
    cryptography's parser takes strict DER only (shortest lengths, BOOLEAN TRUE as FF, no DEFAULT value written
    out, SET OF sorted); the SIZE (1..MAX) rules pyasn1 applies on top (no empty RDN in issuer or subject, no empty
    extensions) are checked here, and so are OBJECT IDENTIFIERs: cryptography 37 takes arcs not in their shortest
    form (tests/unit/test_cmp_der.py, compared with pyasn1 on each cryptography from CRYPTOGRAPHY_FLOOR on). This
    replaced a pyasn1 decode and re-encode that cost a signed ir about a millisecond: every device sends its own
    IDevID, so the cache does not spare it. Once per distinct certificate (a chain a fleet shares is read once per
    process)."""
    if not _VERIFIED_PARSER:
        raise NotCommon("extraCerts: cryptography older than %d" % CRYPTOGRAPHY_FLOOR)
    try:
        x509.load_der_x509_certificate(der)
    except Exception as exc:  # any library error: pyasn1 decides what it is, on the whole message
        raise NotCommon("extraCerts: %s" % type(exc).__name__) from exc
    _tag, start, end = read_tlv(der, 0, len(der))
    _values_pyasn1_takes(der, start, end)
    _tag, tbs_start, tbs_end, _pos = children(der, start, end)[0]
    fields = children(der, tbs_start, tbs_end)
    fields = fields[1:] if fields[0][0] == 0xA0 else fields  # the version
    # pyasn1 writes -2**(8n-1) (80 00..) with a leading FF: the extraCert it re-encodes would not be the one received
    # (a negative serial, which RFC 5280 forbids and cryptography still reads; found by a differential campaign).
    serial = der[fields[0][1] : fields[0][2]]
    if serial[:1] == b"\x80" and not any(serial[1:]):
        raise NotCommon("extraCerts: a serial number pyasn1 writes otherwise")
    for tag, field_start, field_end, _pos in (fields[2], fields[4]):  # issuer, subject
        if tag != 0x30:
            raise NotCommon("extraCerts: Name")
        _name_attributes(der, field_start, field_end)
    for tag, field_start, field_end, _pos in fields[6:]:
        if tag == 0xA3:
            extensions = children(der, field_start, field_end)
            if len(extensions) != 1 or extensions[0][0] != 0x30 or extensions[0][1] == extensions[0][2]:
                raise NotCommon("extraCerts: extensions")


def _values_pyasn1_takes(der, start, end):
    """NotCommon for what pyasn1 refuses and this reader or cryptography may take, anywhere in a constructed value:
    a value tagged [UNIVERSAL 0], primitive (BER's end-of-contents) or constructed (pyasn1 compares tags without
    their form), which pyasn1 refuses where the ASN.1 says ANY (algorithm parameters, attribute and control values,
    generalInfo values) and cryptography takes there; an OBJECT IDENTIFIER with an arc not in its shortest form.
    Deeper than pyasn1 looks (it does not read inside an ANY), but what it refuses only costs the fast path."""
    pos = start
    while pos < end:
        tag, content, stop = read_tlv(der, pos, end)
        if not tag & 0xDF:
            raise NotCommon("end-of-contents tag")
        if tag == 0x06:
            if (
                content == stop
                or der[stop - 1] & 0x80
                or der[content] == 0x80
                or _OID_ARC_NOT_SHORTEST.search(der, content, stop)
            ):
                raise NotCommon("bad OID")
        elif tag & 0x20:
            _values_pyasn1_takes(der, content, stop)
        pos = stop


# An arc after the first that starts with 0x80 (X.690 8.19.2): 0x80 after an arc's last byte.
_OID_ARC_NOT_SHORTEST = re.compile(b"[\\x00-\\x7f]\\x80")


class Envelope:
    """The fields of a PKIMessage this reader takes (bytes are slices of the message as received)."""

    pvno = None
    sender_der = recipient_der = None  # the Name inside a directoryName, DER
    message_time = None  # datetime (UTC) or None
    protection_alg = protection_params = None
    sender_kid = recip_kid = transaction_id = sender_nonce = recip_nonce = None
    implicit_confirm = False
    body_tag = None  # the PKIBody CHOICE number
    protected_part = body_der = protection = None
    extra_certs = ()


# The header's OCTET STRING fields by their (explicit) tag.
_OCTET_FIELDS = {
    0xA2: "sender_kid",
    0xA3: "recip_kid",
    0xA4: "transaction_id",
    0xA5: "sender_nonce",
    0xA6: "recip_nonce",
}
ID_IT_IMPLICIT_CONFIRM = "1.3.6.1.5.5.7.4.13"


def read(der, max_body_tag):
    """The Envelope of a DER PKIMessage; NotCommon for anything outside the common form. max_body_tag: the
    highest PKIBody CHOICE number known."""
    tag, start, end = read_tlv(der, 0, len(der))
    if tag != 0x30 or end != len(der):
        raise NotCommon("not one SEQUENCE")
    parts = children(der, start, end)
    if len(parts) < 2 or parts[0][0] != 0x30:
        raise NotCommon("no header")
    envelope = Envelope()
    body_tag = parts[1][0]
    if not 0xA0 <= body_tag <= 0xA0 + max_body_tag:
        raise NotCommon("unknown body")
    envelope.body_tag = body_tag - 0xA0
    envelope.body_der = der[parts[1][3] : parts[1][2]]
    envelope.protected_part = b"\x30" + _length(parts[1][2] - parts[0][3]) + der[parts[0][3] : parts[1][2]]
    _read_header(der, parts[0][1], parts[0][2], envelope)
    rest = parts[2:]
    if rest and rest[0][0] == 0xA0:
        envelope.protection = _read_protection(der, rest[0][1], rest[0][2])
        rest = rest[1:]
    if rest and rest[0][0] == 0xA1:
        envelope.extra_certs = _read_certificates(der, rest[0][1], rest[0][2])
        for certificate in envelope.extra_certs:
            _check_certificate(certificate)
        rest = rest[1:]
    if rest:
        raise NotCommon("unknown PKIMessage component")
    return envelope


def _length(length):
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _explicit(der, start, end, inner_tag):
    """The content of the only value (of inner_tag) inside an explicit tag."""
    items = children(der, start, end)
    if len(items) != 1 or items[0][0] != inner_tag:
        raise NotCommon("unexpected explicit content")
    return items[0][1], items[0][2]


def _directory_name(der, tag, start, end):
    """The Name DER of a GeneralName that is a directoryName ([4] explicit, an RDNSequence)."""
    if tag != 0xA4:
        raise NotCommon("GeneralName other than directoryName")
    return _check_name(der, start, end)


def _read_header(der, start, end, envelope):
    items = children(der, start, end)
    if len(items) < 3 or items[0][0] != 0x02:
        raise NotCommon("header")
    pvno = der[items[0][1] : items[0][2]]
    if len(pvno) != 1 or pvno[0] & 0x80:
        raise NotCommon("pvno")
    envelope.pvno = pvno[0]
    envelope.sender_der = _directory_name(der, *items[1][:3])
    envelope.recipient_der = _directory_name(der, *items[2][:3])
    last = 0x9F
    for tag, content, stop, _pos in items[3:]:
        if not last < tag <= 0xA8:
            raise NotCommon("header field out of order")
        last = tag
        if tag == 0xA0:
            envelope.message_time = _generalized_time(der, *_explicit(der, content, stop, 0x18))
        elif tag == 0xA1:
            envelope.protection_alg, envelope.protection_params = _algorithm(der, *_explicit(der, content, stop, 0x30))
        elif tag in _OCTET_FIELDS:
            value_start, value_end = _explicit(der, content, stop, 0x04)
            setattr(envelope, _OCTET_FIELDS[tag], der[value_start:value_end])
        elif tag == 0xA7:
            _free_text(der, *_explicit(der, content, stop, 0x30))
        else:  # 0xA8 generalInfo
            envelope.implicit_confirm = _general_info(der, *_explicit(der, content, stop, 0x30))


def _generalized_time(der, start, end):
    text = der[start:end]
    if len(text) == 15 and text[14] == 0x5A and text[:14].isdigit():  # YYYYMMDDHHMMSSZ, what clients send
        with contextlib.suppress(ValueError):  # no such date: pyasn1's parser says so below
            return datetime.datetime(
                int(text[0:4]),
                int(text[4:6]),
                int(text[6:8]),
                int(text[8:10]),
                int(text[10:12]),
                int(text[12:14]),
                tzinfo=datetime.timezone.utc,
            )
    if not text or not all(0x2B <= b <= 0x3A or b == 0x5A for b in text):  # digits . , + - : Z
        raise NotCommon("GeneralizedTime characters")
    try:
        when = useful.GeneralizedTime(text.decode("ascii")).asDateTime
    except Exception as exc:  # pyasn1's own parser: pyasn1 decides what a bad one is
        raise NotCommon("GeneralizedTime") from exc
    return when.replace(tzinfo=datetime.timezone.utc) if when.tzinfo is None else when


def _algorithm(der, start, end):
    """(OID, parameters DER or None) of an AlgorithmIdentifier."""
    items = children(der, start, end)
    if not 1 <= len(items) <= 2 or items[0][0] != 0x06:
        raise NotCommon("AlgorithmIdentifier")
    params = None
    if len(items) == 2:
        # An ANY: protectionAlg's, the PBM's owf and mac (the body's are walked with the body too).
        _values_pyasn1_takes(der, items[1][3], items[1][2])
        params = der[items[1][3] : items[1][2]]
    return read_oid(der[items[0][1] : items[0][2]]), params


def _free_text(der, start, end):
    items = children(der, start, end)
    if not items or any(tag != 0x0C for tag, _s, _e, _p in items):
        raise NotCommon("freeText")
    for _tag, item_start, item_end, _pos in items:
        try:
            der[item_start:item_end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotCommon("freeText UTF-8") from exc


def _general_info(der, start, end):
    """Whether generalInfo holds implicitConfirm; every InfoTypeAndValue is { OID, optional value }."""
    items = children(der, start, end)
    if not items:
        raise NotCommon("empty generalInfo")
    implicit = False
    for tag, item_start, item_end, _pos in items:
        pair = children(der, item_start, item_end) if tag == 0x30 else ()
        if not 1 <= len(pair) <= 2 or pair[0][0] != 0x06:
            raise NotCommon("InfoTypeAndValue")
        if len(pair) == 2:  # infoValue, an ANY
            _values_pyasn1_takes(der, pair[1][3], pair[1][2])
        implicit = implicit or read_oid(der[pair[0][1] : pair[0][2]]) == ID_IT_IMPLICIT_CONFIRM
    return implicit


def _read_protection(der, start, end):
    content_start, content_end = _explicit(der, start, end, 0x03)
    if content_end == content_start or der[content_start] != 0:
        raise NotCommon("protection with unused bits")
    return der[content_start + 1 : content_end]


def _read_certificates(der, start, end):
    """The DER of each certificate in extraCerts ([1] explicit SEQUENCE SIZE (1..MAX) OF CMPCertificate)."""
    items = children(der, *_explicit(der, start, end, 0x30))
    if not items or any(tag != 0x30 for tag, _s, _e, _p in items):
        raise NotCommon("extraCerts")
    return [der[pos:stop] for _tag, _start, stop, pos in items]


# --- Names --------------------------------------------------------------------------------------------

# The string types a Name's attribute value has in practice, and the codec pyasn1 decodes each with.
_NAME_STRINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii"}  # UTF8String, PrintableString, IA5String


def _name_attributes(der, start, end):
    """[[(OID, value tag, value content)]] of an RDNSequence's content: the structure pyasn1 decodes a Name with
    (SEQUENCE OF SET OF { OID, ANY }), an empty SET refused."""
    rdns = []
    for tag, rdn_start, rdn_end, _pos in children(der, start, end):
        if tag != 0x31:
            raise NotCommon("RDN")
        attributes = []
        for atv_tag, atv_start, atv_end, _atv_pos in children(der, rdn_start, rdn_end):
            pair = children(der, atv_start, atv_end) if atv_tag == 0x30 else ()
            if len(pair) != 2 or pair[0][0] != 0x06:
                raise NotCommon("AttributeTypeAndValue")
            oid = read_oid(der[pair[0][1] : pair[0][2]])
            attributes.append((oid, pair[1][0], der[pair[1][1] : pair[1][2]]))
        if not attributes:
            raise NotCommon("empty RDN")
        rdns.append(attributes)
    return rdns


def name_values(der):
    """[[(OID, text)]] of a Name's DER (an RDNSequence) whose values are UTF8, Printable or IA5 strings: the text
    pyasn1 gives for each; NotCommon for other forms (cmp_message reads those with pyasn1)."""
    tag, start, end = read_tlv(der, 0, len(der))
    if tag != 0x30 or end != len(der):
        raise NotCommon("Name")
    rdns = []
    for attributes in _name_attributes(der, start, end):
        values = []
        for oid, tag, content in attributes:
            codec = _NAME_STRINGS.get(tag)
            if codec is None:
                raise NotCommon("attribute value type")
            try:
                values.append((oid, content.decode(codec)))
            except UnicodeDecodeError as exc:
                raise NotCommon("attribute value encoding") from exc
        rdns.append(values)
    return rdns


def _check_name(der, start, end):
    """The DER of the Name in der[start:end] (the content of an explicit tag); NotCommon unless it is an
    RDNSequence."""
    items = children(der, start, end)
    if len(items) != 1 or items[0][0] != 0x30:
        raise NotCommon("Name is not an RDNSequence")
    _name_attributes(der, items[0][1], items[0][2])
    return der[items[0][3] : items[0][2]]


# --- primitive values ---------------------------------------------------------------------------------


def _integer(der, start, end):
    """An INTEGER's content (X.690 8.3), in its shortest form."""
    content = der[start:end]
    if not content or (len(content) > 1 and (content[0], content[1] >> 7) in ((0, 0), (0xFF, 1))):
        raise NotCommon("INTEGER not in its shortest form")
    return int.from_bytes(content, "big", signed=True)


def _bits(der, start, end):
    """A BIT STRING's bytes; only whole bytes (no unused bits)."""
    if end == start or der[start] != 0:
        raise NotCommon("BIT STRING with unused bits")
    return der[start + 1 : end]


def _time_text(der, tag, start, end):
    """(tag, text) of a Time (UTCTime or GeneralizedTime) in the characters its form allows."""
    text = der[start:end]
    if tag not in (0x17, 0x18) or not text or not all(0x2B <= b <= 0x3A or b == 0x5A for b in text):
        raise NotCommon("Time")
    return tag, text.decode("ascii")


def _sequence_of(der, start, end, tag=0x30):
    """The items of a SEQUENCE SIZE (1..MAX) OF values of tag."""
    items = children(der, start, end)
    if not items or any(item[0] != tag for item in items):
        raise NotCommon("SEQUENCE OF")
    return items


def _attributes(der, start, end):
    """[(OID, value DER)] of a SEQUENCE SIZE (1..MAX) OF AttributeTypeAndValue (controls, regInfo)."""
    pairs = []
    for _tag, item_start, item_end, _pos in _sequence_of(der, start, end):
        pair = children(der, item_start, item_end)
        if len(pair) != 2 or pair[0][0] != 0x06:
            raise NotCommon("AttributeTypeAndValue")
        pairs.append((read_oid(der[pair[0][1] : pair[0][2]]), der[pair[1][3] : pair[1][2]]))
    return pairs


# --- ir, cr, kur: CertReqMessages (RFC 4211) ------------------------------------------------------------


class CertReqFields:
    """What the server reads of one CertReqMsg (bytes are slices of the message as received)."""

    cert_req_msg_der = cert_req_der = None
    cert_req_id = None
    subject_der = None  # the Name DER (an RDNSequence), None when absent
    public_key = None  # (SPKI DER re-tagged as a SEQUENCE, algorithm OID, its parameters DER or None, key bytes)
    extensions = ()  # [(OID, critical, extnValue content)]
    controls = ()  # [(OID, value DER)]
    not_after = None  # (Time tag, text)
    popo = None  # None, ("raVerified",) or ("signature", algorithm OID, parameters DER or None, signature bytes)


def read_cert_requests(body_der):
    """The CertReqFields of each CertReqMsg in an ir/cr/kur PKIBody's DER (its explicit tag included);
    NotCommon for anything outside the common form: pyasn1 decodes the body then. The reader takes only
    values pyasn1's decoder takes too (tests/unit/test_cmp_der.py compares them)."""
    _tag, start, end = read_tlv(body_der, 0, len(body_der))
    if end != len(body_der):
        raise NotCommon("trailing data after the body")
    # An ANY (a key's algorithm parameters, a control's value) may hold what pyasn1 refuses: an end-of-contents tag,
    # primitive or constructed (tests/unit/test_cmp_der.py: END_OF_CONTENTS_IN_AN_ANY), an OID not in its shortest form.
    _values_pyasn1_takes(body_der, start, end)
    items = children(body_der, start, end)
    if len(items) != 1 or items[0][0] != 0x30:
        raise NotCommon("CertReqMessages")
    return [_cert_req_msg(body_der, *item[1:]) for item in _sequence_of(body_der, items[0][1], items[0][2])]


def _cert_req_msg(der, start, end, pos):
    fields = CertReqFields()
    fields.cert_req_msg_der = der[pos:end]
    parts = children(der, start, end)
    if not parts or parts[0][0] != 0x30:
        raise NotCommon("certReq")
    fields.cert_req_der = der[parts[0][3] : parts[0][2]]
    _cert_request(der, parts[0][1], parts[0][2], fields)
    rest = parts[1:]
    if rest and rest[0][0] == 0x80:  # raVerified [0] NULL
        if rest[0][2] != rest[0][1]:
            raise NotCommon("raVerified")
        fields.popo = ("raVerified",)
        rest = rest[1:]
    elif rest and rest[0][0] == 0xA1:  # signature [1] POPOSigningKey (without poposkInput)
        fields.popo = _popo_signature(der, rest[0][1], rest[0][2])
        rest = rest[1:]
    if rest and rest[0][0] == 0x30:  # regInfo: checked, not used
        _attributes(der, rest[0][1], rest[0][2])
        rest = rest[1:]
    if rest:
        raise NotCommon("CertReqMsg component")
    return fields


def _popo_signature(der, start, end):
    items = children(der, start, end)
    if len(items) != 2 or items[0][0] != 0x30 or items[1][0] != 0x03:
        raise NotCommon("POPOSigningKey")
    oid, params = _algorithm(der, items[0][1], items[0][2])
    return ("signature", oid, params, _bits(der, items[1][1], items[1][2]))


def _cert_request(der, start, end, fields):
    items = children(der, start, end)
    if not 2 <= len(items) <= 3 or items[0][0] != 0x02 or items[1][0] != 0x30:
        raise NotCommon("CertRequest")
    fields.cert_req_id = _integer(der, items[0][1], items[0][2])
    _cert_template(der, items[1][1], items[1][2], fields)
    if len(items) == 3:
        if items[2][0] != 0x30:
            raise NotCommon("controls")
        fields.controls = _attributes(der, items[2][1], items[2][2])


def _cert_template(der, start, end, fields):
    """The template's issuer ([3], checked), validity [4], subject [5], publicKey [6] and extensions [9];
    version, serialNumber, signingAlg and the unique identifiers are left to pyasn1."""
    last = 0
    for tag, content, stop, pos in children(der, start, end):
        if tag not in (0xA3, 0xA4, 0xA5, 0xA6, 0xA9) or tag <= last:
            raise NotCommon("certTemplate field")
        last = tag
        if tag == 0xA3:
            _check_name(der, content, stop)
        elif tag == 0xA4:
            fields.not_after = _validity(der, content, stop)
        elif tag == 0xA5:
            fields.subject_der = _check_name(der, content, stop)
        elif tag == 0xA6:
            spki = children(der, content, stop)
            if len(spki) != 2 or spki[0][0] != 0x30 or spki[1][0] != 0x03:
                raise NotCommon("publicKey")
            oid, params = _algorithm(der, spki[0][1], spki[0][2])
            key = _bits(der, spki[1][1], spki[1][2])
            fields.public_key = (b"\x30" + der[pos + 1 : stop], oid, params, key)
        else:
            fields.extensions = _extensions(der, content, stop)


def _validity(der, start, end):
    """notAfter of an OptionalValidity ([0] notBefore, [1] notAfter, each an explicit Time) or None."""
    not_after, last = None, 0x9F
    for tag, content, stop, _pos in children(der, start, end):
        if tag not in (0xA0, 0xA1) or tag <= last:
            raise NotCommon("OptionalValidity")
        last = tag
        items = children(der, content, stop)
        if len(items) != 1:
            raise NotCommon("Time")
        time = _time_text(der, *items[0][:3])
        if tag == 0xA1:
            not_after = time
    return not_after


def _extensions(der, start, end):
    """[(OID, critical, extnValue)] of Extensions; critical is DEFAULT FALSE, so only TRUE is written in DER."""
    extensions = []
    for _tag, item_start, item_end, _pos in _sequence_of(der, start, end):
        parts = children(der, item_start, item_end)
        if not 2 <= len(parts) <= 3 or parts[0][0] != 0x06 or parts[-1][0] != 0x04:
            raise NotCommon("Extension")
        critical = len(parts) == 3
        if critical and (parts[1][0] != 0x01 or der[parts[1][1] : parts[1][2]] != b"\xff"):
            raise NotCommon("Extension critical")
        extensions.append((read_oid(der[parts[0][1] : parts[0][2]]), critical, der[parts[-1][1] : parts[-1][2]]))
    return extensions


# --- values inside a CertReqMsg ---------------------------------------------------------------------------

# GeneralName forms a subjectAltName carries in practice ([n] IMPLICIT IA5String or OCTET STRING).
_SAN_FORMS = {0x81: "rfc822Name", 0x82: "dNSName", 0x86: "uniformResourceIdentifier", 0x87: "iPAddress"}


def general_names(der):
    """[(form, str or, for iPAddress, bytes)] of a GeneralNames DER (subjectAltName's extnValue) in the forms of
    _SAN_FORMS; NotCommon for others."""
    tag, start, end = read_tlv(der, 0, len(der))
    if tag != 0x30 or end != len(der):
        raise NotCommon("GeneralNames")
    names = []
    for tag, item_start, item_end, _pos in children(der, start, end):
        form = _SAN_FORMS.get(tag)
        value = der[item_start:item_end]
        if form is None or not value:
            raise NotCommon("GeneralName form")
        if form != "iPAddress":
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError as exc:
                raise NotCommon("IA5String") from exc
        names.append((form, value))
    if not names:
        raise NotCommon("empty GeneralNames")
    return names


def old_cert_id(der):
    """(issuer Name DER, serialNumber) of a CertId whose issuer is a directoryName; NotCommon otherwise."""
    tag, start, end = read_tlv(der, 0, len(der))
    items = children(der, start, end) if tag == 0x30 and end == len(der) else ()
    if len(items) != 2 or items[0][0] != 0xA4 or items[1][0] != 0x02:
        raise NotCommon("CertId")
    return _check_name(der, items[0][1], items[0][2]), _integer(der, items[1][1], items[1][2])


# --- PBM parameters (RFC 4210 5.1.3.1) ---------------------------------------------------------------


PBM_SALT_MAX = 128


def pbm_parameters(der):
    """(salt, owf OID, iterationCount, mac OID) of a PBMParameter's DER; NotCommon outside the common form (the
    AlgorithmIdentifiers' parameters, which PBM does not use, may be anything pyasn1 takes: _algorithm checks)."""
    tag, start, end = read_tlv(der, 0, len(der))
    items = children(der, start, end) if tag == 0x30 and end == len(der) else ()
    # The salt's SIZE (0..128) is a constraint pyasn1 checks: a longer one is refused there.
    if [item[0] for item in items] != [0x04, 0x30, 0x02, 0x30] or items[0][2] - items[0][1] > PBM_SALT_MAX:
        raise NotCommon("PBMParameter")
    return (
        der[items[0][1] : items[0][2]],
        _algorithm(der, items[1][1], items[1][2])[0],
        _integer(der, items[2][1], items[2][2]),
        _algorithm(der, items[3][1], items[3][2])[0],
    )
