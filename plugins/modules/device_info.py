#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: device_info
short_description: List the devices of the Trustpoint enrollment service with their status and credential expiry
version_added: 0.1.0
description:
  - Read the devices registered on a Trustpoint server through its REST API, optionally only those with a
    given name, in a given domain or with a given status.
  - Each device comes with its onboarding status, its current domain credential and, for convenience, the
    days left until that credential expires.
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
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
    details:
      - This action does not modify state.
options:
  name:
    description:
      - Only the device with this name.
    type: str
  domain:
    description:
      - Only the devices of this domain. The module fails when the domain does not exist.
    type: str
  status:
    description:
      - Only the devices with this status.
      - V(pending) - registered, not yet holding a confirmed domain credential.
      - V(onboarded) - holding a domain credential.
    type: str
    choices: [pending, onboarded]
seealso:
  - module: trustpoint.pki.device
  - module: trustpoint.pki.enroll
  - module: trustpoint.pki.devid_registration
"""

EXAMPLES = r"""
- name: Read the onboarded devices of plant1
  trustpoint.pki.device_info:
    server_url: https://trustpoint.example.com:8443
    ca_path: tp-data/tls-ca.pem
    api_token: "{{ trustpoint_api_token }}"
    domain: plant1
    status: onboarded
  delegate_to: localhost
  run_once: true
  register: plant1_devices

- name: Name the devices whose credential expires within 30 days
  ansible.builtin.debug:
    msg: >-
      {{ plant1_devices.devices
         | selectattr('credential_expires_in_days', 'ne', none)
         | selectattr('credential_expires_in_days', 'lt', 30)
         | map(attribute='name') | list }}

- name: Read one device
  trustpoint.pki.device_info:
    name: "{{ inventory_hostname }}"
  delegate_to: localhost
  register: this_device
"""

RETURN = r"""
devices:
  description:
    - The matching devices, ordered by id, as the server describes them, each with
      RV(devices[].credential_expires_in_days) added.
    - Empty when no device matches.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Numeric id of the device; the CMP reference (senderKID) it onboards with.
      type: int
      sample: 7
    name:
      description: Name of the device.
      type: str
      sample: press-07
    domain:
      description: Domain of the device.
      type: str
      sample: plant1
    onboarding_method:
      description: How the device onboards.
      type: str
      sample: cmp_shared_secret
    serial_number:
      description: The device's serial number (the IDevID subject C(serialNumber)), or V(null).
      type: str
    status:
      description: V(pending) until the device holds a confirmed domain credential, then V(onboarded).
      type: str
      sample: onboarded
    created_at:
      description: When the device was registered (UTC, ISO 8601).
      type: str
      sample: "2025-01-31T12:00:00Z"
    onboarded_at:
      description: When the device was onboarded (UTC, ISO 8601), or V(null).
      type: str
      sample: "2025-01-31T12:05:00Z"
    credential:
      description: >-
        The device's current domain credential (serial_number, subject, not_before, not_after,
        fingerprint_sha256, status, certificate), or V(null) before onboarding.
      type: dict
    credential_expires_in_days:
      description:
        - Days from now until the C(not_after) of the device's current credential, with fractions; negative
          once it has expired. V(null) when the device has no credential.
      type: float
      sample: 364.98
"""

import datetime
from urllib.parse import urlencode

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.connection import (
    API_ARGS,
    CONNECTION_ARGS,
    run_api,
)

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DAY = 86400.0


def _expires_in_days(device, now):
    credential = device.get("credential")
    if not credential or not credential.get("not_after"):
        return None
    not_after = datetime.datetime.strptime(credential["not_after"], TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)
    return round((not_after - now).total_seconds() / DAY, 2)


def _devices(module, api):
    params = module.params
    query = {k: params[k] for k in ("name", "domain") if params[k]}
    path = "/devices" + ("?" + urlencode(query) if query else "")
    now = datetime.datetime.now(datetime.timezone.utc)
    devices = []
    for device in api.request("GET", path):
        if params["status"] and device.get("status") != params["status"]:
            continue
        devices.append(dict(device, credential_expires_in_days=_expires_in_days(device, now)))
    return {"changed": False, "devices": devices}


def main():
    argument_spec = dict(
        name=dict(type="str"),
        domain=dict(type="str"),
        status=dict(type="str", choices=["pending", "onboarded"]),
    )
    argument_spec.update(CONNECTION_ARGS)
    argument_spec.update(API_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    module.exit_json(**run_api(module, lambda api: _devices(module, api)))


if __name__ == "__main__":
    main()
