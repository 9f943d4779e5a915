#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: certificate
short_description: Issue, renew and revoke a device's application certificate through the Trustpoint API
version_added: 0.2.0
description:
  - Keeps an application certificate (profile V(tls_client), V(tls_server) or V(opc_ua)) of a registered
    device in a file, issued by the device's domain through the server's REST API. This is how devices that
    run no enrollment protocol (O(trustpoint.pki.device#module:onboarding_method=none)) get certificates,
    and it works for every other device too.
  - With a certificate request (O(csr_path) or O(csr_content)) the key stays where the request was made,
    usually on the device; the module writes the certificate to O(certificate_path).
  - With O(key_type) the server generates the key and answers a PKCS#12 protected with O(pkcs12_passphrase),
    which the module writes to O(pkcs12_path) (mode V(0600)). The server keeps no copy of the key.
  - The server decides the names with its names policy, which allows the device's own name and what
    O(trustpoint.pki.device#module:allowed_names) of the device or its domain permit; it drops subject
    attributes other than the common name and gives a V(tls_server) certificate without a subject alternative
    name its host-name common name as DNS name. A name the device may not have fails the task, in check mode
    too.
  - Nothing changes while the file holds a certificate that the server counts as active for this device and
    profile, for the same key (with a request) and the names the server would issue now, outside the renewal
    window. Otherwise the module issues a new certificate; one that replaces an active certificate of the same
    profile renews it; the server revokes the old one (superseded) once the new one is used or the renewal
    grace period passes, or when the new one is revoked.
  - With O(state=absent) the module revokes the certificate in the file (if the server counts it as active)
    and deletes the file.
  - Runs where the API token is, usually the controller (C(delegate_to) V(localhost)); copy the files to the
    device with M(ansible.builtin.copy).
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
      - Check mode reads the files and the server's records and issues or revokes nothing.
  diff_mode:
    support: full
    details:
      - The diff shows the certificate's serial_number, subject, subject_alt_names and not_after. In check mode
        the certificate the server would issue is not known yet; its fields show as V((new certificate\)).
  idempotent:
    support: full
requirements:
  - C(cryptography >= 38) where the module runs.
options:
  device:
    description:
      - Name of the device on the server (M(trustpoint.pki.device)).
    type: str
    required: true
  profile:
    description:
      - Certificate profile. V(tls_server) needs a DNS or IP subject alternative name, V(opc_ua) a URI (the
        application URI).
      - V(domain_credential) issues the device's domain credential (LDevID) and counts the device as
        onboarded; not for devices with onboarding method V(none).
    type: str
    choices: [tls_client, tls_server, opc_ua, domain_credential]
    default: tls_client
  state:
    description:
      - V(present) issues or renews as needed; V(absent) revokes the certificate and deletes its file.
    type: str
    choices: [present, absent]
    default: present
  csr_path:
    description:
      - PEM certificate request (PKCS#10) made with the device's key, where the module runs. Its subject and
        subject alternative names are used unless O(subject) or O(subject_alt_names) are given.
      - Mutually exclusive with O(csr_content) and O(key_type).
    type: path
  csr_content:
    description:
      - The certificate request itself, instead of O(csr_path).
    type: str
  key_type:
    description:
      - Let the server generate a key of this type and return it in a PKCS#12 file (O(pkcs12_path)).
    type: str
    choices: [ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096]
  subject:
    description:
      - Subject in OpenSSL (V(/CN=a/O=b)) or RFC 4514 form. Default with a request, the request's subject;
        otherwise, and for an empty one, CN = the device's name.
    type: str
  subject_alt_names:
    description:
      - Subject alternative names, each V(DNS:name), V(IP:address), V(URI:uri) or V(email:address). Default with
        a request, the request's.
    type: list
    elements: str
  certificate_path:
    description:
      - Where the certificate (PEM) is written, mode V(0644). Required with a request.
    type: path
  chain_path:
    description:
      - Where the domain's CA chain (PEM, issuing CA first, then root) is written, mode V(0644).
    type: path
  pkcs12_path:
    description:
      - Where the PKCS#12 (key, certificate, CA chain) is written, mode V(0600). Required with O(key_type).
    type: path
  pkcs12_passphrase:
    description:
      - Password of the PKCS#12, at least 8 characters. Required with O(key_type).
    type: str
  renew_before_days:
    description:
      - Renew when the certificate expires within this many days.
    type: int
    default: 30
  revocation_reason:
    description:
      - The CRL reason given when O(state=absent) revokes the certificate.
    type: str
    choices: [unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn]
    default: cessationOfOperation
  force:
    description:
      - Issue a new certificate even when the file holds a valid one (which it then renews).
    type: bool
    default: false
notes:
  - Files are written beside their destination and renamed into place; a symlink at the destination is replaced,
    never followed.
seealso:
  - module: trustpoint.pki.device
  - module: trustpoint.pki.enroll
  - module: community.crypto.openssl_csr_pipe
"""

EXAMPLES = r"""
- name: Register a PLC that runs no enrollment protocol
  trustpoint.pki.device:
    name: plc-7
    domain: plant1
    onboarding_method: none
    allowed_names:
      - DNS:plc-7.plant1.example
      - URI:urn:plant1:plc-7
  delegate_to: localhost

- name: Make its key and request on the device
  community.crypto.openssl_csr_pipe:
    privatekey_path: /etc/plc/tls.key
    common_name: plc-7.plant1.example
    subject_alt_name: ["DNS:plc-7.plant1.example"]
  register: plc_csr

- name: Issue (and later renew) its TLS server certificate
  trustpoint.pki.certificate:
    server_url: https://trustpoint.example.com:8443
    ca_path: tp-data/tls-ca.pem
    device: plc-7
    profile: tls_server
    csr_content: "{{ plc_csr.csr }}"
    certificate_path: "certs/plc-7-tls.pem"
    chain_path: "certs/plant1-chain.pem"
  delegate_to: localhost

- name: An OPC UA certificate with a key the server generates, as a PKCS#12
  trustpoint.pki.certificate:
    server_url: https://trustpoint.example.com:8443
    ca_path: tp-data/tls-ca.pem
    device: plc-7
    profile: opc_ua
    key_type: rsa-2048
    subject_alt_names: ["URI:urn:plant1:plc-7", "DNS:plc-7.plant1.example"]
    pkcs12_path: "certs/plc-7-opcua.p12"
    pkcs12_passphrase: "{{ vault_plc7_p12 }}"
  delegate_to: localhost

- name: Revoke it when the PLC leaves service
  trustpoint.pki.certificate:
    server_url: https://trustpoint.example.com:8443
    ca_path: tp-data/tls-ca.pem
    device: plc-7
    profile: tls_server
    certificate_path: "certs/plc-7-tls.pem"
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
action:
  description: What the run did (or would do in check mode), V(none), V(issue), V(renew), V(revoke) or V(remove).
  returned: always
  type: str
  sample: issue
reason:
  description: Why, from what the module found.
  returned: always
  type: str
  sample: no certificate in certs/plc-7-tls.pem
certificate:
  description: The certificate the file holds after the run (serial_number, subject, subject_alt_names,
    not_before, not_after, fingerprint_sha256, status, profile), or V(null).
  returned: when O(state=present)
  type: dict
  sample:
    serial_number: 5a1c0e
    subject: CN=plc-7.plant1.example
    subject_alt_names: ["DNS:plc-7.plant1.example"]
    not_after: "2027-03-01T10:00:00Z"
"""

import base64
import os
import tempfile
from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.trustpoint.pki.plugins.module_utils import deps
from ansible_collections.trustpoint.pki.plugins.module_utils._ansible.connection import (
    API_ARGS,
    CONNECTION_ARGS,
    ApiError,
    TrustpointApi,
)
from ansible_collections.trustpoint.pki.plugins.module_utils.errors import InvalidInput, TransportError
from ansible_collections.trustpoint.pki.plugins.module_utils.keys import KEY_TYPES, load_pkcs12, same_public_key
from ansible_collections.trustpoint.pki.plugins.module_utils.x509 import (
    fingerprint,
    general_name_to_string,
    load_certificates,
    name_to_string,
    not_after,
    not_before,
    now_utc,
    serial_hex,
    subject_alt_names,
)

try:
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives.serialization import Encoding
except ImportError:  # reported through deps.missing()
    pass

PROFILES = ("tls_client", "tls_server", "opc_ua", "domain_credential")
REASONS = (
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
)
NEW_CERTIFICATE = "(new certificate)"
DIFF_FIELDS = ("serial_number", "subject", "subject_alt_names", "not_after")


class Current:
    """The certificate the files hold: cryptography certificate, or None and why."""

    def __init__(self, certificate=None, reason=None):
        self.certificate = certificate
        self.reason = reason


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _current(module):
    """The certificate of the file the module keeps: the PKCS#12 with key_type (or when it is the only file
    given), else certificate_path."""
    params = module.params
    is_pkcs12 = bool(params["key_type"] or not params["certificate_path"])
    path = params["pkcs12_path"] if is_pkcs12 else params["certificate_path"]
    if path is None or not os.path.exists(path):
        return Current(reason="no certificate in %s" % path)
    try:
        data = _read(path)
    except OSError as exc:
        module.fail_json(msg="cannot read %s: %s" % (path, exc))
    if is_pkcs12:
        if not params["pkcs12_passphrase"]:
            module.fail_json(msg="pkcs12_passphrase is needed to read %s" % path)
        try:
            return Current(load_pkcs12(data, params["pkcs12_passphrase"])[1])
        except InvalidInput as exc:
            # Replacing it would destroy a key the module cannot see: the operator decides.
            module.fail_json(
                msg="cannot open %s with pkcs12_passphrase: %s; fix the passphrase or remove the file" % (path, exc)
            )
    try:
        certificates = load_certificates(data)
    except InvalidInput as exc:
        return Current(reason="%s holds no readable certificate (%s)" % (path, exc))
    if not certificates:
        return Current(reason="%s holds no certificate" % path)
    return Current(certificates[0])


def _request(module):
    """The certificate request (cryptography CSR) of csr_path/csr_content, or None."""
    params = module.params
    data = params["csr_content"].encode() if params["csr_content"] is not None else None
    if params["csr_path"] is not None:
        try:
            data = _read(params["csr_path"])
        except OSError as exc:
            module.fail_json(msg="cannot read csr_path %s: %s" % (params["csr_path"], exc))
    if data is None:
        return None
    try:
        loader = cx509.load_pem_x509_csr if b"-----BEGIN" in data else cx509.load_der_x509_csr
        return loader(data)
    except ValueError as exc:
        module.fail_json(msg="the certificate request (csr_path or csr_content) is not a PKCS#10 request: %s" % exc)


def _names_payload(module, request):
    """What the server takes to decide the names (the same fields as an issuance)."""
    params = module.params
    payload = {"profile": params["profile"]}
    if params["subject"]:
        payload["subject"] = params["subject"]
    if params["subject_alt_names"] is not None:
        payload["subject_alt_names"] = params["subject_alt_names"]
    if request is not None:
        payload["csr"] = request.public_bytes(Encoding.PEM).decode()
    return payload


def _wanted_names(module, api, device, request):
    """(subject string, set of SAN strings) a certificate issued now would have: the server decides them (its
    names policy may change the request), so the comparison holds whatever it changes. Fails, before anything
    is issued, when the server refuses a name."""
    wanted = api.request("POST", "/devices/%d/names" % device["id"], _names_payload(module, request))
    return wanted["subject"], set(wanted["subject_alt_names"])


def _summary(certificate, record=None):
    view = {
        "serial_number": serial_hex(certificate),
        "subject": name_to_string(certificate.subject),
        "subject_alt_names": [general_name_to_string(n) for n in subject_alt_names(certificate)],
        "not_before": not_before(certificate).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": not_after(certificate).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if record is not None:
        view.update(status=record["status"], profile=record["profile"], fingerprint_sha256=record["fingerprint_sha256"])
    return view


def _diff_view(summary):
    return {k: summary[k] for k in DIFF_FIELDS} if summary else {}


def _write(module, path, data, mode):
    """Write data to path: a new file beside it (never following a link), then renamed over it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.rename(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        module.fail_json(msg="cannot write %s: %s" % (path, exc))


def _judge(module, api, device, current, request, wanted):
    """(action, reason, server record of the current certificate or None) for state=present."""
    params = module.params
    if current.certificate is None:
        return "issue", current.reason, None
    serial = serial_hex(current.certificate)
    record = api.get_or_none("/devices/%d/certificates/%s" % (device["id"], serial))
    if record is None or record["fingerprint_sha256"] != fingerprint(current.certificate):
        return "issue", "the server has no certificate %s for device %s" % (serial, device["name"]), None
    if record["status"] != "active":
        return "issue", "certificate %s is %s on the server" % (serial, record["status"]), None
    if record["profile"] != params["profile"]:
        return "issue", "certificate %s has profile %s, not %s" % (serial, record["profile"], params["profile"]), None
    if params["force"]:
        return "renew", "force is set", record
    if request is not None and not same_public_key(request.public_key(), current.certificate.public_key()):
        return "renew", "the certificate request has another key than certificate %s" % serial, record
    subject, sans = wanted
    if subject != name_to_string(current.certificate.subject):
        return (
            "renew",
            "certificate %s is for %s, not %s" % (serial, name_to_string(current.certificate.subject), subject),
            record,
        )
    have = {general_name_to_string(n) for n in subject_alt_names(current.certificate)}
    if sans != have:
        return "renew", "certificate %s names %s, not %s" % (serial, sorted(have), sorted(sans)), record
    days = (not_after(current.certificate) - now_utc()).days
    if days < params["renew_before_days"]:
        return (
            "renew",
            "certificate %s expires in %d days (renew_before_days %d)" % (serial, days, params["renew_before_days"]),
            record,
        )
    return "none", "certificate %s is active and expires in %d days" % (serial, days), record


def _ensure(module, api):
    params = module.params
    matches = api.request("GET", "/devices?name=" + quote(params["device"], safe=""))
    if not matches:
        module.fail_json(
            msg="device %s is not registered on the server; register it with trustpoint.pki.device" % params["device"]
        )
    device = matches[0]
    current = _current(module)
    before = _summary(current.certificate) if current.certificate is not None else None
    result = {"changed": False}

    if params["state"] == "absent":
        paths = [
            p
            for p in (params["certificate_path"], params["pkcs12_path"], params["chain_path"])
            if p and os.path.lexists(p)
        ]
        action, reason = "none", current.reason or "no file to remove"
        record = None
        if current.certificate is not None:
            record = api.get_or_none("/devices/%d/certificates/%s" % (device["id"], serial_hex(current.certificate)))
            active = (
                record is not None
                and record["status"] == "active"
                and record["fingerprint_sha256"] == fingerprint(current.certificate)
            )
            action = "revoke" if active else "remove"
            reason = "certificate %s is %s" % (
                serial_hex(current.certificate),
                "active" if active else "not active on the server",
            )
        elif paths:
            action = "remove"
        if action != "none":
            result["changed"] = True
            if not module.check_mode:
                if action == "revoke":
                    api.request(
                        "POST",
                        "/devices/%d/certificates/%s/revoke" % (device["id"], record["serial_number"]),
                        {"reason": params["revocation_reason"]},
                    )
                for path in paths:
                    os.unlink(path)
        result.update(action=action, reason=reason, diff={"before": _diff_view(before), "after": {}})
        return result

    request = _request(module)
    action, reason, record = _judge(module, api, device, current, request, _wanted_names(module, api, device, request))
    result.update(action=action, reason=reason)
    if action == "none":
        result["certificate"] = _summary(current.certificate, record)
        if params["chain_path"] and not os.path.exists(params["chain_path"]):
            domain = api.request("GET", "/domains/" + quote(device["domain"], safe=""))
            result["changed"] = True
            if not module.check_mode:
                _write(module, params["chain_path"], domain["ca_chain"].encode(), 0o644)
        result["diff"] = {"before": _diff_view(before), "after": _diff_view(before)}
        return result
    result["changed"] = True
    if module.check_mode:
        result["certificate"] = None
        result["diff"] = {"before": _diff_view(before), "after": dict.fromkeys(DIFF_FIELDS, NEW_CERTIFICATE)}
        return result
    payload = _names_payload(module, request)
    if action == "renew":
        payload["replaces"] = record["serial_number"]
    if params["key_type"]:
        payload.update(key_type=params["key_type"], pkcs12_password=params["pkcs12_passphrase"])
    issued = api.request("POST", "/devices/%d/certificates" % device["id"], payload)
    if params["key_type"]:
        _write(module, params["pkcs12_path"], base64.b64decode(issued["pkcs12"]), 0o600)
    if params["certificate_path"]:
        _write(module, params["certificate_path"], issued["certificate"]["certificate"].encode(), 0o644)
    if params["chain_path"]:
        _write(module, params["chain_path"], issued["chain"].encode(), 0o644)
    certificate = load_certificates(issued["certificate"]["certificate"])[0]
    result["certificate"] = _summary(certificate, issued["certificate"])
    result["diff"] = {"before": _diff_view(before), "after": _diff_view(result["certificate"])}
    return result


def main():
    argument_spec = dict(
        device=dict(type="str", required=True),
        profile=dict(type="str", default="tls_client", choices=list(PROFILES)),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        csr_path=dict(type="path"),
        csr_content=dict(type="str"),
        key_type=dict(type="str", choices=list(KEY_TYPES)),
        subject=dict(type="str"),
        subject_alt_names=dict(type="list", elements="str"),
        certificate_path=dict(type="path"),
        chain_path=dict(type="path"),
        pkcs12_path=dict(type="path"),
        pkcs12_passphrase=dict(type="str", no_log=True),
        renew_before_days=dict(type="int", default=30),
        revocation_reason=dict(type="str", default="cessationOfOperation", choices=list(REASONS)),
        force=dict(type="bool", default=False),
    )
    argument_spec.update(CONNECTION_ARGS)
    argument_spec.update(API_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("csr_path", "csr_content", "key_type")],
        required_by={"key_type": ("pkcs12_path", "pkcs12_passphrase")},
    )
    params = module.params
    missing, trace = deps.missing("cryptography")
    if missing:
        module.fail_json(msg=missing_required_lib(", ".join(missing)), exception=trace)
    if params["state"] == "present":
        if not (params["csr_path"] or params["csr_content"] is not None or params["key_type"]):
            module.fail_json(msg="state=present needs csr_path or csr_content (the device's request) or key_type")
        if not params["key_type"] and not params["certificate_path"]:
            module.fail_json(msg="with a certificate request, certificate_path says where the certificate goes")
        if params["key_type"] and len(params["pkcs12_passphrase"]) < 8:
            module.fail_json(msg="pkcs12_passphrase must be at least 8 characters")
    elif not (params["certificate_path"] or params["pkcs12_path"]):
        module.fail_json(
            msg="state=absent needs certificate_path or pkcs12_path: the file of the certificate to revoke"
        )
    for option in ("certificate_path", "chain_path", "pkcs12_path"):
        path = params[option]
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            module.fail_json(msg="%s: the directory of %s does not exist" % (option, path))
    try:
        module.exit_json(**_ensure(module, TrustpointApi(module)))
    except (ApiError, TransportError) as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
