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
    domain may override and a request may shorten; key_types: the subject key types it certifies,
    whatever the CA's own key type is.
    """

    def __init__(self, name, key_usage, extended_key_usage, validity_days, key_types=KEY_TYPES):
        unknown = set(key_usage) - set(KEY_USAGE_FLAGS)
        if unknown:
            raise InvalidInput("unknown key usage %s" % ", ".join(sorted(unknown)))
        self.name = name
        self.key_usage = tuple(key_usage)
        self.extended_key_usage = tuple(extended_key_usage)
        self.validity_days = validity_days
        self.key_types = tuple(key_types)

    def extended_key_usage_oids(self):
        return [getattr(ExtendedKeyUsageOID, name) for name in self.extended_key_usage]


# The LDevID a device obtains when it is onboarded; later requests authenticate with it.
DOMAIN_CREDENTIAL = Profile(
    "domain_credential",
    key_usage=("digital_signature",),
    extended_key_usage=("CLIENT_AUTH",),
    validity_days=365,
)

PROFILES = {profile.name: profile for profile in (DOMAIN_CREDENTIAL,)}


def get_profile(name):
    try:
        return PROFILES[name]
    except KeyError:
        raise InvalidInput("unknown certificate profile %r" % name) from None
