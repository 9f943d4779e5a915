#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: device
short_description: Register a device with the Trustpoint enrollment service
version_added: 0.1.0
description:
  - Register a device in a domain of a Trustpoint server, or delete it, through the REST API.
  - A device registered with O(onboarding_method=cmp_shared_secret) gets a one-time shared secret, one with
    O(onboarding_method=est_password) a one-time password (its EST username is its name). The module
    returns them only when it creates the device or issues a new one (O(regenerate_secret)); the server
    keeps them encrypted or hashed and discards them once the device is onboarded.
  - Devices that onboard with their IDevID (V(cmp_idevid), V(est_idevid), V(aoki)) get no secret; the server
    matches their IDevID to them by O(serial_number) (or DevID registrations create them on first contact).
  - A device registered with O(onboarding_method=agent) gets a one-time onboarding token and the exact
    command that onboards it (RV(agent_command), C(trustpoint-agent onboard --url URL --token TOKEN)), to
    run on the device. The token onboards once.
  - The device's numeric id is the reference (CMP senderKID, C(openssl cmp -ref)) it onboards with.
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
    support: partial
    details:
      - With O(regenerate_secret=true) the module issues a new secret on every run.
options:
  name:
    description:
      - Name of the device, unique on the server; 1 to 64 letters, digits, V(.), V(_), V(:) or V(-).
      - The device's domain credential is issued with this name as its common name.
      - The name of a device that onboards with O(onboarding_method=est_password) must not contain V(:),
        because it is the HTTP Basic user-id, which ends at the first V(:). The module refuses to create such a
        device.
    type: str
    required: true
  domain:
    description:
      - Domain the device belongs to. Required when O(state=present).
      - A device cannot move to another domain; the module fails when it exists in a different one.
    type: str
  onboarding_method:
    description:
      - How the device obtains its domain credential, see M(trustpoint.pki.enroll).
      - V(cmp_shared_secret) - CMP initial registration protected by a password-based MAC with a one-time
        shared secret.
      - V(cmp_idevid) - CMP initial registration signed with the device's IDevID.
      - V(est_password) - EST simpleenroll with HTTP Basic authentication and a one-time password.
      - V(est_idevid) - EST simpleenroll with the IDevID as TLS client certificate.
      - V(none) - no onboarding and no domain credential; an operator issues its application certificates
        (M(trustpoint.pki.certificate), the web pages, or a download in its browser). Its status is
        V(no_onboarding).
      - V(aoki) - zero-touch (AOKI) - the device finds the server, checks its DevOwnerID
        (M(trustpoint.pki.devowner_id)) and enrolls with its IDevID by itself (C(trustpoint-agent aoki)).
        DevID registrations also create such devices on first contact.
      - V(agent) - C(trustpoint-agent onboard) with a one-time onboarding token (CMP protected by a MAC with
        the token's secret).
    type: str
    choices: [cmp_shared_secret, cmp_idevid, est_password, est_idevid, none, aoki, agent]
    default: cmp_shared_secret
  serial_number:
    description:
      - Subject serialNumber of the device's IDevID; the server finds the device by it when the device
        onboards with its IDevID. Used when the device is created; unique within the domain.
    type: str
  devid_registration:
    description:
      - The DevID registration (M(trustpoint.pki.devid_registration)) whose IDevIDs alone onboard the device
        (onboarding methods V(cmp_idevid), V(est_idevid) and V(aoki)).
      - Without it the server binds the device to the registration that first admits its IDevID, and refuses
        while several registrations of the domain match its serial number.
    type: str
    version_added: 0.2.0
  allowed_names:
    description:
      - Names the device may have in its application certificates besides its own name (its common name, the DNS
        name and the URI V(urn:trustpoint:device:<name>) derived from it) and those of its domain's
        O(trustpoint.pki.domain#module:allowed_names).
      - Entries C(TYPE:VALUE) with TYPE V(DNS), V(IP), V(URI), V(EMAIL) or V(CN), for example
        V(DNS:plc7.plant1.example), V(IP:10.0.5.11), V(URI:urn:plant1:plc7).
      - Not set leaves the list as it is; V([]) empties it.
    type: list
    elements: str
    version_added: 0.2.0
  state:
    description:
      - V(present) registers the device if it does not exist.
      - V(absent) deletes it. The server keeps the record of its certificates and marks them revoked.
    type: str
    choices: [present, absent]
    default: present
  regenerate_secret:
    description:
      - Issue a new one-time secret (shared secret, password or onboarding token) for an existing device and
        return it, for
        example when the first one was lost or the device must onboard again. The previous one stops working.
      - A device created by this run already gets a fresh secret; no second one is issued. Devices that
        onboard with their IDevID have no secret, so the option changes nothing for them.
    type: bool
    default: false
  unlock:
    description:
      - Let the device's one-time secret (shared secret, password or the secret of an agent's onboarding
        token) be tried again after the server locked it for too many failed attempts (the server's
        C(--auth-lockout); RV(device.secret_locked)). The failed attempts are counted from zero again.
      - Changes nothing when the secret is not locked. A new secret (O(regenerate_secret)) is never locked.
    type: bool
    default: false
    version_added: 0.2.0
notes:
  - RV(shared_secret), RV(password), RV(onboarding_token) and RV(agent_command) are credentials. Set C(no_log)
    on the task that registers the result, or keep them out of logs otherwise.
seealso:
  - module: trustpoint.pki.domain
  - module: trustpoint.pki.enroll
  - module: trustpoint.pki.certificate
"""

EXAMPLES = r"""
- name: Register the host as a device of plant1
  trustpoint.pki.device:
    name: "{{ inventory_hostname }}"
    domain: plant1
  delegate_to: localhost
  no_log: true
  register: tp_device

- name: Onboard it by hand with OpenSSL (see the quickstart)
  ansible.builtin.debug:
    msg: >-
      openssl cmp -cmd ir -server http://trustpoint.example.com:8080/.well-known/cmp/initialization/plant1/
      -ref {{ tp_device.device.id }} -secret pass:<the shared secret> -subject "/CN=Trustpoint Domain Credential"
      -newkey key.pem -certout cert.pem -chainout chain.pem -unprotected_errors

- name: Register a device that an operator onboards by hand with trustpoint-agent
  trustpoint.pki.device:
    name: gateway-12
    domain: plant1
    onboarding_method: agent
  delegate_to: localhost
  no_log: true
  register: tp_gateway

- name: Show the command to paste on the device (it works once)
  ansible.builtin.debug:
    msg: "{{ tp_gateway.agent_command }}"

- name: Let a device try its secret again after the server locked it for too many failed attempts
  trustpoint.pki.device:
    name: press-07
    domain: plant1
    unlock: true
  delegate_to: localhost

- name: Let the PLC have its host name and address in TLS server certificates
  trustpoint.pki.device:
    name: plc7
    domain: plant1
    allowed_names:
      - DNS:plc7.plant1.example
      - IP:10.0.5.11
  delegate_to: localhost
  no_log: true

- name: Remove a decommissioned device
  trustpoint.pki.device:
    name: press-07
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
device:
  description: The device as the server describes it.
  returned: when O(state=present)
  type: dict
  contains:
    id:
      description:
        - Numeric id of the device; the CMP reference (senderKID) it onboards with.
        - Missing in check mode for a device the run would create (the server assigns it).
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
      description: Subject serialNumber of the device's IDevID, or V(null).
      type: str
      sample: ACME-00001234
    status:
      description: >-
        V(pending) until the device holds a confirmed domain credential, then V(onboarded); V(no_onboarding) for
        a device with O(onboarding_method=none).
      type: str
      sample: pending
    devid_registration:
      description: The DevID registration the device belongs to, or V(null).
      type: str
    allowed_names:
      description: Names the device may have besides its own and its domain's (see O(allowed_names)).
      type: list
      elements: str
      sample: ["DNS:plc7.plant1.example"]
    created_at:
      description: When the device was registered (UTC). Missing in check mode for a device the run would create.
      type: str
      sample: "2026-11-28T01:02:57Z"
    onboarded_at:
      description: When the device last obtained a domain credential (UTC), or V(null) before onboarding.
      type: str
      sample: "2026-11-28T01:07:57Z"
    credential:
      description: >-
        The device's current domain credential (serial_number, subject, not_before, not_after,
        fingerprint_sha256, status, certificate), or V(null) before onboarding.
      type: dict
    failed_authentications:
      description: Failed attempts against the device's one-time secret since it was issued or unlocked.
      type: int
      sample: 0
      version_added: 0.2.0
    secret_locked:
      description: >-
        Whether the server refuses the device's one-time secret after too many failed attempts; O(unlock)
        or a new secret (O(regenerate_secret)) lifts it.
      type: bool
      sample: false
      version_added: 0.2.0
    secret_locked_at:
      description: When the secret was locked (UTC), or V(null).
      type: str
      sample: "2026-11-28T01:09:12Z"
      version_added: 0.2.0
shared_secret:
  description: >-
    The one-time shared secret of a V(cmp_shared_secret) device. Only returned when this run created the
    device or issued a new secret.
  returned: when created or regenerated, outside check mode
  type: str
password:
  description: >-
    The one-time EST password of an V(est_password) device (its username is the device name). Only returned
    when this run created the device or issued a new password.
  returned: when created or regenerated, outside check mode
  type: str
onboarding_token:
  description: >-
    The one-time onboarding token of an V(agent) device, C(<device id>.<secret>.<pin>) (the pin names the
    server's TLS anchor). Only returned when this run created the device or issued a new token.
  returned: when created or regenerated, outside check mode
  type: str
agent_command:
  description: The command that onboards an V(agent) device with RV(onboarding_token), to run on the device.
  returned: when created or regenerated, outside check mode
  type: str
  sample: trustpoint-agent onboard --url https://trustpoint.example.com:8443 --token 12.AbC...xyz.Q1w...e4
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible import devices
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.connection import (
    API_ARGS,
    CONNECTION_ARGS,
    run_api,
)


def _ensure(module, api):
    params = module.params
    current = devices.find_one(api, params["name"])
    if params["state"] == "absent":
        result = {"changed": current is not None}
        if current is not None and not module.check_mode:
            api.request("DELETE", "/devices/%d" % current["id"])
        result["diff"] = {"before": devices.settings(current) if current else {}, "after": {}}
        return result
    try:
        return devices.ensure(api, params, current, module.check_mode)
    except devices.Conflict as exc:
        module.fail_json(msg=str(exc))


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        domain=dict(type="str"),
        onboarding_method=dict(type="str", default="cmp_shared_secret", choices=list(devices.METHODS)),
        serial_number=dict(type="str"),
        devid_registration=dict(type="str"),
        allowed_names=dict(type="list", elements="str"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        regenerate_secret=dict(type="bool", default=False, no_log=False),
        unlock=dict(type="bool", default=False),
    )
    argument_spec.update(CONNECTION_ARGS)
    argument_spec.update(API_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "present", ["domain"])],
    )
    module.exit_json(**run_api(module, lambda api: _ensure(module, api)))


if __name__ == "__main__":
    main()
