#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: truststore
short_description: Manage a truststore of the Trustpoint enrollment service
version_added: 0.1.0
description:
  - Create, update or delete a truststore on a Trustpoint server through its REST API.
  - A truststore is a named, ordered list of CA certificates with an intended usage. A truststore of usage
    V(idevid) holds the CAs of the manufacturers' IDevIDs that DevID registrations
    (M(trustpoint.pki.devid_registration)) admit devices with.
  - The module compares the certificates by their SHA-256 fingerprints, in order, so that the same
    certificates in another PEM layout (line endings, text before the blocks) change nothing. A different
    list or usage updates the truststore in place.
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
    details:
      - The diff lists the certificates by subject and SHA-256 fingerprint.
  idempotent:
    support: full
requirements:
  - The Python library C(cryptography >= 38) on the host that runs the module (usually the controller),
    when O(state=present).
options:
  name:
    description:
      - Name of the truststore, 1 to 64 letters, digits, V(_), V(.) or V(-), starting with a letter or digit.
    type: str
    required: true
  usage:
    description:
      - What the truststore's certificates are trusted for.
      - V(idevid) - CAs of device manufacturers' IDevIDs; the only usage a DevID registration accepts.
      - V(tls) - CAs of TLS server certificates.
      - V(devownerid) - CAs of device owner IDs (DevOwnerIDs).
      - Required when O(state=present).
    type: str
    choices: [idevid, tls, devownerid]
  certificates:
    description:
      - The CA certificates, as one PEM text with one or more C(CERTIFICATE) blocks, in the order the
        truststore keeps them.
      - Only the certificate blocks are used; anything else in the text is ignored and never sent.
      - Required when O(state=present).
    type: str
  state:
    description:
      - V(present) creates the truststore, or updates its usage and certificates when they differ.
      - V(absent) deletes it. The server refuses while a DevID registration uses the truststore; the
        module fails with the server's message, which names the registrations.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: trustpoint.pki.devid_registration
  - module: trustpoint.pki.device_info
"""

EXAMPLES = r"""
- name: Trust the IDevID CA of the device manufacturer
  trustpoint.pki.truststore:
    server_url: https://trustpoint.example.com:8443
    ca_path: tp-data/tls-ca.pem
    api_token: "{{ trustpoint_api_token }}"
    name: acme-idevid
    usage: idevid
    certificates: "{{ lookup('ansible.builtin.file', 'files/acme-idevid-ca.pem') }}"
  delegate_to: localhost
  run_once: true

- name: Remove a truststore that no DevID registration uses any more
  trustpoint.pki.truststore:
    name: old-vendor-idevid
    state: absent
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
truststore:
  description: The truststore as the server describes it.
  returned: when O(state=present)
  type: dict
  contains:
    name:
      description: Name of the truststore.
      type: str
      sample: acme-idevid
    usage:
      description: Intended usage of the truststore.
      type: str
      sample: idevid
    certificates:
      description: The certificates, normalised to PEM, in order.
      type: str
    subjects:
      description: Subjects of the certificates (RFC 4514), in order.
      type: list
      elements: str
      sample: [CN=ACME IDevID CA,O=ACME]
    fingerprints_sha256:
      description: SHA-256 fingerprints of the certificates (lowercase hex), in order.
      type: list
      elements: str
    created_at:
      description: When the truststore was created (UTC, ISO 8601). Absent in check mode for a new truststore.
      type: str
      sample: "2025-01-31T12:00:00Z"
"""

from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.trustpoint.pki.plugins.module_utils import deps, x509
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.connection import (
    API_ARGS,
    CONNECTION_ARGS,
    run_api,
)
from ansible_collections.trustpoint.pki.plugins.module_utils.errors import InvalidInput


def _listing(subjects, fingerprints):
    """What the diff shows of a list of certificates: subject and fingerprint, never the PEM."""
    return [{"subject": s, "fingerprint_sha256": f} for s, f in zip(subjects, fingerprints)]


def _settings(truststore):
    """What the diff shows of a truststore."""
    return {
        "name": truststore["name"],
        "usage": truststore["usage"],
        "certificates": _listing(truststore["subjects"], truststore["fingerprints_sha256"]),
    }


def _desired_certificates(module):
    """(normalised PEM, subjects, fingerprints) of the certificates option; fails when it has none."""
    requirements, trace = deps.missing("cryptography")
    if requirements:
        module.fail_json(msg=missing_required_lib(" and ".join(requirements)), exception=trace)
    try:
        certificates = x509.load_certificates(module.params["certificates"])
    except InvalidInput as exc:
        module.fail_json(msg="certificates: %s" % exc)
    if not certificates:
        module.fail_json(msg="certificates must hold at least one PEM certificate (-----BEGIN CERTIFICATE-----)")
    return (
        x509.certificates_to_pem(certificates),
        [x509.name_to_string(c.subject) for c in certificates],
        [x509.fingerprint(c) for c in certificates],
    )


def _ensure(module, api):
    params = module.params
    name = params["name"]
    path = "/truststores/" + quote(name, safe="")
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

    pem, subjects, fingerprints = _desired_certificates(module)
    wanted = {"name": name, "usage": params["usage"], "subjects": subjects, "fingerprints_sha256": fingerprints}
    if current is None:
        result["changed"] = True
        request = {"name": name, "usage": params["usage"], "certificates": pem}
        truststore = (
            dict(wanted, certificates=pem) if module.check_mode else api.request("POST", "/truststores", request)
        )
    else:
        patch = {}
        if current["usage"] != params["usage"]:
            patch["usage"] = params["usage"]
        if current["fingerprints_sha256"] != fingerprints:
            patch["certificates"] = pem
        truststore = current
        if patch:
            result["changed"] = True
            if module.check_mode:
                truststore = dict(current, **wanted)
                truststore["certificates"] = pem
            else:
                truststore = api.request("PATCH", path, patch)
    result["truststore"] = truststore
    result["diff"] = {"before": before, "after": _settings(truststore)}
    return result


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        usage=dict(type="str", choices=["idevid", "tls", "devownerid"]),
        certificates=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    argument_spec.update(CONNECTION_ARGS)
    argument_spec.update(API_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "present", ["usage", "certificates"])],
    )
    module.exit_json(**run_api(module, lambda api: _ensure(module, api)))


if __name__ == "__main__":
    main()
