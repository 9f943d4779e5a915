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
    Files that hold no certificate for the key, or an expired one, are deleted without revocation
    (RV(action=remove)). A certificate for the key that does not verify against O(ca_certificates) (or the
    chain file), or a key and certificate without the chain file, may still be active on the server; the
    module then fails and leaves the files alone.
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
    details:
      - The diff shows the certificate's serial_number, subject, issuer and not_after, and the key file's
        mode (key_mode). In check mode the certificate the server would issue is not known yet; its fields
        show as V((new certificate\)).
  idempotent:
    support: full
requirements:
  - On the device, either the Python libraries C(cryptography >= 38), C(pyasn1 >= 0.6.1) and
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
  ca_content:
    description:
      - PEM of the server's TLS trust anchor (for example C(tls-ca.pem) of C(trustpoint-server init)). The module
        writes it to O(ca_path) (mode V(0644)) when the file differs, before it contacts the server, so that a
        playbook needs no separate copy task. Requires O(ca_path).
    type: str
  create_directories:
    description:
      - Create the missing directories of O(key_path), O(certificate_path), O(chain_path) and O(ca_path) (mode
        V(0755)) instead of failing.
    type: bool
    default: false
  expected_fingerprint:
    description:
      - SHA-256 fingerprint (hex) of the certificate the server holds as the device's active domain credential,
        for example C(credential.fingerprint_sha256) of M(trustpoint.pki.device_info).
      - When set, a credential in the files with another fingerprint counts as one the server no longer knows,
        and the device must onboard again, as with O(force).
    type: str
  onboard:
    description:
      - Whether this run may onboard. With V(false) the module keeps or renews a credential and, when the device
        must onboard, stops before contacting the server and returns RV(needs_onboarding=true), so that a playbook
        can register the device or issue a one-time secret first and call the module again.
      - Inputs onboarding needs besides the secret (IDevID files, O(ca_path) for the V(openssl) backend) are
        checked all the same.
    type: bool
    default: true
  retries:
    description:
      - How many more times a request is sent when its answer was lost (the connection closed or timed out, or
        the server failed or asked for it with C(systemUnavail)), after 1, 2, 4 and 8 seconds.
      - Every exchange is safe to send again. The server answers a repeated C(certConf) again, lets a one-time
        secret or password onboard again while the credential it obtained was never used (for
        C(--secret-retry-minutes), 30 minutes by default), and lets a renewed credential renew again until its
        successor is used (C(--renewal-grace-hours), 7 days by default). A run that gave up can be repeated within
        those windows.
    type: int
    default: 3
    version_added: 0.2.0
  force:
    description:
      - With O(state=present), onboard again (RV(action=enroll), with the secret or the IDevID) even when the
        files hold a valid credential, for example when the server no longer knows it (the device was deleted
        and registered again) or revoked it. The playbook C(trustpoint.pki.onboard_devices) sets it when the
        server's view of the device's credential differs from the device's.
      - Not idempotent by itself; set it only when the server's view requires it.
    type: bool
    default: false
notes:
  - The module checks that it can write the directories of the credential files, and creates the temporary
    files beside them, before it contacts the server, so that a run that cannot write them does not spend
    the one-time secret.
  - It refuses credential files that are symbolic links, and directories (or directories above them) that a user
    other than root or the user the task runs as owns or may write to (above the credential directory, the
    sticky bit, as on C(/tmp), makes that safe). New files are created without following links, written,
    chmod-ed and chown-ed through their own file descriptors, and never opened again by name; the openssl
    backend works on copies in Ansible's private temporary directory.
  - New keys, certificates and chains are written to those temporary files and moved into place together
    after the certificate was issued. If a move fails, the files moved before it are restored from backups
    (hard links beside them), so a failed run leaves the existing credential as it was and reports no change.
  - A failed run reports C(changed) only for what did change, for example a credential that was
    revoked on the server but whose files could not be deleted.
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
    server_url: https://trustpoint.example.com:8443
    ca_path: /etc/trustpoint/tls-ca.pem
    ca_content: "{{ lookup('ansible.builtin.file', 'tp-data/tls-ca.pem') }}"
    create_directories: true
    domain: plant1
    device_id: "{{ tp_device.device.id }}"
    shared_secret: "{{ tp_device.shared_secret }}"
    key_path: /etc/trustpoint/domain_credential.key
    certificate_path: /etc/trustpoint/domain_credential.pem
    chain_path: /etc/trustpoint/domain_chain.pem

- name: Ask whether a device needs a credential (no secret needed in check mode)
  trustpoint.pki.enroll:
    server_url: https://trustpoint.example.com:8443
    ca_path: /etc/trustpoint/tls-ca.pem
    domain: plant1
    key_path: /etc/trustpoint/domain_credential.key
    certificate_path: /etc/trustpoint/domain_credential.pem
    chain_path: /etc/trustpoint/domain_chain.pem
    ca_certificates: "{{ plant1.domain.ca_chain }}"
  check_mode: true
  register: tp_needed

- name: Onboard with the device's IDevID (a DevID registration on the server admits it)
  trustpoint.pki.enroll:
    server_url: https://trustpoint.example.com:8443
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
    server_url: https://trustpoint.example.com:8443
    ca_path: /etc/trustpoint/tls-ca.pem
    domain: plant1
    renew_before_days: 60
    key_path: /etc/trustpoint/domain_credential.key
    certificate_path: /etc/trustpoint/domain_credential.pem
    chain_path: /etc/trustpoint/domain_chain.pem

- name: Decommission the device's credential (revoke it, delete the files)
  trustpoint.pki.enroll:
    server_url: https://trustpoint.example.com:8443
    ca_path: /etc/trustpoint/tls-ca.pem
    domain: plant1
    state: absent
    key_path: /etc/trustpoint/domain_credential.key
    certificate_path: /etc/trustpoint/domain_credential.pem
    chain_path: /etc/trustpoint/domain_chain.pem

- name: Keep or renew the credential the server counts; onboard later if needed (two-step playbooks)
  trustpoint.pki.enroll:
    server_url: https://trustpoint.example.com:8443
    ca_path: /etc/trustpoint/tls-ca.pem
    domain: plant1
    expected_fingerprint: "{{ tp_known.devices[0].credential.fingerprint_sha256 }}"
    onboard: false
    key_path: /etc/trustpoint/domain_credential.key
    certificate_path: /etc/trustpoint/domain_credential.pem
    chain_path: /etc/trustpoint/domain_chain.pem
  register: tp_probe

- name: Enroll with the OpenSSL command line on a device without Python crypto libraries
  trustpoint.pki.enroll:
    server_url: https://trustpoint.example.com:8443
    ca_path: /etc/trustpoint/tls-ca.pem
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
      V(revoke) (revoked and deleted) or V(remove) (deleted files that held no certificate for the key, or an
      expired one).
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
needs_onboarding:
  description:
    - With O(state=present), whether the device must onboard (a new credential authenticated by its secret or
      IDevID). With O(onboard=false) the module left that to the next call; otherwise RV(action=enroll).
  returned: always
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.connection import CONNECTION_ARGS
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.enroll_backends import (
    KEY_MODE,
    REVOCATION_REASONS,
    CredentialFiles,
    FileError,
    place_support_files,
    select_backend,
)
from ansible_collections.trustpoint.pki.plugins.module_utils.errors import TrustpointError
from ansible_collections.trustpoint.pki.plugins.module_utils.keys import DEFAULT_KEY_TYPE, KEY_TYPES

DIFF_FIELDS = ("serial_number", "subject", "issuer", "not_after")
# What the diff of a check run shows for a certificate the server has yet to issue.
NEW_CERTIFICATE = "(new certificate)"


def _diff_view(certificate, key_mode=None):
    view = {k: certificate[k] for k in DIFF_FIELDS} if certificate else {}
    if key_mode:
        view["key_mode"] = key_mode
    return view


def _action(module, files, inspection):
    """What the run must do, from the inspection of the files; fails where no action is safe."""
    state = inspection.state
    if state == "unreadable":
        module.fail_json(
            msg="%s; run the task as a user that may read them (become: true) or fix their permissions"
            % inspection.reason
        )
    if module.params["state"] == "absent":
        if not files.present():
            return "none"
        if state == "absent" and {files.key, files.certificate} <= set(files.present()):
            # Only the chain is missing: the certificate may be active on the server, and the rr that
            # revokes it needs the chain.
            module.fail_json(
                msg="%s is missing, so the certificate in %s cannot be revoked; it may still be active on the "
                "server, so it is neither revoked nor deleted. Write the domain's CA chain (trustpoint.pki.domain "
                "returns it as domain.ca_chain) to %s and run again, or revoke the certificate on the server and "
                "delete the files" % (files.chain, files.certificate, files.chain),
                action="none",
                reason=inspection.reason,
                changed=False,
            )
        if state == "untrusted":
            # A certificate for the key may still be active on the server: deleting it unrevoked would
            # lose the only credential that can revoke it.
            module.fail_json(
                msg="%s holds a certificate for the key in %s that does not verify against %s (%s); it may "
                "still be active on the server, so it is neither revoked nor deleted. Give the domain's CA "
                "chain in ca_certificates to revoke it, or revoke it on the server and delete the files"
                % (
                    files.certificate,
                    files.key,
                    "ca_certificates" if module.params["ca_certificates"] else files.chain,
                    inspection.reason,
                ),
                action="none",
                reason=inspection.reason,
                changed=False,
            )
        return "revoke" if state in ("valid", "renew") else "remove"
    if module.params["force"]:
        return "enroll"
    if state in ("valid", "renew") and _unknown_to_server(module, inspection):
        return "enroll"
    return {"valid": "none", "renew": "renew"}.get(state, "enroll")


def _fingerprint(text):
    return text.replace(":", "").strip().lower()


def _unknown_to_server(module, inspection):
    """True when expected_fingerprint names another certificate than the one in the files."""
    expected = module.params["expected_fingerprint"]
    return bool(expected) and _fingerprint(expected) != inspection.certificate["fingerprint_sha256"]


def _check_readable(module, name):
    path = module.params[name]
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        module.fail_json(msg="cannot read %s %s: %s" % (name, path, exc.strerror or exc))


def _check_transport(module, backend, action):
    """Fail on what the backend needs to reach the server, before anything changes on either side."""
    params = module.params
    if action not in ("enroll", "renew", "revoke") or backend.name != "openssl":
        return
    if params["server_url"].startswith("https://") and params["validate_certs"] and not params["ca_path"]:
        module.fail_json(
            msg="the openssl backend verifies the server's TLS certificate only with ca_path (openssl cmp and curl "
            "do not use the system trust store here): set ca_path (the playbooks' trustpoint_ca_path) to the "
            "server's TLS trust anchor, tls-ca.pem in its data directory"
        )
    if params["method"].startswith("est_") and module.get_bin_path("curl") is None:
        module.fail_json(msg="the openssl backend needs curl for EST (method %s); install it" % params["method"])


def _check_inputs(module, action, secrets=True):
    """Fail unless the inputs the action needs are there. secrets=False (a run that will not onboard yet) checks
    only what the device itself must provide: the IDevID files."""
    params = module.params
    if action != "enroll":
        return
    if params["method"] in ("cmp_idevid", "est_idevid"):
        missing = [n for n in ("idevid_certificate_path", "idevid_key_path") if not params[n]]
        if params["method"] == "cmp_idevid" and secrets and not params["ca_certificates"]:
            missing.append("ca_certificates")
        hint = (
            "the IDevID, and the domain's CA chain to trust the server's answer"
            if params["method"] == "cmp_idevid"
            else "the IDevID is the TLS client certificate"
        )
    elif not secrets:
        missing = []
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
    if params["method"] in ("cmp_idevid", "est_idevid"):
        for name in ("idevid_certificate_path", "idevid_key_path", "idevid_chain_path"):
            if params[name]:
                _check_readable(module, name)


def _check_parameters(module, backend):
    """Fail on ca_certificates, ca_content or a subject that cannot be used, before looking at the files."""
    params = module.params
    if params["ca_content"] is not None and not params["ca_path"]:
        module.fail_json(msg="ca_content needs ca_path, the file on the device to write it to")
    hints = {
        "ca_content": "the server's TLS trust anchor in PEM (tls-ca.pem in its data directory; the playbooks' "
        "trustpoint_ca_path)",
        "ca_certificates": "the domain's CA certificates in PEM (trustpoint.pki.domain returns them as "
        "domain.ca_chain)",
    }
    for name, hint in hints.items():
        if params[name] is not None:
            try:
                backend.check_anchors(params[name])
            except TrustpointError as exc:
                module.fail_json(msg="%s cannot be used: %s; give %s" % (name, exc, hint))
    subject = params["subject"]
    try:
        if "=" not in subject:
            raise TrustpointError("it has no attribute=value")
        backend.check_subject(subject)
    except TrustpointError as exc:
        detail = str(exc).split(": ", 1)[1] if str(exc).startswith("cannot parse subject") else str(exc)
        module.fail_json(
            msg="subject %r is not a distinguished name the %s backend can use (%s); write it as "
            "/CN=name/O=organization%s"
            % (
                subject,
                backend.name,
                detail.strip(" :") or "not in RFC 4514 form",
                " or CN=name,O=organization (RFC 4514)" if backend.name == "python" else "",
            )
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
        ca_content=dict(type="str"),
        create_directories=dict(type="bool", default=False),
        expected_fingerprint=dict(type="str"),
        onboard=dict(type="bool", default=True),
        renew_before_days=dict(type="int", default=30),
        revocation_reason=dict(type="str", default="cessationOfOperation", choices=list(REVOCATION_REASONS)),
        backend=dict(type="str", default="auto", choices=["auto", "python", "openssl"]),
        force=dict(type="bool", default=False),
        retries=dict(type="int", default=3),
    )
    argument_spec.update(CONNECTION_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params

    if params["retries"] < 0:
        module.fail_json(msg="retries must be 0 or more, not %d" % params["retries"])
    backend = select_backend(module)
    _check_parameters(module, backend)
    files = CredentialFiles(module)
    # Before any file is read: links and directories another user controls are refused.
    files.check_safe()
    inspection = backend.inspect(files, params["ca_certificates"], params["renew_before_days"])
    action = _action(module, files, inspection)
    needs_onboarding = params["state"] == "present" and action == "enroll"
    postponed = needs_onboarding and not params["onboard"]
    if postponed:
        action = "none"
    result = {
        "changed": action != "none",
        "action": action,
        "backend": backend.name,
        "reason": inspection.reason,
        "needs_onboarding": needs_onboarding,
    }
    if needs_onboarding and inspection.state in ("valid", "renew"):
        result["reason"] = "%s: %s" % (
            "force" if params["force"] else "the server holds another certificate as the device's credential",
            inspection.reason,
        )
    key_mode = files.key_mode()
    before = _diff_view(inspection.certificate, key_mode)
    if inspection.certificate:
        result["certificate"] = inspection.certificate

    # Everything this run needs is checked before anything changes, on the device or on the server.
    _check_transport(module, backend, "enroll" if needs_onboarding else action)
    if not module.check_mode:
        _check_inputs(module, "enroll" if needs_onboarding else action, secrets=not postponed)
    # The server's trust anchor and the directories are in place before the server is contacted.
    placed = place_support_files(module, files)
    after_ca = None
    if placed is not None:
        result["changed"] = True
        before["ca_path"], after_ca = placed[0], placed[1]

    def finish(after):
        if after_ca is not None:
            after["ca_path"] = after_ca
        result["diff"] = {"before": before, "after": after}
        module.exit_json(**result)

    if action == "none":
        after = dict(before)
        after.pop("ca_path", None)
        if params["state"] == "present" and inspection.certificate:
            # A valid credential stays; only a key readable by others is tightened.
            try:
                result["changed"] = module.set_mode_if_different(files.key, KEY_MODE, False) or result["changed"]
            except OSError as exc:
                module.fail_json(msg="cannot change the mode of %s: %s" % (files.key, exc), **result)
            after = _diff_view(inspection.certificate, "%04o" % KEY_MODE)
        finish(after)
    if module.check_mode:
        after = {} if params["state"] == "absent" else dict.fromkeys(DIFF_FIELDS, NEW_CERTIFICATE)
        if after:
            after["key_mode"] = "%04o" % KEY_MODE
        finish(after)

    # Before the server is contacted: a run that cannot write the files must not spend a secret or revoke.
    if action in ("revoke", "remove"):
        files.check_directories(files.present())
    else:
        files.stage()
    revoked = False
    try:
        if action == "revoke":
            backend.revoke(files)
            revoked = True
        if action in ("revoke", "remove"):
            files.remove()
            after = {}
        else:
            result["certificate"] = backend.renew(files) if action == "renew" else backend.enroll(files)
            after = _diff_view(result["certificate"], "%04o" % KEY_MODE)
    except (TrustpointError, OSError) as exc:
        # Claim a change only for what did change: a file, or the revocation on the server.
        result["changed"] = revoked or (isinstance(exc, FileError) and exc.changed) or bool(placed)
        prefix = "the credential was revoked, but its files were not deleted" if revoked else "%s failed" % action
        suffix = ""
        if isinstance(exc, FileError) and action in ("enroll", "renew"):
            suffix = (
                "; the server issued the new certificate, but the device keeps its previous files: fix the problem "
                "and run the task again (the server lets the %s obtain a certificate again while the new one is "
                "unused, within its retry window; after it, onboard the device again with "
                "trustpoint.pki.device regenerate_secret=true)"
                % ("current credential" if action == "renew" else "one-time secret or password")
            )
        module.fail_json(msg="%s: %s%s" % (prefix, exc, suffix), **result)
    finally:
        files.cleanup()
    finish(after)


if __name__ == "__main__":
    main()
