# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A strict DER reader for the envelope of a PKIMessage (RFC 4210 5.1): the header fields, the body's
bytes, the protection and the extraCerts, as slices of the received message.

pyasn1 decodes a 500-byte ir in 1-2 ms, most of it the header, and it decodes every extraCert only for
cmp_message to encode it again (issue 16). This reader takes the common form only: strict DER (definite,
minimal lengths), the header's fields in order, sender and recipient as directoryNames, primitive OCTET
STRINGs, a protection without unused bits, extraCerts that are X.509 certificates in DER. Anything else
raises NotCommon, and cmp_message decodes the message with pyasn1 as before: a message this reader takes
gives the same CmpMessage fields, and one it does not gets the same answer (failInfo) as before.
"""

from __future__ import annotations

import datetime
import functools

from .asn1 import decode

try:
    from pyasn1.codec.der import encoder
    from pyasn1.type import useful
    from pyasn1_alt_modules import rfc9480
except ImportError:  # reported by deps.missing()
    pass


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


def children(data, start, end):
    """[(tag, content start, content end, value start)] of the values in data[start:end]."""
    items = []
    pos = start
    while pos < end:
        tag, content, stop = read_tlv(data, pos, end)
        items.append((tag, content, stop, pos))
        pos = stop
    return items


def read_oid(content):
    """The dotted string of an OBJECT IDENTIFIER's content (X.690 8.19)."""
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


def cached_if_small(function):
    """functools.lru_cache for values of at most CACHED_SIZE bytes: the cache is for what every device sends
    (its CA's chain and names), and an unauthenticated sender's big values must not fill memory."""
    cached = functools.lru_cache(maxsize=CACHE_ENTRIES)(function)

    @functools.wraps(function)
    def call(der):
        return cached(der) if len(der) <= CACHED_SIZE else function(der)

    call.cache_info = cached.cache_info
    return call


# At most 256 entries of at most 8 KiB (2 MiB) per cache and process.
CACHE_ENTRIES, CACHED_SIZE = 256, 8192


@cached_if_small
def _check_certificate(der):
    """NotCommon unless pyasn1 decodes der as a CMPCertificate and encodes it to the same bytes: what the
    decoder of the whole message made of it. Once per distinct certificate (a chain that every device of a
    fleet sends is checked once per process)."""
    try:
        same = encoder.encode(decode(der, rfc9480.CMPCertificate())) == der
    except Exception as exc:  # any library error: pyasn1 decides what it is, on the whole message
        raise NotCommon("extraCerts: %s" % type(exc).__name__) from exc
    if not same:
        raise NotCommon("extraCerts: not DER")


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
    items = children(der, start, end)
    if len(items) != 1 or items[0][0] != 0x30:
        raise NotCommon("directoryName is not an RDNSequence")
    return der[items[0][3] : items[0][2]]


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
    params = der[items[1][3] : items[1][2]] if len(items) == 2 else None
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
