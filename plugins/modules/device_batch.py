#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: device_batch
short_description: Register a batch of devices with the Trustpoint enrollment service in one task
version_added: 0.2.0
description:
  - Does for every device in O(devices) what M(trustpoint.pki.device) does for one with
    O(trustpoint.pki.device#module:state=present), in one task on the controller, so that a fleet playbook registers
    all its hosts at once instead of running a task per host.
  - Reads the domain and every listed device first and checks them all (the domain exists, no device exists in
    another domain or with another onboarding method, names the server accepts) before it registers anything.
  - In check mode it reads and checks the same and registers nothing, so it also serves to read the server's
    view of a fleet (RV(devices), RV(domain)).
  - Devices that are created, or for which O(devices[].regenerate_secret) issues a new secret, come back with
    their one-time secret (C(shared_secret) or C(password)).
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
      - Devices with O(devices[].regenerate_secret=true) get a new secret on every run.
options:
  domain:
    description:
      - Domain every device belongs to. The module fails, naming the domains that exist, when it does not exist.
    type: str
    required: true
  devices:
    description:
      - The devices, each at most once.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name of the device, see O(trustpoint.pki.device#module:name).
        type: str
        required: true
      onboarding_method:
        description:
          - How the device obtains its domain credential, see O(trustpoint.pki.device#module:onboarding_method).
        type: str
        choices: [cmp_shared_secret, cmp_idevid, est_password, est_idevid, none, aoki, agent]
        default: cmp_shared_secret
      serial_number:
        description:
          - Subject serialNumber of the device's IDevID. Used when the device is created.
        type: str
      regenerate_secret:
        description:
          - Issue a new one-time secret for the device if it exists (a device created now gets one anyway).
        type: bool
        default: false
notes:
  - RV(devices) holds credentials. Set C(no_log) on the task.
  - When the server refuses a registration half-way, the devices registered before it stay registered; their
    secrets are lost with the failed task. Running the task again with O(devices[].regenerate_secret=true)
    for them issues new ones.
seealso:
  - module: trustpoint.pki.device
  - module: trustpoint.pki.enroll
"""

EXAMPLES = r"""
- name: Register the presses of plant1 in one task
  trustpoint.pki.device_batch:
    server_url: https://trustpoint.example.com:8443
    ca_path: tp-data/tls-ca.pem
    domain: plant1
    devices:
      - name: press-01
      - name: press-02
        onboarding_method: est_password
      - name: press-03
        onboarding_method: cmp_idevid
        serial_number: ACME-00001234
  delegate_to: localhost
  run_once: true
  no_log: true
  register: tp_devices

- name: Onboard each press with its own secret
  trustpoint.pki.enroll:
    server_url: https://trustpoint.example.com:8443
    ca_path: /etc/trustpoint/tls-ca.pem
    domain: plant1
    device_id: "{{ tp_devices.devices[inventory_hostname].device.id }}"
    shared_secret: "{{ tp_devices.devices[inventory_hostname].shared_secret }}"
    ca_certificates: "{{ tp_devices.domain.ca_chain }}"
    key_path: /etc/trustpoint/domain_credential.key
    certificate_path: /etc/trustpoint/domain_credential.pem
    chain_path: /etc/trustpoint/domain_chain.pem
  when: tp_devices.devices[inventory_hostname].shared_secret is defined
"""

RETURN = r"""
domain:
  description: The domain as the server describes it (see RV(trustpoint.pki.domain#module:domain)), with its CA chain.
  returned: success
  type: dict
devices:
  description:
    - For each device, by name, what M(trustpoint.pki.device) returns for it.
  returned: success
  type: dict
  contains:
    changed:
      description: Whether the device was (or in check mode would be) created or given a new secret.
      type: bool
    device:
      description:
        - The device as the server describes it (id, name, domain, onboarding_method, serial_number, status,
          created_at, onboarded_at, credential). A device the run would create in check mode has no id.
      type: dict
    shared_secret:
      description: The one-time shared secret of a V(cmp_shared_secret) device created or regenerated by this run.
      type: str
      returned: when created or regenerated, outside check mode
    password:
      description: The one-time EST password of an V(est_password) device created or regenerated by this run.
      type: str
      returned: when created or regenerated, outside check mode
    onboarding_token:
      description: The one-time onboarding token of an V(agent) device created or regenerated by this run.
      type: str
      returned: when created or regenerated, outside check mode
    agent_command:
      description: The command that onboards an V(agent) device with its token, to run on the device.
      type: str
      returned: when created or regenerated, outside check mode
"""

from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible import devices
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.connection import (
    API_ARGS,
    CONNECTION_ARGS,
    run_api,
)


def _domain(module, api):
    """The domain's JSON; fails naming the existing domains when it does not exist."""
    name = module.params["domain"]
    domain = api.get_or_none("/domains/" + quote(name, safe=""))
    if domain is None:
        existing = sorted(d["name"] for d in api.request("GET", "/domains"))
        module.fail_json(
            msg="domain %s does not exist on the server (%s); check domain (the playbooks' trustpoint_domain), or "
            "create it with trustpoint.pki.domain (the playbooks do with trustpoint_create_domain: true)"
            % (name, "existing domains: " + ", ".join(existing) if existing else "it has no domains yet")
        )
    return domain


def _register(module, api):
    params = module.params
    wanted = [dict(entry, domain=params["domain"]) for entry in params["devices"]]
    names = [entry["name"] for entry in wanted]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        module.fail_json(msg="devices lists %s more than once; give each device once" % ", ".join(duplicates))
    domain = _domain(module, api)
    current = devices.find(api, names)
    # Every conflict is reported at once, before the first device is registered.
    problems = []
    for entry in wanted:
        try:
            if entry["name"] in current:
                devices.ensure(api, dict(entry, regenerate_secret=False), current[entry["name"]], True)
            else:
                devices.check_wanted(entry)
        except devices.Conflict as exc:
            problems.append(str(exc))
    if problems:
        module.fail_json(msg="; ".join(problems))
    results = {}
    for entry in wanted:
        results[entry["name"]] = devices.ensure(api, entry, current.get(entry["name"]), module.check_mode)
    changed = [name for name in names if results[name]["changed"]]
    diff = {"before": {}, "after": {}}
    for name in names:
        device_diff = results[name].pop("diff")
        diff["before"][name] = device_diff["before"]
        diff["after"][name] = device_diff["after"]
    return {"changed": bool(changed), "domain": domain, "devices": results, "diff": diff}


def main():
    argument_spec = dict(
        domain=dict(type="str", required=True),
        devices=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(
                name=dict(type="str", required=True),
                onboarding_method=dict(type="str", default="cmp_shared_secret", choices=list(devices.METHODS)),
                serial_number=dict(type="str"),
                regenerate_secret=dict(type="bool", default=False, no_log=False),
            ),
        ),
    )
    argument_spec.update(CONNECTION_ARGS)
    argument_spec.update(API_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    module.exit_json(**run_api(module, lambda api: _register(module, api)))


if __name__ == "__main__":
    main()
