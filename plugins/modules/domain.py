#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: domain
short_description: Manage a PKI domain of the Trustpoint enrollment service
version_added: 0.1.0
description:
  - Create or delete a domain on a Trustpoint server through its REST API.
  - Creating a domain creates its CA chain, a self-signed root CA and an issuing CA below it; devices of
    the domain receive their domain credentials from the issuing CA.
author:
  - Trustpoint contributors (@trustpoint-project)
extends_documentation_fragment:
  - trustpoint.pki._connection
  - trustpoint.pki._api
  - trustpoint.pki._attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  name:
    description:
      - Name of the domain, 1 to 64 letters, digits, V(_) or V(-). It appears in the enrollment URLs.
    type: str
    required: true
  state:
    description:
      - V(present) creates the domain if it does not exist and sets O(validity_days), O(cmp_central_keygen) and
        O(cmp_ir_with_credential).
      - V(absent) deletes the domain with its CA chain. The server refuses while devices belong to it.
    type: str
    choices: [present, absent]
    default: present
  key_type:
    description:
      - Key type of the domain's root and issuing CA, used when the domain is created.
      - When the domain exists with another key type the module fails; the CA key of an existing
        domain cannot change.
      - The server's default, V(ecdsa-p256), applies when not set.
      - Devices may use any supported key type, whatever the CA's.
    type: str
    choices: [ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096]
  validity_days:
    description:
      - Lifetime in days of the domain credentials the domain issues from now on.
      - The server's default, V(365), applies when the domain is created without it.
    type: int
  allowed_names:
    description:
      - Names every device of the domain may have in its application certificates besides its own name (its
        common name, the DNS name and the URI V(urn:trustpoint:device:<name>) derived from it).
      - Entries C(TYPE:VALUE) with TYPE V(DNS), V(IP), V(URI), V(EMAIL) or V(CN), for example
        V(DNS:*.plant1.example) (one more label), V(DNS:{device}.plant1.example) (each device's own name under
        that domain), V(IP:10.0.5.0/24), V(URI:urn:plant1:*) (a prefix). A name that is another device's own
        name needs the device's own O(trustpoint.pki.device#module:allowed_names).
      - Not set leaves the list as it is; V([]) empties it.
    type: list
    elements: str
    version_added: 0.2.0
  cmp_central_keygen:
    description:
      - Whether the server generates the key for a CMP ir or cr that carries none (RFC 9483 4.1.6) and returns
        it encrypted to the device.
      - The server's default, V(true), applies when the domain is created without it.
    type: bool
    version_added: 0.2.0
  cmp_ir_with_credential:
    description:
      - What a CMP ir signed with a domain credential this server issued gets. V(refuse) answers notAuthorized
        (a device that holds a credential uses cr or kur); V(certify) handles it like a cr, for general-purpose
        clients that begin every enrollment with ir.
      - The server's default, V(refuse), applies when the domain is created without it.
    type: str
    choices: [refuse, certify]
    version_added: 0.2.0
seealso:
  - module: trustpoint.pki.device
  - module: trustpoint.pki.enroll
"""

EXAMPLES = r"""
- name: Create the domain of plant 1
  trustpoint.pki.domain:
    server_url: https://trustpoint.example.com:8443
    ca_path: tp-data/tls-ca.pem
    api_token: "{{ trustpoint_api_token }}"
    name: plant1
    key_type: ecdsa-p384
    validity_days: 90
    allowed_names:
      - "DNS:{device}.plant1.example"
  delegate_to: localhost
  run_once: true
  register: plant1

- name: Let plant 1's general-purpose CMP clients enroll further certificates with ir, without server-side keys
  trustpoint.pki.domain:
    name: plant1
    cmp_ir_with_credential: certify
    cmp_central_keygen: false
  delegate_to: localhost

- name: Show the domain's CA chain
  ansible.builtin.debug:
    msg: "{{ plant1.domain.ca_chain }}"

- name: Delete a domain that has no devices left
  trustpoint.pki.domain:
    name: lab
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
domain:
  description: The domain as the server describes it; absent when O(state=absent).
  returned: when O(state=present)
  type: dict
  contains:
    name:
      description: Name of the domain.
      type: str
      sample: plant1
    key_type:
      description: Key type of the domain's CAs.
      type: str
      sample: ecdsa-p256
    validity_days:
      description: Lifetime in days of the domain credentials it issues.
      type: int
      sample: 365
    allowed_names:
      description: Names every device of the domain may have besides its own (see O(allowed_names)).
      type: list
      elements: str
      sample: ["DNS:{device}.plant1.example"]
    cmp_central_keygen:
      description: Whether the server generates keys for CMP requests without one.
      type: bool
      sample: true
    cmp_ir_with_credential:
      description: What a CMP ir signed with an issued domain credential gets, V(refuse) or V(certify).
      type: str
      sample: refuse
    device_count:
      description: Number of devices registered in the domain.
      type: int
      sample: 3
    issuing_ca:
      description: Serial number, subject, issuer, validity and SHA-256 fingerprint of the issuing CA certificate.
      type: dict
    root_ca:
      description: Serial number, subject, issuer, validity and SHA-256 fingerprint of the root CA certificate.
      type: dict
    ca_chain:
      description: PEM of the issuing CA certificate followed by the root CA certificate.
      type: str
    created_at:
      description: When the domain was created (UTC). Not returned in check mode for a domain the run would create.
      type: str
      sample: "2026-11-28T01:02:57Z"
"""

from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.connection import (
    API_ARGS,
    CONNECTION_ARGS,
    run_api,
)
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.names import normalise
from ansible_collections.trustpoint.pki.plugins.module_utils.keys import KEY_TYPES

# What PATCH may change on an existing domain.
_CHANGEABLE = ("validity_days", "allowed_names", "cmp_central_keygen", "cmp_ir_with_credential")


def _settings(domain):
    """What the diff shows of a domain."""
    return {k: domain[k] for k in ("name", "key_type", *_CHANGEABLE) if k in domain}


def _ensure(module, api):
    name = module.params["name"]
    path = "/domains/" + quote(name, safe="")
    current = api.get_or_none(path)
    before = _settings(current) if current else {}
    result = {"changed": False}

    if module.params["state"] == "absent":
        if current is not None:
            result["changed"] = True
            if not module.check_mode:
                api.request("DELETE", path)
        result["diff"] = {"before": before, "after": {}}
        return result

    wanted = {k: module.params[k] for k in ("key_type", *_CHANGEABLE) if module.params[k] is not None}
    if module.params["allowed_names"] is not None:
        wanted["allowed_names"] = normalise(module.params["allowed_names"])
    if current is None:
        result["changed"] = True
        request = dict(name=name, **wanted)
        domain = request if module.check_mode else api.request("POST", "/domains", request)
    else:
        if "key_type" in wanted and wanted["key_type"] != current["key_type"]:
            module.fail_json(
                msg="domain %s exists with CA key type %s; the key type of an existing domain cannot change "
                "(delete and recreate the domain, or leave key_type unset)" % (name, current["key_type"])
            )
        domain = current
        patch = {k: wanted[k] for k in _CHANGEABLE if k in wanted and wanted[k] != current.get(k)}
        if patch:
            result["changed"] = True
            domain = dict(current, **patch) if module.check_mode else api.request("PATCH", path, patch)
    result["domain"] = domain
    # In check mode a new domain is only what was asked for; the server would fill in the rest.
    result["diff"] = {"before": before, "after": _settings(domain)}
    return result


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        key_type=dict(type="str", choices=list(KEY_TYPES)),
        validity_days=dict(type="int"),
        allowed_names=dict(type="list", elements="str"),
        cmp_central_keygen=dict(type="bool"),
        cmp_ir_with_credential=dict(type="str", choices=["refuse", "certify"]),
    )
    argument_spec.update(CONNECTION_ARGS)
    argument_spec.update(API_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    module.exit_json(**run_api(module, lambda api: _ensure(module, api)))


if __name__ == "__main__":
    main()
