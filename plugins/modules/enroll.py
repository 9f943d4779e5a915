#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: enroll
short_description: Obtain a device's domain credential from Trustpoint, with the key generated on the device
version_added: 0.1.0
description:
  - Runs on the device. Generates a new private key on the device, obtains a certificate for it from the
    domain's issuing CA over CMP, and writes the key (mode V(0600)), the certificate and the CA chain.
    The private key never leaves the device.
  - With O(method=cmp_shared_secret) the CMP initial registration (C(ir)) is protected by a password-based MAC
    with the device's reference (O(device_id)) and one-time shared secret (O(shared_secret)) that
    M(trustpoint.pki.device) returned.
  - Does nothing while the device holds a valid credential of the domain that is not inside the renewal
    window. So that the module can tell without a secret, check mode needs neither O(device_id) nor
    O(shared_secret).
author:
  - Trustpoint contributors (@trustpoint-project)
extends_documentation_fragment:
  - trustpoint.pki._connection
  - trustpoint.pki._attributes
attributes:
  check_mode:
    support: full
    details:
      - Check mode inspects the credential files and contacts no server.
  diff_mode:
    support: full
  idempotent:
    support: full
requirements:
  - On the device, either the Python libraries C(cryptography >= 37), C(pyasn1 >= 0.6.1) and
    C(pyasn1-alt-modules >= 0.4.10) (backend V(python)), or the OpenSSL 3 command line C(openssl)
    (backend V(openssl)).
options:
  domain:
    description:
      - Domain the device is registered in.
    type: str
    required: true
  method:
    description:
      - How the device proves who it is.
      - V(cmp_shared_secret) - CMP C(ir) protected with O(shared_secret) (PBM, RFC 4210).
    type: str
    choices: [cmp_shared_secret]
    default: cmp_shared_secret
  device_id:
    description:
      - The device's id on the server (RV(trustpoint.pki.device#module:device.id)), its CMP reference.
      - Required when the module enrolls.
    type: int
  shared_secret:
    description:
      - The device's one-time shared secret. Required when the module enrolls.
    type: str
  key_path:
    description:
      - Where the private key is written, mode V(0600).
    type: path
    required: true
  certificate_path:
    description:
      - Where the certificate (PEM) is written, mode V(0644).
    type: path
    required: true
  chain_path:
    description:
      - Where the CA chain (PEM, issuing CA first, root last) is written, mode V(0644).
    type: path
    required: true
  key_type:
    description:
      - Type of the key generated on the device. Any of these is certified whatever the CA's key type.
    type: str
    choices: [ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096]
    default: ecdsa-p256
  subject:
    description:
      - Subject requested in the certificate template, in OpenSSL (V(/CN=a/O=b)) or RFC 4514 form.
      - Trustpoint issues the domain credential in the name of the registered device whatever is asked for.
    type: str
    default: /CN=Trustpoint Domain Credential
  implicit_confirm:
    description:
      - Ask the server to skip the certificate confirmation round trip (C(certConf)). Without it the device
        confirms the certificate after checking it, and the server counts the device as onboarded only then.
    type: bool
    default: false
  ca_certificates:
    description:
      - PEM of the domain's CA certificates, for example RV(trustpoint.pki.domain#module:domain.ca_chain).
      - When given, an existing certificate counts as valid only if it chains to one of them; a credential from
        another CA (for example a domain that was recreated) is then replaced.
      - Without it the chain file on the device is the reference.
    type: str
  renew_before_days:
    description:
      - Enroll again when the certificate expires within this many days.
    type: int
    default: 30
  backend:
    description:
      - V(python) uses the Python libraries on the device, V(openssl) the C(openssl cmp) command line of
        OpenSSL 3, V(auto) the Python libraries when they are installed and C(openssl) otherwise.
    type: str
    choices: [auto, python, openssl]
    default: auto
notes:
  - The key, certificate and chain are written to temporary files beside their destinations and moved into
    place only after the certificate was issued; a failed enrollment leaves the existing files untouched.
seealso:
  - module: trustpoint.pki.device
  - module: trustpoint.pki.domain
  - name: RFC 9483, Lightweight Certificate Management Protocol (CMP) Profile
    description: The CMP profile the server implements.
    link: https://www.rfc-editor.org/rfc/rfc9483
"""

EXAMPLES = r"""
- name: Enroll the domain credential (register the device first with trustpoint.pki.device)
  trustpoint.pki.enroll:
    server_url: http://trustpoint.example.com:8080
    domain: plant1
    device_id: "{{ tp_device.device.id }}"
    shared_secret: "{{ tp_device.shared_secret }}"
    key_path: /etc/trustpoint/domain_credential.key
    certificate_path: /etc/trustpoint/domain_credential.pem
    chain_path: /etc/trustpoint/domain_chain.pem

- name: Ask whether a device needs a credential (no secret needed in check mode)
  trustpoint.pki.enroll:
    server_url: http://trustpoint.example.com:8080
    domain: plant1
    key_path: /etc/trustpoint/domain_credential.key
    certificate_path: /etc/trustpoint/domain_credential.pem
    chain_path: /etc/trustpoint/domain_chain.pem
    ca_certificates: "{{ plant1.domain.ca_chain }}"
  check_mode: true
  register: tp_needed

- name: Enroll with the OpenSSL command line on a device without Python crypto libraries
  trustpoint.pki.enroll:
    server_url: http://trustpoint.example.com:8080
    domain: plant1
    device_id: 12
    shared_secret: "{{ vault_device_secret }}"
    key_path: /etc/trustpoint/domain_credential.key
    certificate_path: /etc/trustpoint/domain_credential.pem
    chain_path: /etc/trustpoint/domain_chain.pem
    backend: openssl
"""

RETURN = r"""
certificate:
  description: >-
    The device's certificate after the run (serial_number, subject, issuer, not_before, not_after,
    fingerprint_sha256); before it in check mode.
  returned: when a certificate exists or was issued
  type: dict
  sample:
    serial_number: 2d19baa35ebf13d0e4683cb27f3774cc13789ab3
    subject: CN=device1
    issuer: O=Trustpoint,CN=plant1 Issuing CA
    not_before: "2026-11-28T01:02:57Z"
    not_after: "2027-11-28T01:07:57Z"
    fingerprint_sha256: 1de2b885caa0c5225ad85cb9e1f8b1d7964d8a644ab8a94649797b56ad5b8f37
reason:
  description: Why the module enrolled, or why it did not need to.
  returned: always
  type: str
  sample: no complete credential (found 0 of 3 files)
backend:
  description: The backend that ran, V(python) or V(openssl).
  returned: always
  type: str
  sample: python
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.connection import CONNECTION_ARGS
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.enroll_backends import (
    KEY_MODE,
    CredentialFiles,
    select_backend,
)
from ansible_collections.trustpoint.pki.plugins.module_utils.errors import TrustpointError
from ansible_collections.trustpoint.pki.plugins.module_utils.keys import DEFAULT_KEY_TYPE, KEY_TYPES


def _diff_view(certificate):
    return {k: certificate[k] for k in ("serial_number", "subject", "issuer", "not_after")} if certificate else {}


def main():
    argument_spec = dict(
        domain=dict(type="str", required=True),
        method=dict(type="str", default="cmp_shared_secret", choices=["cmp_shared_secret"]),
        device_id=dict(type="int"),
        shared_secret=dict(type="str", no_log=True),
        key_path=dict(type="path", required=True, no_log=False),
        certificate_path=dict(type="path", required=True),
        chain_path=dict(type="path", required=True),
        key_type=dict(type="str", default=DEFAULT_KEY_TYPE, choices=list(KEY_TYPES)),
        subject=dict(type="str", default="/CN=Trustpoint Domain Credential"),
        implicit_confirm=dict(type="bool", default=False),
        ca_certificates=dict(type="str"),
        renew_before_days=dict(type="int", default=30),
        backend=dict(type="str", default="auto", choices=["auto", "python", "openssl"]),
    )
    argument_spec.update(CONNECTION_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params

    backend = select_backend(module)
    files = CredentialFiles(module)
    inspection = backend.inspect(files, params["ca_certificates"], params["renew_before_days"])
    result = {"changed": False, "backend": backend.name, "reason": inspection.reason}
    if inspection.certificate:
        result["certificate"] = inspection.certificate

    if not inspection.needs_enrollment:
        # A valid credential stays; only a key readable by others is tightened.
        result["changed"] = module.set_mode_if_different(files.key, KEY_MODE, False)
        result["diff"] = {
            "before": _diff_view(inspection.certificate),
            "after": _diff_view(inspection.certificate),
        }
        module.exit_json(**result)

    result["changed"] = True
    if module.check_mode:
        result["diff"] = {"before": _diff_view(inspection.certificate), "after": {"state": "new credential"}}
        module.exit_json(**result)

    missing = [name for name in ("device_id", "shared_secret") if params[name] in (None, "")]
    if missing:
        module.fail_json(
            msg="the device needs a domain credential (%s), but %s is not set; register the device "
            "with trustpoint.pki.device (regenerate_secret=true issues a new secret)"
            % (inspection.reason, " and ".join(missing)),
            **result,
        )
    files.check_directories()
    try:
        result["certificate"] = backend.enroll(files)
    except TrustpointError as exc:
        module.fail_json(msg="enrollment failed: %s" % exc, **result)
    finally:
        files.cleanup()
    result["diff"] = {
        "before": _diff_view(inspection.certificate),
        "after": _diff_view(result["certificate"]),
    }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
