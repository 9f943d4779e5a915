#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: devid_registration
short_description: Manage a DevID registration pattern of the Trustpoint enrollment service
version_added: 0.1.0
description:
  - Create, update or delete a DevID registration on a Trustpoint server through its REST API.
  - A DevID registration admits devices that onboard with an IDevID (CMP C(ir) signed with the IDevID) into a
    domain. It admits an IDevID when O(pattern) fully matches the IDevID's subject C(serialNumber) or one of
    its SAN URIs and the IDevID chains to a certificate of the registration's O(truststore).
  - The server validates the options (an existing domain, a truststore of usage V(idevid), a regular
    expression in RE2 syntax); the module reports the server's message when it refuses them.
author:
  - Trustpoint contributors (@trustpoint-project)
extends_documentation_fragment:
  - trustpoint.pki._connection
  - trustpoint.pki._api
  - trustpoint.pki._attributes
attributes:
  check_mode:
    support: full
    details:
      - The server validates the options only when it applies them, so check mode predicts the change
        without telling whether the server will accept it.
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  name:
    description:
      - Name of the registration, 1 to 64 letters, digits, V(_), V(.) or V(-), starting with a letter or digit.
    type: str
    required: true
  domain:
    description:
      - Domain the registration onboards devices into.
      - Needed to create the registration. When not set, an existing registration keeps its domain.
    type: str
  truststore:
    description:
      - Name of the truststore of usage V(idevid), see M(trustpoint.pki.truststore), that the IDevIDs must
        chain to.
      - Needed to create the registration. When not set, an existing registration keeps its truststore.
    type: str
  pattern:
    description:
      - Regular expression that must match the whole IDevID subject C(serialNumber) or a whole SAN URI,
        for example V(ACME-[0-9]{8}).
      - RE2 syntax (U(https://github.com/google/re2/wiki/Syntax)), which the server matches in linear time. That
        is Python's syntax without backreferences and lookaround; the server refuses a pattern with them.
      - Needed to create the registration. When not set, an existing registration keeps its pattern.
    type: str
  auto_create_devices:
    description:
      - Create the device in O(domain) when an admitted IDevID onboards and no device is registered for it.
        Otherwise such a device must be registered first, with its serial number.
      - The server's default, V(false), applies when the registration is created without it. When not set, an
        existing registration keeps its setting.
    type: bool
  state:
    description:
      - V(present) creates the registration, or updates the options that differ.
      - V(absent) deletes it. Devices it onboarded stay registered with their credentials.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: trustpoint.pki.truststore
  - module: trustpoint.pki.domain
  - module: trustpoint.pki.device_info
"""

EXAMPLES = r"""
- name: Onboard ACME devices that present an ACME IDevID into plant1
  trustpoint.pki.devid_registration:
    server_url: https://trustpoint.example.com:8443
    ca_path: tp-data/tls-ca.pem
    api_token: "{{ trustpoint_api_token }}"
    name: acme-plant1
    domain: plant1
    truststore: acme-idevid
    pattern: "ACME-[0-9]{8}"
    auto_create_devices: true
  delegate_to: localhost
  run_once: true

- name: Stop admitting ACME devices
  trustpoint.pki.devid_registration:
    name: acme-plant1
    state: absent
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
registration:
  description: The DevID registration as the server describes it.
  returned: when O(state=present)
  type: dict
  contains:
    name:
      description: Name of the registration.
      type: str
      sample: acme-plant1
    domain:
      description: Domain the registration onboards devices into.
      type: str
      sample: plant1
    truststore:
      description: Truststore the IDevIDs must chain to.
      type: str
      sample: acme-idevid
    pattern:
      description: Regular expression matched against the IDevID's serialNumber and SAN URIs.
      type: str
      sample: ACME-[0-9]{8}
    pattern_error:
      description: >-
        Why the server cannot use a pattern an earlier version stored (the registration then admits nothing
        until O(pattern) is changed), or V(null).
      type: str
      sample: null
      version_added: 0.2.0
    auto_create_devices:
      description: Whether an admitted IDevID without a registered device creates one.
      type: bool
      sample: true
    created_at:
      description: When the registration was created (UTC, ISO 8601). Absent in check mode for a new registration.
      type: str
      sample: "2025-01-31T12:00:00Z"
"""

from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.connection import (
    API_ARGS,
    CONNECTION_ARGS,
    run_api,
)

# The options the server stores, in the order the diff shows them.
FIELDS = ("domain", "truststore", "pattern", "auto_create_devices")


def _settings(registration):
    """What the diff shows of a registration."""
    return {k: registration[k] for k in ("name", *FIELDS) if k in registration}


def _ensure(module, api):
    params = module.params
    name = params["name"]
    path = "/devid-registrations/" + quote(name, safe="")
    current = api.get_or_none(path)
    before = _settings(current) if current else {}
    result = {"changed": False}

    if params["state"] == "absent":
        if current is not None:
            result["changed"] = True
            if not module.check_mode:
                api.request("DELETE", path)
        result["diff"] = {"before": before, "after": {}}
        return result

    # Only what the task sets; the server says what is missing or wrong.
    wanted = {k: params[k] for k in FIELDS if params[k] is not None}
    if current is None:
        result["changed"] = True
        request = dict(name=name, **wanted)
        registration = request if module.check_mode else api.request("POST", "/devid-registrations", request)
    else:
        patch = {k: v for k, v in wanted.items() if current.get(k) != v}
        registration = current
        if patch:
            result["changed"] = True
            registration = dict(current, **patch) if module.check_mode else api.request("PATCH", path, patch)
    result["registration"] = registration
    # In check mode a new registration is only what was asked for; the server would fill in the rest.
    result["diff"] = {"before": before, "after": _settings(registration)}
    return result


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        domain=dict(type="str"),
        truststore=dict(type="str"),
        pattern=dict(type="str"),
        auto_create_devices=dict(type="bool"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    argument_spec.update(CONNECTION_ARGS)
    argument_spec.update(API_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    module.exit_json(**run_api(module, lambda api: _ensure(module, api)))


if __name__ == "__main__":
    main()
