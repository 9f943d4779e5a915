# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which names a device may have in the certificates it obtains: decide() is the one rule that CMP, EST, the
API and the pages apply (through pki.issue_for_device) before anything is signed.

A device may always have its own name: the common name = its device name, the DNS name derived from it (when
the device name is a valid host name) and the URI `urn:trustpoint:device:<device name>`. Anything more comes
from allow-lists the operator sets on the device and on its domain, entries of the form TYPE:VALUE:

    DNS:plc7.plant1.example     DNS:*.plant1.example (one more label)     DNS:{device}.plant1.example
    IP:10.0.5.11                IP:10.0.5.0/24
    URI:urn:plant1:plc7         URI:urn:plant1:*  (prefix)
    EMAIL:ops@plant1.example    EMAIL:*@plant1.example
    CN:Line 7 controller        CN:*.plant1.example

`{device}` stands for the device's name (lowercase in DNS names). A common name is allowed by a CN entry or,
when it is a host name, by a DNS entry. Wildcard certificates are never issued, and a name that is another
device's own name needs an entry on this device itself (a domain entry does not give it away).

Domain credentials carry the device's name only (CN = device name, no SANs). Application certificates carry a
common name and the subject alternative names asked for when each is allowed; other subject attributes (O,
OU, ...) are dropped, and a tls_server request without a SAN gets its host-name CN as DNS name. When the
issued names differ from the requested ones, `modified` is True: CMP answers grantedWithMods.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from cryptography import x509 as cx509
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from trustpoint_core import x509

from ..errors import ApiError
from ..storage.models import Device

TYPES = ("DNS", "IP", "URI", "EMAIL", "CN")
PLACEHOLDER = "{device}"
MAX_ENTRIES = 100
MAX_ENTRY = 255
URI_PREFIX = "urn:trustpoint:device:"
# The subject alternative names an allow-list can permit, by the TYPE of its entries.
SAN_KINDS = {
    cx509.DNSName: "DNS",
    cx509.IPAddress: "IP",
    cx509.UniformResourceIdentifier: "URI",
    cx509.RFC822Name: "EMAIL",
}
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# Unicode categories refused in any requested name: controls (NUL, newline, ESC, DEL, C1), format characters
# (bidirectional overrides, zero-width joiners) and line/paragraph separators. They forge log lines and
# displayed names.
_REFUSED_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")


class NameRefused(Exception):
    """A requested name is refused. not_allowed: True when the device may not have it (CMP badCertTemplate,
    EST 403); False when it is malformed (EST 400)."""

    def __init__(self, message, not_allowed=True):
        super().__init__(message)
        self.message = message
        self.not_allowed = not_allowed


class Names:
    """What decide() issues: subject (a cryptography Name), sans (GeneralNames), and whether either differs
    from the request (changes: what was changed, for the log)."""

    def __init__(self, subject, sans, changes=()):
        self.subject = subject
        self.sans = sans
        self.changes = list(changes)

    @property
    def modified(self):
        return bool(self.changes)


def has_control_characters(text):
    return any(unicodedata.category(character) in _REFUSED_CATEGORIES for character in text)


def _shown(text):
    """text for a message: control characters escaped, long text cut."""
    return ascii(text[:80] + ("..." if len(text) > 80 else ""))


def is_host_name(text):
    """True for an LDH host name (labels of letters, digits and inner hyphens; no wildcard, no trailing dot)."""
    if not isinstance(text, str) or not text or len(text) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in text.lower().split("."))


def own_dns_name(device_name):
    lower = device_name.lower()
    return lower if is_host_name(lower) else None


def own_uri(device_name):
    return URI_PREFIX + device_name


# --- allow-list entries --------------------------------------------------------------------------------


def check_allowed_names(value, field="allowed_names"):
    """The normalised allow-list (TYPE upper case), or ApiError 400 saying which entry is wrong and why."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise ApiError(400, '%s must be a list of strings such as "DNS:plc7.plant1.example"' % field)
    if len(value) > MAX_ENTRIES:
        raise ApiError(400, "%s holds %d entries; at most %d" % (field, len(value), MAX_ENTRIES))
    normalised = []
    for entry in value:
        kind, sep, name = entry.partition(":")
        kind = kind.strip().upper()
        try:
            if not sep or kind not in TYPES:
                raise ValueError("it must start with one of %s" % ", ".join(t + ":" for t in TYPES))
            if not name or len(name) > MAX_ENTRY:
                raise ValueError("the name after %s: must be 1-%d characters" % (kind, MAX_ENTRY))
            if has_control_characters(name):
                raise ValueError("it holds control characters")
            _check_entry(kind, name.replace(PLACEHOLDER, "device"))
        except ValueError as exc:
            raise ApiError(400, "%s entry %s: %s" % (field, _shown(entry), exc)) from exc
        if kind == "DNS":
            name = name.lower().replace(PLACEHOLDER.lower(), PLACEHOLDER)
        normalised.append("%s:%s" % (kind, name))
    return list(dict.fromkeys(normalised))


def _check_entry(kind, name):
    if kind == "DNS":
        if not is_host_name(name[2:] if name.startswith("*.") else name):
            raise ValueError("not a host name (or *. and a host name)")
    elif kind == "IP":
        try:
            ipaddress.ip_network(name, strict=True)
        except ValueError as exc:
            raise ValueError("not an IP address or network: %s" % exc) from None
    elif kind == "URI":
        if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", name) or "*" in name[:-1]:
            raise ValueError("not a URI (scheme:...), with * only as the last character")
    elif kind == "EMAIL":
        local, at, domain = name.rpartition("@")
        if not at or not local or not is_host_name(domain) or ("*" in local and local != "*"):
            raise ValueError("not an email address or *@domain")
    elif "*" in (name[2:] if name.startswith("*.") else name):
        raise ValueError("* only as a leading *. label")


class Allowed:
    """The names device may have: its own, and those of its and its domain's allow-lists."""

    def __init__(self, device, domain):
        self.device_name = device.name
        self.own = {("CN", device.name), ("URI", own_uri(device.name))}
        own_dns = own_dns_name(device.name)
        if own_dns:
            self.own.add(("DNS", own_dns))
        self.device_entries = self._expand(device.allowed_names)
        self.domain_entries = self._expand(domain.allowed_names)

    def _expand(self, entries):
        expanded = []
        for entry in entries or ():
            kind, _sep, name = entry.partition(":")
            if PLACEHOLDER in name:
                if kind == "DNS":
                    own_dns = own_dns_name(self.device_name)
                    if own_dns is None:
                        continue  # the device's name is no host name: the entry names nothing for it
                    name = name.replace(PLACEHOLDER, own_dns)
                else:
                    name = name.replace(PLACEHOLDER, self.device_name)
            expanded.append((kind, name))
        return expanded

    def permits(self, kind, value, own_entries_only=False):
        """Whether the name (kind, value) is allowed; own_entries_only: by the device's own allow-list only."""
        candidates = [] if own_entries_only else sorted(self.own)
        candidates += self.device_entries + ([] if own_entries_only else self.domain_entries)
        return any(_matches(entry_kind, entry, kind, value) for entry_kind, entry in candidates)


def _matches(entry_kind, entry, kind, value):
    if kind == "CN":
        # A common name is allowed by a CN entry, or as a host name by a DNS entry.
        if entry_kind == "CN":
            return _wildcard_match(entry.lower(), value.lower()) if entry.startswith("*.") else entry == value
        return entry_kind == "DNS" and is_host_name(value) and _matches("DNS", entry, "DNS", value)
    if entry_kind != kind:
        return False
    if kind == "DNS":
        return _wildcard_match(entry, value.lower()) if entry.startswith("*.") else entry == value.lower()
    if kind == "IP":
        return ipaddress.ip_address(value) in ipaddress.ip_network(entry)
    if kind == "URI":
        return value.startswith(entry[:-1]) if entry.endswith("*") else value == entry
    if kind == "EMAIL":
        if entry.startswith("*@"):
            return value.lower().endswith(entry[1:].lower())
        return value.lower() == entry.lower()
    return False


def _wildcard_match(pattern, value):
    """*.suffix matches exactly one more (host name) label."""
    label, dot, rest = value.partition(".")
    return bool(dot) and rest == pattern[2:] and bool(_LABEL.fullmatch(label))


# --- the decision --------------------------------------------------------------------------------------


def _requested_names(requested_sans, profile):
    """[(kind, value, general name)] of the request's SANs; NameRefused for what is malformed or of a type the
    profile does not issue."""
    names = []
    for general_name in requested_sans:
        kind = SAN_KINDS.get(type(general_name))
        if kind is None or type(general_name).__name__ not in profile.san_types:
            raise NameRefused(
                "profile %s does not issue subject alternative names of type %s; it issues %s"
                % (profile.name, type(general_name).__name__, ", ".join(profile.san_types) or "none"),
                not_allowed=False,
            )
        value = general_name.value
        if kind == "IP":
            if not isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                raise NameRefused("the IP address SAN %s is a network, not an address" % value, not_allowed=False)
            value = str(value)
        elif has_control_characters(value):
            raise NameRefused("the %s name %s holds control characters" % (kind, _shown(value)), not_allowed=False)
        elif kind == "DNS" and not is_host_name(value):
            raise NameRefused(
                "the DNS name %s is not a host name (letters, digits and hyphens; wildcard certificates are not "
                "issued)" % _shown(value),
                not_allowed=False,
            )
        names.append((kind, value, general_name))
    return names


def _check_subject_text(requested_subject):
    for attribute in requested_subject or ():
        if isinstance(attribute.value, str) and has_control_characters(attribute.value):
            raise NameRefused(
                "the subject's %s %s holds control characters"
                % (attribute.rfc4514_attribute_name, _shown(attribute.value)),
                not_allowed=False,
            )


def _other_devices(db, device, values):
    """The names among values that another device has as its own name (exactly or in other case)."""
    candidates = set(values) | {value.lower() for value in values}
    if not candidates:
        return set()
    rows = db.scalars(select(Device.name).where(Device.name.in_(sorted(candidates)), Device.id != device.id))
    taken = {name.lower() for name in rows}
    return {value for value in values if value.lower() in taken}


def decide(db, device, domain, profile, requested_subject, requested_sans):
    """The subject and SANs a certificate of profile for device gets from the requested ones (a cryptography
    Name or None, and GeneralNames): Names, or NameRefused saying which name and why. See the module's
    documentation for the rules."""
    requested_sans = list(requested_sans or ())
    _check_subject_text(requested_subject)
    if profile.domain_credential:
        subject = x509.common_name(device.name)
        changes = []
        if requested_subject is not None and len(requested_subject) and requested_subject != subject:
            changes.append(
                "subject %s replaced by %s" % (x509.name_to_string(requested_subject), x509.name_to_string(subject))
            )
        if requested_sans:
            changes.append("subject alternative names dropped (a domain credential has none)")
        return Names(subject, [], changes)

    requested = _requested_names(requested_sans, profile)
    allowed = Allowed(device, domain)
    changes = []
    common_names = [a.value for a in requested_subject or () if a.oid == NameOID.COMMON_NAME]
    if len(common_names) > 1:
        raise NameRefused("the subject has %d common names; ask for one" % len(common_names), not_allowed=False)
    dropped = [a.rfc4514_attribute_name for a in requested_subject or () if a.oid != NameOID.COMMON_NAME]
    if dropped:
        changes.append("subject attribute(s) %s dropped" % ", ".join(dropped))
    common_name = common_names[0] if common_names else device.name
    if requested_subject is not None and len(requested_subject) and not common_names:
        changes.append("common name %s added" % common_name)

    wanted = [("CN", common_name)] + [(kind, value) for kind, value, _name in requested]
    refused = [(kind, value) for kind, value in wanted if not allowed.permits(kind, value)]
    # A domain-wide entry (DNS:*.plant1.example) must not hand out another device's own name.
    others = _other_devices(db, device, [value for kind, value in wanted if kind in ("CN", "DNS")])
    refused += [
        (kind, value)
        for kind, value in wanted
        if kind in ("CN", "DNS")
        and value in others
        and not allowed.permits(kind, value, own_entries_only=True)
        and (kind, value) not in refused
    ]
    if refused:
        raise NameRefused(
            "device %s may not have %s in its certificates; it may have its own name (%s) and what the "
            "allowed_names of the device or of domain %s permit"
            % (
                device.name,
                ", ".join("%s:%s" % (kind, _shown(value)[1:-1]) for kind, value in refused),
                ", ".join("%s:%s" % pair for pair in sorted(allowed.own)),
                domain.name,
            )
        )

    sans = []
    for _kind, _value, general_name in requested:
        if general_name not in sans:
            sans.append(general_name)
    if len(sans) != len(requested):
        changes.append("repeated subject alternative names dropped")
    required = profile.required_san_types
    if required and not any(type(name).__name__ in required for name in sans):
        # A host name CN stands in for the DNS name a TLS server needs; nothing stands in for an OPC UA
        # applicationUri (the application's, not the server's choice).
        if "DNSName" not in required or not is_host_name(common_name):
            raise NameRefused(
                "profile %s needs a subject alternative name of type %s%s"
                % (
                    profile.name,
                    " or ".join(required),
                    ", and the common name %s is no host name to take as one" % _shown(common_name)
                    if "DNSName" in required
                    else "",
                ),
                not_allowed=False,
            )
        sans.append(cx509.DNSName(common_name.lower()))
        changes.append("DNS name %s added (profile %s needs one)" % (common_name.lower(), profile.name))
    return Names(x509.common_name(common_name), sans, changes)
