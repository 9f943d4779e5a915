# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Small helpers over pyasn1 and raw DER that every ASN.1 module of the core needs."""

from __future__ import annotations

import functools
import re

try:
    from pyasn1.codec.der import decoder
    from pyasn1.error import PyAsn1Error
    from pyasn1.type import namedtype, univ
except ImportError:  # reported by deps.missing()
    pass
else:

    def _component_names(self):
        return "<%s object, types %s>" % (type(self).__name__, ", ".join(self))

    # pyasn1 writes repr(schema) into the message of a tag the schema does not expect ("... not in asn1Spec: %r"),
    # and that repr walks every nested type: 0.2-0.3 s of CPU for a 600-byte CMP request with one wrong tag, before
    # anything is authenticated. With the components' names only, it costs what the rest of the decode does.
    namedtype.NamedTypes.__repr__ = _component_names


def optional(seq, name):
    """A component if present, else None (pyasn1 instantiates absent ones on plain access)."""
    value = seq.getComponentByName(name, instantiate=False)
    if value is univ.noValue or value is None or not value.isValue:
        return None
    return value


def decode(der, spec=None):
    """Decode one DER value; trailing bytes are an error."""
    value, rest = decoder.decode(der, asn1Spec=spec) if spec is not None else decoder.decode(der)
    if rest:
        raise PyAsn1Error("%d bytes of trailing data" % len(rest))
    return value


_TAG_CLASSES = {"0": "UNIVERSAL", "64": "APPLICATION", "128": "", "192": "PRIVATE"}
_UNEXPECTED_TAG = re.compile(r"<TagSet object, tags (?:\d+:\d+:\d+-)*(\d+):\d+:(\d+)> not in asn1Spec: <(\w+)")
_PARSE_ERROR = re.compile(r"ParseError \{ kind: (\w+)(?:.*location: \[\"([\w:]+))?")
_REPR = re.compile(r"<[^<>]*>")
# pyasn1's containers, not types a reader knows: "where TagMap has no place" says nothing.
_NOT_TYPES = ("TagMap", "NamedTypes")
# Library messages may echo the input (a malformed time, an OID): only their start is looked at, so that no
# pattern runs over an attacker's 128 KiB.
_LOOKED_AT = 1000


def brief(exc):
    """A short description of a library error on untrusted input, in terms of the input, not of the library:
    pyasn1's messages embed whole schemas (megabytes), cryptography's its parser's debug output."""
    text = str(exc)[:_LOOKED_AT].split("\n", 1)[0]
    unexpected = _UNEXPECTED_TAG.search(text)
    if unexpected:
        tag_class, number, schema = unexpected.groups()
        tag = ("%s %s" % (_TAG_CLASSES.get(tag_class, tag_class), number)).strip()
        where = "none belongs" if schema in _NOT_TYPES else "%s has no place for one" % schema
        return "a value tagged [%s] where %s" % (tag, where)
    parse_error = _PARSE_ERROR.search(text)
    if parse_error:
        kind, location = parse_error.groups()
        return "malformed DER (%s%s)" % (kind, " in " + location if location else "")
    if "EndOfStream" in type(exc).__name__ or "SubstrateUnderrun" in type(exc).__name__:
        return "the DER ends before its values do"
    for _depth in range(8):  # innermost first: the reprs nest
        text, found = _REPR.subn("", text)
        if not found:
            break
    text = text.split("<", 1)[0]  # what is left of a repr nested deeper, or cut at _LOOKED_AT
    text = " ".join(text.split()).strip(" :,") or type(exc).__name__
    return text[:160] + ("..." if len(text) > 160 else "")


def der_children(der):
    """Split the content of a DER SEQUENCE into the raw encodings of its elements."""

    def read_tlv(data, pos):
        if pos + 2 > len(data):
            raise ValueError("truncated")
        length = data[pos + 1]
        head = 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 4 or pos + 2 + count > len(data):
                raise ValueError("bad length")
            length = int.from_bytes(data[pos + 2 : pos + 2 + count], "big")
            head += count
        end = pos + head + length
        if end > len(data):
            raise ValueError("truncated")
        return end

    outer_end = read_tlv(der, 0)
    if der[0] != 0x30 or outer_end != len(der):
        raise ValueError("not one SEQUENCE")
    length_byte = der[1]
    pos = 2 + (length_byte & 0x7F if length_byte & 0x80 else 0)
    children = []
    while pos < len(der):
        end = read_tlv(der, pos)
        children.append(der[pos:end])
        pos = end
    return children


def der_tlv(tag, content):
    """One DER value: tag byte, definite length, content."""
    length = len(content)
    if length < 0x80:
        head = bytes([length])
    else:
        raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + head + content


def der_sequence(*parts):
    return der_tlv(0x30, b"".join(parts))


@functools.lru_cache(maxsize=256)
def der_oid(dotted):
    """DER OBJECT IDENTIFIER of a dotted string (the few OIDs in use are encoded once): X.690 8.19, each arc in
    base 128, the first two as one."""
    arcs = [int(arc) for arc in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39) or min(arcs) < 0:
        raise ValueError("not an object identifier: %r" % dotted)
    content = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        septets = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            septets.append(0x80 | (arc & 0x7F))
        content += bytes(reversed(septets))
    return der_tlv(0x06, bytes(content))


def der_integer(value):
    """DER INTEGER: the shortest two's complement (X.690 8.3.2)."""
    size = (value + (value < 0)).bit_length() // 8 + 1
    return der_tlv(0x02, value.to_bytes(size, "big", signed=True))


def inner_der(der):
    """The content of an explicitly tagged DER value: the inner value's own encoding."""
    length_byte = der[1]
    return der[2 + (length_byte & 0x7F if length_byte & 0x80 else 0) :]
