#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: enroll
short_description: Onboard, renew or revoke a device's domain credential, with keys generated on the device
version_added: 0.1.0
description:
  - Runs on the device and keeps its domain credential (key, certificate, CA chain) in the files given.
  - With O(state=present) and no usable credential, it generates a new private key on the device, obtains a
    certificate for it from the domain's issuing CA over CMP (C(ir)), and writes the key (mode V(0600)), the
    certificate and the chain. The private key never leaves the device.
  - O(method=cmp_shared_secret) protects the C(ir) with the device's reference (O(device_id)) and one-time
    shared secret (O(shared_secret)) that M(trustpoint.pki.device) returned. O(method=cmp_idevid) signs it with
    the device's IDevID (O(idevid_certificate_path), O(idevid_key_path)), which a DevID registration on the
    server must admit.
  - The EST methods (RFC 7030, over HTTPS) send a CSR to C(simpleenroll) instead, authenticated with the device
    name and one-time password (O(method=est_password), O(username), O(password)) or with the IDevID as TLS
    client certificate (O(method=est_idevid)); the chain comes from C(/cacerts).
  - A valid credential inside the renewal window (O(renew_before_days)) is renewed with a new key and no secret,
    by a CMP key update request (C(kur)) signed with the current credential, or for EST methods by a
    C(simplereenroll) with the current credential as TLS client certificate.
  - With O(state=absent) the module revokes the credential (C(rr), signed with it) and deletes the files.
  - Does nothing while the device holds a valid credential of the domain outside the renewal window. Check mode
    needs neither O(device_id) nor O(shared_secret), and RV(action) says what a real run would do.
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
  state:
    description:
      - V(present) onboards or renews as needed; V(absent) revokes the credential and deletes its files.
    type: str
    choices: [present, absent]
    default: present
  method:
    description:
      - How the device proves who it is when it onboards.
      - V(cmp_shared_secret) - CMP C(ir) protected with O(shared_secret) (PBM, RFC 4210).
      - V(cmp_idevid) - CMP C(ir) signed with the device's IDevID (IEEE 802.1AR).
      - V(est_password) - EST C(simpleenroll) with HTTP Basic authentication.
      - V(est_idevid) - EST C(simpleenroll) with the IDevID as TLS client certificate.
    type: str
    choices: [cmp_shared_secret, cmp_idevid, est_password, est_idevid]
    default: cmp_shared_secret
  device_id:
    description:
      - The device's id on the server (RV(trustpoint.pki.device#module:device.id)), its CMP reference.
      - Required when the module onboards with O(method=cmp_shared_secret).
    type: int
  shared_secret:
    description:
      - The device's one-time shared secret. Required when the module onboards with O(method=cmp_shared_secret).
    type: str
  username:
    description:
      - The device's EST username, its name on the server. Required when the module onboards with
        O(method=est_password).
    type: str
  password:
    description:
      - The device's one-time EST password (RV(trustpoint.pki.device#module:password)). Required when the module
        onboards with O(method=est_password).
    type: str
  idevid_certificate_path:
    description:
      - The device's IDevID certificate (PEM), on the device. Required with O(method=cmp_idevid) and
        O(method=est_idevid).
    type: path
  idevid_key_path:
    description:
      - The IDevID's private key (PEM), on the device. Required with O(method=cmp_idevid) and
        O(method=est_idevid).
    type: path
  idevid_chain_path:
    description:
      - Intermediate CA certificates of the IDevID (PEM), sent along so that the server can verify it.
    type: path
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
      - Type of the keys generated on the device. Any of these is certified whatever the CA's key type.
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
        confirms the certificate after checking it, and the server counts it as issued only then.
    type: bool
    default: false
  ca_certificates:
    description:
      - PEM of the domain's CA certificates, for example RV(trustpoint.pki.domain#module:domain.ca_chain).
      - When given, an existing certificate counts as valid only if it chains to them (a credential from
        another CA, for example of a recreated domain, is replaced), and the server's signed responses must
        chain to them.
      - Required with O(method=cmp_idevid), where the device has no other way to trust the server's answer.
        Renewal and revocation fall back to the root at the end of O(chain_path).
    type: str
  renew_before_days:
    description:
      - Renew when the certificate expires within this many days.
    type: int
    default: 30
  revocation_reason:
    description:
      - The CRL reason given when O(state=absent) revokes the credential.
    type: str
    choices: [unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation]
    default: cessationOfOperation
  backend:
    description:
      - V(python) uses the Python libraries on the device, V(openssl) the C(openssl cmp) command line of
        OpenSSL 3, V(auto) the Python libraries when they are installed and C(openssl) otherwise.
      - With an C(https) O(server_url), the V(openssl) backend verifies the server only against O(ca_path).
      - For the EST methods the V(openssl) backend also needs C(curl).
    type: str
    choices: [auto, python, openssl]
    default: auto
notes:
  - New keys, certificates and chains are written to temporary files beside their destinations and moved into
    place only after the certificate was issued; a failed run leaves the existing files untouched.
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

- name: Onboard with the device's IDevID (a DevID registration on the server admits it)
  trustpoint.pki.enroll:
    server_url: https://trustpoint.example.com
    ca_path: /etc/trustpoint/tls-ca.pem
    domain: plant1
    method: cmp_idevid
    idevid_certificate_path: /etc/idevid/idevid.pem
    idevid_key_path: /etc/idevid/idevid.key
    ca_certificates: "{{ plant1.domain.ca_chain }}"
    key_path: /etc/trustpoint/domain_credential.key
    certificate_path: /etc/trustpoint/domain_credential.pem
    chain_path: /etc/trustpoint/domain_chain.pem

- name: Renew every credential that expires within 60 days (kur, new key, no secret)
  trustpoint.pki.enroll:
    server_url: https://trustpoint.example.com
    ca_path: /etc/trustpoint/tls-ca.pem
    domain: plant1
    renew_before_days: 60
    key_path: /etc/trustpoint/domain_credential.key
    certificate_path: /etc/trustpoint/domain_credential.pem
    chain_path: /etc/trustpoint/domain_chain.pem

- name: Decommission the device's credential (revoke it, delete the files)
  trustpoint.pki.enroll:
    server_url: https://trustpoint.example.com
    ca_path: /etc/trustpoint/tls-ca.pem
    domain: plant1
    state: absent
    key_path: /etc/trustpoint/domain_credential.key
    certificate_path: /etc/trustpoint/domain_credential.pem
    chain_path: /etc/trustpoint/domain_chain.pem

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
action:
  description:
    - What the run did, or in check mode would do. V(none), V(enroll) (onboarded), V(renew) (key update),
      V(revoke) (revoked and deleted) or V(remove) (deleted files that held no usable credential).
  returned: always
  type: str
  sample: enroll
certificate:
  description: >-
    The device's certificate after the run (serial_number, subject, issuer, not_before, not_after,
    fingerprint_sha256); before it in check mode and when it was revoked.
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
  description: What the module found on the device, which decided RV(action).
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
    REVOCATION_REASONS,
    CredentialFiles,
    select_backend,
)
from ansible_collections.trustpoint.pki.plugins.module_utils.errors import TrustpointError
from ansible_collections.trustpoint.pki.plugins.module_utils.keys import DEFAULT_KEY_TYPE, KEY_TYPES


def _diff_view(certificate):
    return {k: certificate[k] for k in ("serial_number", "subject", "issuer", "not_after")} if certificate else {}


def _action(module, files, inspection):
    """What the run must do, from the inspection of the files."""
    if module.params["state"] == "absent":
        if not files.present():
            return "none"
        return "revoke" if inspection.state in ("valid", "renew") else "remove"
    return {"valid": "none", "renew": "renew"}.get(inspection.state, "enroll")


def _check_inputs(module, action):
    params = module.params
    if action != "enroll":
        return
    if params["method"] == "cmp_idevid":
        missing = [n for n in ("idevid_certificate_path", "idevid_key_path", "ca_certificates") if not params[n]]
        hint = "the IDevID, and the domain's CA chain to trust the server's answer"
    elif params["method"] == "est_idevid":
        missing = [n for n in ("idevid_certificate_path", "idevid_key_path") if not params[n]]
        hint = "the IDevID is the TLS client certificate"
    elif params["method"] == "est_password":
        missing = [n for n in ("username", "password") if params[n] in (None, "")]
        hint = "register the device with trustpoint.pki.device (regenerate_secret=true issues a new password)"
    else:
        missing = [n for n in ("device_id", "shared_secret") if params[n] in (None, "")]
        hint = "register the device with trustpoint.pki.device (regenerate_secret=true issues a new secret)"
    if missing:
        module.fail_json(
            msg="the device needs a domain credential, but %s not set; %s"
            % (" and ".join(missing) + (" is" if len(missing) == 1 else " are"), hint)
        )


def main():
    argument_spec = dict(
        domain=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        method=dict(
            type="str",
            default="cmp_shared_secret",
            choices=["cmp_shared_secret", "cmp_idevid", "est_password", "est_idevid"],
        ),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        device_id=dict(type="int"),
        shared_secret=dict(type="str", no_log=True),
        idevid_certificate_path=dict(type="path"),
        idevid_key_path=dict(type="path", no_log=False),
        idevid_chain_path=dict(type="path"),
        key_path=dict(type="path", required=True, no_log=False),
        certificate_path=dict(type="path", required=True),
        chain_path=dict(type="path", required=True),
        key_type=dict(type="str", default=DEFAULT_KEY_TYPE, choices=list(KEY_TYPES)),
        subject=dict(type="str", default="/CN=Trustpoint Domain Credential"),
        implicit_confirm=dict(type="bool", default=False),
        ca_certificates=dict(type="str"),
        renew_before_days=dict(type="int", default=30),
        revocation_reason=dict(type="str", default="cessationOfOperation", choices=list(REVOCATION_REASONS)),
        backend=dict(type="str", default="auto", choices=["auto", "python", "openssl"]),
    )
    argument_spec.update(CONNECTION_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params

    backend = select_backend(module)
    files = CredentialFiles(module)
    inspection = backend.inspect(files, params["ca_certificates"], params["renew_before_days"])
    action = _action(module, files, inspection)
    result = {"changed": action != "none", "action": action, "backend": backend.name, "reason": inspection.reason}
    before = _diff_view(inspection.certificate)
    if inspection.certificate:
        result["certificate"] = inspection.certificate

    if action == "none":
        if params["state"] == "present":
            # A valid credential stays; only a key readable by others is tightened.
            result["changed"] = module.set_mode_if_different(files.key, KEY_MODE, False)
        result["diff"] = {"before": before, "after": before}
        module.exit_json(**result)
    if module.check_mode:
        result["diff"] = {"before": before, "after": {} if params["state"] == "absent" else {"state": action}}
        module.exit_json(**result)

    _check_inputs(module, action)
    try:
        if action == "revoke":
            backend.revoke(files)
        if action in ("revoke", "remove"):
            files.remove()
            after = {}
        else:
            files.check_directories()
            result["certificate"] = backend.renew(files) if action == "renew" else backend.enroll(files)
            after = _diff_view(result["certificate"])
    except TrustpointError as exc:
        module.fail_json(msg="%s failed: %s" % (action, exc), **result)
    finally:
        files.cleanup()
    result["diff"] = {"before": before, "after": after}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
