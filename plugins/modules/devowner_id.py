#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: devowner_id
short_description: Manage a DevOwnerID credential of the Trustpoint enrollment service (AOKI)
version_added: 0.1.0
description:
  - Create, replace or delete an owner credential on a Trustpoint server through its REST API. An owner
    credential is a DevOwnerID certificate and its private key, with which the server proves to devices that
    onboard zero-touch (AOKI) that it is their owner.
  - A DevOwnerID names the devices it owns in SAN URIs - C(dev-owner:cert:<IDevID serialNumber>_<sha256 of the
    IDevID>), C(dev-owner:uri:<a SAN URI of the IDevID>), or for every device of a domain
    C(dev-owner:ca:<sha256 of the domain's issuing CA>). It is issued under the owner CA that devices trust
    (their owner truststore); the AOKI spec wants a critical BasicConstraints extension, and a CA DevOwnerID
    without path length (which allows a later transfer of ownership).
  - The server keeps the key encrypted at rest and never returns it. The module compares the certificate
    (and chain) by SHA-256 fingerprint; a different certificate replaces the credential's certificate and key.
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
      - The diff shows the certificate's subject, fingerprint and device references, never the key.
  idempotent:
    support: full
requirements:
  - The Python library C(cryptography >= 38) on the host that runs the module (usually the controller),
    when O(state=present).
options:
  name:
    description:
      - Name of the owner credential, 1 to 64 letters, digits, V(_), V(.) or V(-), starting with a letter or digit.
    type: str
    required: true
  certificate:
    description:
      - The DevOwnerID certificate, PEM. Required when O(state=present).
    type: str
  private_key:
    description:
      - The DevOwnerID's private key, unencrypted PEM (RSA of 2048 bits or more, ECDSA, or Ed25519). Required
        when O(state=present). Devices that follow upstream Trustpoint verify only RSA and ECDSA signatures.
      - Sent to the server only when the credential is created or its certificate changes.
    type: str
  chain:
    description:
      - The DevOwnerID's issuer chain (PEM, issuer first), sent after it in AOKI over CMP. Devices verify the
        DevOwnerID against their owner truststore; most need no chain.
    type: str
  state:
    description:
      - V(present) creates the credential, or replaces its certificate and key when the certificate or chain
        differs.
      - V(absent) deletes it. Devices that it names can no longer onboard with AOKI.
    type: str
    choices: [present, absent]
    default: present
notes:
  - Keep O(private_key) out of logs; the module marks it C(no_log).
seealso:
  - module: trustpoint.pki.truststore
  - module: trustpoint.pki.devid_registration
  - module: trustpoint.pki.device
"""

EXAMPLES = r"""
- name: Prove ownership of the plant's devices (AOKI)
  trustpoint.pki.devowner_id:
    server_url: https://trustpoint.example.com:8443
    api_token: "{{ trustpoint_api_token }}"
    name: plant1-owner
    certificate: "{{ lookup('ansible.builtin.file', 'files/owner_id.pem') }}"
    private_key: "{{ lookup('ansible.builtin.file', 'files/owner_id_pk.pem') }}"
  delegate_to: localhost
  run_once: true

- name: Remove an owner credential
  trustpoint.pki.devowner_id:
    name: old-owner
    state: absent
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
owner_credential:
  description: The owner credential as the server describes it (without its key).
  returned: when O(state=present)
  type: dict
  contains:
    name:
      description: Name of the credential.
      type: str
      sample: plant1-owner
    certificate:
      description: The DevOwnerID certificate, PEM.
      type: str
    chain:
      description: Its issuer chain, PEM (empty without one).
      type: str
    references:
      description: The dev-owner SAN URIs of the DevOwnerID, the devices (or domains) it owns.
      type: list
      elements: str
      sample: ["dev-owner:cert:AOKI-0001_5720a5...2c70", "dev-owner:uri:urn:uuid:f785caf8-c0a6-4d22-b927-1cb8c8f7a4e1"]
    key_type:
      description: Type of the DevOwnerID's key.
      type: str
      sample: ecdsa-p256
    signature_algorithm:
      description: The OID the server names in the C(AOKI-Signature-Algorithm) header.
      type: str
      sample: 1.2.840.10045.4.3.2
    summary:
      description: Serial number, subject, issuer, validity and SHA-256 fingerprint of the certificate.
      type: dict
    created_at:
      description: When the credential was created (UTC). Absent in check mode for a new credential.
      type: str
"""

from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.trustpoint.pki.plugins.module_utils import aoki, deps, x509
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.connection import (
    API_ARGS,
    CONNECTION_ARGS,
    run_api,
)
from ansible_collections.trustpoint.pki.plugins.module_utils.errors import InvalidInput


def _certificates(module, option, required):
    text = module.params[option]
    if text is None:
        return []
    try:
        certificates = x509.load_certificates(text)
    except InvalidInput as exc:
        module.fail_json(msg="%s: %s" % (option, exc))
    if required and len(certificates) != 1:
        module.fail_json(msg="%s must hold exactly one PEM certificate, not %d" % (option, len(certificates)))
    return certificates


def _settings(certificate_pem, chain_pem):
    """What the diff shows: the certificate's subject, fingerprint and references; the chain's fingerprints."""
    certificate = x509.load_certificate(certificate_pem)
    chain = x509.load_certificates(chain_pem) if chain_pem else []
    return {
        "subject": x509.name_to_string(certificate.subject),
        "fingerprint_sha256": x509.fingerprint(certificate),
        "references": sorted(aoki.owner_references(certificate)),
        "chain_fingerprints_sha256": [x509.fingerprint(c) for c in chain],
    }


def _ensure(module, api):
    params = module.params
    path = "/owner-credentials/" + quote(params["name"], safe="")
    current = api.get_or_none(path)
    before = _settings(current["certificate"], current["chain"]) if current else {}
    result = {"changed": False}

    if params["state"] == "absent":
        if current is not None:
            result["changed"] = True
            if not module.check_mode:
                api.request("DELETE", path)
        result["diff"] = {"before": before, "after": {}}
        return result

    requirements, trace = deps.missing("cryptography")
    if requirements:
        module.fail_json(msg=missing_required_lib(" and ".join(requirements)), exception=trace)
    (certificate,) = _certificates(module, "certificate", True)
    chain = _certificates(module, "chain", False)
    if "PRIVATE KEY-----" not in params["private_key"]:
        module.fail_json(msg="private_key must be the DevOwnerID's private key in PEM (unencrypted)")
    certificate_pem = x509.certificates_to_pem(certificate)
    chain_pem = x509.certificates_to_pem(chain) if chain else ""
    after = _settings(certificate_pem, chain_pem)
    payload = {"certificate": certificate_pem, "private_key": params["private_key"]}
    if chain_pem:
        payload["chain"] = chain_pem
    credential = current
    if current is None or before != after:
        result["changed"] = True
        if module.check_mode:
            credential = {
                "name": params["name"],
                "certificate": certificate_pem,
                "chain": chain_pem,
                "references": after["references"],
            }
        elif current is None:
            credential = api.request("POST", "/owner-credentials", dict(payload, name=params["name"]))
        else:
            credential = api.request("PUT", path, payload)
    result["owner_credential"] = credential
    result["diff"] = {"before": before, "after": after}
    return result


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        certificate=dict(type="str"),
        private_key=dict(type="str", no_log=True),
        chain=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    argument_spec.update(CONNECTION_ARGS)
    argument_spec.update(API_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "present", ["certificate", "private_key"])],
    )
    module.exit_json(**run_api(module, lambda api: _ensure(module, api)))


if __name__ == "__main__":
    main()
