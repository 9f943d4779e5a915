# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Certificate profiles: what an issued certificate says besides its subject and key."""

from __future__ import annotations

from .errors import InvalidInput
from .keys import KEY_TYPES

try:
    from cryptography.x509.oid import ExtendedKeyUsageOID
except ImportError:  # reported by deps.missing()
    pass

# cryptography's KeyUsage arguments, in the order of their bits (RFC 5280 4.2.1.3: x509_der.py encodes them so).
KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


class Profile:
    """An end-entity certificate profile.

    key_usage: flags of KEY_USAGE_FLAGS (the extension is critical); extended_key_usage: names of
    cryptography's ExtendedKeyUsageOID attributes; validity_days: the default lifetime, which a
    domain may override (domain credentials) and a request may shorten; key_types: the subject key
    types it certifies, whatever the CA's own key type is.

    domain_credential: True for the LDevID a device onboards with, False for application certificates.
    san_types: the cryptography GeneralName types of the subject alternative names it issues, of which
    san_required demands at least one (of required_san_types, when given). san_critical marks the extension
    critical (OPC UA's applicationUri lives there). Which names a device gets is the server's rule (its names
    policy).
    """

    def __init__(
        self,
        name,
        key_usage,
        extended_key_usage,
        validity_days,
        key_types=KEY_TYPES,
        domain_credential=False,
        san_types=(),
        san_required=False,
        required_san_types=(),
        san_critical=False,
    ):
        unknown = set(key_usage) - set(KEY_USAGE_FLAGS)
        if unknown:
            raise InvalidInput("unknown key usage %s" % ", ".join(sorted(unknown)))
        self.name = name
        self.key_usage = tuple(key_usage)
        self.extended_key_usage = tuple(extended_key_usage)
        self.validity_days = validity_days
        self.key_types = tuple(key_types)
        self.domain_credential = domain_credential
        self.san_types = tuple(san_types)
        self.san_required = san_required
        self.required_san_types = tuple(required_san_types) or (self.san_types if san_required else ())
        self.san_critical = san_critical

    def extended_key_usage_oids(self):
        return [getattr(ExtendedKeyUsageOID, name) for name in self.extended_key_usage]


# The LDevID a device obtains when it is onboarded; later requests authenticate with it.
DOMAIN_CREDENTIAL = Profile(
    "domain_credential",
    key_usage=("digital_signature",),
    extended_key_usage=("CLIENT_AUTH",),
    validity_days=365,
    domain_credential=True,
)
TLS_CLIENT = Profile(
    "tls_client",
    key_usage=("digital_signature",),
    extended_key_usage=("CLIENT_AUTH",),
    validity_days=90,
    san_types=("DNSName", "IPAddress", "UniformResourceIdentifier", "RFC822Name"),
)
TLS_SERVER = Profile(
    "tls_server",
    key_usage=("digital_signature",),
    extended_key_usage=("SERVER_AUTH",),
    validity_days=90,
    san_types=("DNSName", "IPAddress"),
    san_required=True,
)

# OPC UA application instance certificate (OPC 10000-6 6.2.2): signing and encryption key usages, both
# TLS purposes, and the application's URI (applicationUri) as a URI SAN beside its host names.
OPC_UA = Profile(
    "opc_ua",
    key_usage=("digital_signature", "content_commitment", "key_encipherment", "data_encipherment"),
    extended_key_usage=("SERVER_AUTH", "CLIENT_AUTH"),
    validity_days=90,
    san_types=("UniformResourceIdentifier", "DNSName", "IPAddress"),
    required_san_types=("UniformResourceIdentifier",),
    san_critical=True,
)

PROFILES = {profile.name: profile for profile in (DOMAIN_CREDENTIAL, TLS_CLIENT, TLS_SERVER, OPC_UA)}
APPLICATION_PROFILES = tuple(name for name, profile in PROFILES.items() if not profile.domain_credential)


def get_profile(name):
    try:
        return PROFILES[name]
    except KeyError:
        raise InvalidInput("unknown certificate profile %r; known: %s" % (name, ", ".join(PROFILES))) from None
