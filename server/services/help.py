# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The commands of "Help - issue new credentials": what a device runs for its onboarding method.

The commands do what trustpoint.pki.enroll's openssl backend does (openssl genpkey, openssl cmp, openssl req
and curl for EST) and leave the same files: key.pem, cert.pem and chain.pem (issuing CA, then root). The
pages show them; tests/integration/test_help_commands.py runs every one of them against a real server.
"""

from __future__ import annotations

import json
import re
import shlex

from trustpoint_core.profiles import APPLICATION_PROFILES

from . import agent, names

# What the device has when it starts: the server's TLS trust anchor, and its IDevID for the IDevID methods.
TLS_CA = "tls-ca.pem"
IDEVID = ("idevid.pem", "idevid.key")


class Section:
    """One step for the person at the device: a title, what it does, and text to copy (shell or YAML)."""

    def __init__(self, key, title, intro, text, language="sh"):
        self.key = key
        self.title = title
        self.intro = intro
        self.text = text
        self.language = language


class Urls:
    """Where devices reach the server: https (EST, REST API) and cmp (CMP: plain HTTP when served, else https)."""

    def __init__(self, https, cmp=None):
        self.https = https.rstrip("/")
        self.cmp = (cmp or https).rstrip("/")

    def cmp_tls(self):
        """openssl cmp's TLS options for the CMP URL."""
        return ["-tls_used", "-tls_trusted", TLS_CA] if self.cmp.startswith("https://") else []


# A host the devices reach the server at, as an operator types it: a DNS name or an IP, with a port.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:[0-9]{1,5})?")


def urls_for(host, fallback_host, plain_port=None):
    """(Urls, host) for the server at host (checked; else fallback_host, the request's): HTTPS there, and CMP
    over plain HTTP at plain_port of the same name when the server has a plain-HTTP listener."""
    if not isinstance(host, str) or not _HOST.fullmatch(host.strip()):
        host = fallback_host
    host = host.strip()
    https = "https://%s" % host
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return Urls(https, "http://%s:%d" % (name, plain_port) if plain_port else https), host


def section_json(section):
    return {
        "key": section.key,
        "title": section.title,
        "intro": section.intro,
        "text": section.text,
        "language": section.language,
    }


def _q(value):
    return shlex.quote(str(value))


def _script(*commands):
    """Shell text of commands (each a string; continuation lines are indented by the caller)."""
    return "\n".join(command.strip("\n") for command in commands if command) + "\n"


def genkey(key_type, path):
    """openssl genpkey for key_type, as the enroll module's openssl backend runs it."""
    if key_type.startswith("ecdsa-"):
        options = "-algorithm EC -pkeyopt ec_paramgen_curve:P-%s -pkeyopt ec_param_enc:named_curve" % key_type[-3:]
    else:
        options = "-algorithm RSA -pkeyopt rsa_keygen_bits:%s" % key_type.split("-")[1]
    return "openssl genpkey %s -out %s" % (options, path)


def _cmp_tls(urls):
    return " -tls_used -tls_trusted %s" % TLS_CA if urls.cmp.startswith("https://") else ""


def _cacerts(urls, domain, out):
    return "curl -sS --fail --cacert %s %s \\\n  | base64 -d | openssl pkcs7 -inform DER -print_certs -out %s" % (
        TLS_CA,
        _q("%s/.well-known/est/%s/cacerts" % (urls.https, domain.name)),
        out,
    )


def _est_enroll(urls, label, authentication, subject, key, csr_extra="", out="cert.pem"):
    """A CSR for key, posted to simpleenroll (label: <domain> or <domain>/<profile>), the answer as PEM."""
    url = "%s/.well-known/est/%s/simpleenroll" % (urls.https, label)
    return (
        "openssl req -new -key %s -subj %s%s -outform DER -out csr.der" % (key, _q(subject), csr_extra),
        "base64 csr.der > csr.b64",
        "curl -sS --fail-with-body --cacert %s %s \\\n"
        "  -H 'Content-Type: application/pkcs10' --data-binary @csr.b64 -o answer.b64 %s"
        % (TLS_CA, authentication, _q(url)),
        "base64 -d answer.b64 | openssl pkcs7 -inform DER -print_certs -out %s" % out,
    )


def _verify(anchor, chain, cert="cert.pem"):
    return "openssl verify -CAfile %s -untrusted %s %s" % (anchor, chain, cert)


def onboarding_sections(device, urls, secret=None, settings=None):
    """The commands that get device its domain credential with its method; secret: its fresh one-time secret
    (shared secret, EST password or the secret of an agent token), a placeholder when None; settings: the
    server's (an agent token pins its TLS anchor)."""
    domain = device.domain
    subject = "/CN=%s" % device.name
    method = device.onboarding_method
    cmp_url = _q("%s/.well-known/cmp/p/%s/initialization" % (urls.cmp, domain.name))
    sections = []
    if method == "cmp_shared_secret":
        ir = (
            "openssl cmp -cmd ir -server %s%s \\\n"
            "  -ref %d -secret %s -subject %s \\\n"
            "  -newkey key.pem -certout cert.pem -extracertsout chain.pem -cacertsout root.pem -unprotected_errors"
            % (cmp_url, _cmp_tls(urls), device.id, _q("pass:" + (secret or "SHARED_SECRET")), _q(subject))
        )
        sections.append(
            Section(
                "openssl",
                "Onboard with OpenSSL (CMP, shared secret)",
                "On the device, with OpenSSL 3: a key that never leaves it, then the domain credential. "
                "The secret works once.",
                _script(genkey(domain.key_type, "key.pem"), ir, _verify("root.pem", "chain.pem")),
            )
        )
    elif method == "cmp_idevid":
        ir = (
            "openssl cmp -cmd ir -server %s%s \\\n"
            "  -cert %s -key %s -trusted chain.pem \\\n"
            "  -subject %s -newkey key.pem -certout cert.pem"
            % (cmp_url, _cmp_tls(urls), IDEVID[0], IDEVID[1], _q(subject))
        )
        sections.append(
            Section(
                "openssl",
                "Onboard with OpenSSL (CMP, IDevID)",
                "On the device, with its IDevID in %s and %s: the domain's CA certificates (to check the server's "
                "signed answer), a new key and the domain credential. An IDevID issued by an intermediate CA "
                "adds -extracerts with that CA's certificate." % IDEVID,
                _script(
                    _cacerts(urls, domain, "chain.pem"),
                    genkey(domain.key_type, "key.pem"),
                    ir,
                    _verify("chain.pem", "chain.pem"),
                ),
            )
        )
    elif method in ("est_password", "est_idevid"):
        if method == "est_password":
            authentication = "--user %s" % _q("%s:%s" % (device.name, secret or "PASSWORD"))
            title, who = "Onboard with OpenSSL and curl (EST, password)", "its name and one-time password"
        else:
            authentication = "--cert %s --key %s" % IDEVID
            title, who = "Onboard with OpenSSL and curl (EST, IDevID)", "its IDevID (%s, %s)" % IDEVID
        sections.append(
            Section(
                "openssl",
                title,
                "On the device: a key that never leaves it, a certificate request, and the domain credential "
                "over EST, authenticated with %s; then the domain's CA certificates." % who,
                _script(
                    genkey(domain.key_type, "key.pem"),
                    *_est_enroll(urls, domain.name, authentication, subject, "key.pem"),
                    _cacerts(urls, domain, "chain.pem"),
                    _verify("chain.pem", "chain.pem"),
                ),
            )
        )
    elif method == "agent":
        token = agent.token(device, secret, settings) if secret and settings is not None else "TOKEN"
        sections.append(
            Section(
                "agent",
                "Onboard with trustpoint-agent",
                "On the device, with trustpoint-agent installed (pip install --find-links %s/agent/ "
                "trustpoint-agent): one command. The token names the device and pins the server's TLS "
                "certificate; it works once." % urls.https,
                agent.command(urls.https, token),
            )
        )
    elif method == "aoki":
        sections.append(
            Section(
                "agent",
                "Zero-touch onboarding (AOKI)",
                "The device onboards by itself: with its IDevID and its owner's trust anchor in /etc/trustpoint-agent "
                "(factory provisioning) it finds this server over mDNS, checks its DevOwnerID and enrolls. To start "
                "it by hand, or name the server:",
                "trustpoint-agent aoki --url %s" % urls.https,
            )
        )
    if method not in ("none", "agent", "aoki"):  # the enroll module's methods
        sections.append(_ansible_enroll(device, urls, secret))
    return sections


def _ansible_enroll(device, urls, secret):
    method = device.onboarding_method
    task = {
        "server_url": urls.https if method.startswith("est_") else urls.cmp,
        "ca_path": "/etc/trustpoint/" + TLS_CA,
        "domain": device.domain.name,
        "method": method,
        "key_type": device.domain.key_type,
    }
    if method == "cmp_shared_secret":
        task.update(device_id=device.id, shared_secret=secret or "SHARED_SECRET")
    elif method == "est_password":
        task.update(username=device.name, password=secret or "PASSWORD")
    else:
        task.update(
            idevid_certificate_path="/etc/idevid/" + IDEVID[0],
            idevid_key_path="/etc/idevid/" + IDEVID[1],
            ca_certificates="{{ lookup('ansible.builtin.file', 'domain-chain.pem') }}",
        )
    task.update(
        key_path="/etc/trustpoint/domain_credential.key",
        certificate_path="/etc/trustpoint/domain_credential.pem",
        chain_path="/etc/trustpoint/domain_chain.pem",
    )
    body = "\n".join("    %s: %s" % (k, json.dumps(v)) for k, v in task.items())
    text = "- name: Onboard %s into %s\n  trustpoint.pki.enroll:\n%s\n" % (device.name, device.domain.name, body)
    if method in ("cmp_shared_secret", "est_password"):
        text += "  no_log: true\n"
    return Section(
        "ansible",
        "Onboard with Ansible",
        "A task for the device's host, as the playbook trustpoint.pki.onboard_devices runs it; the module makes "
        "the key on the device and writes it with mode 0600.",
        text,
        "yaml",
    )


def _example_sans(device, profile):
    """The subject alternative names the examples ask for: the profile's (tls_server a DNS name, opc_ua a URI),
    from the device's own names, which the names policy always allows (services/names.py)."""
    dns = ["DNS:" + names.own_dns_name(device.name)] if names.own_dns_name(device.name) else []
    if profile == "opc_ua":
        return ["URI:" + names.own_uri(device.name), *dns]
    return dns if profile == "tls_server" else []


def application_sections(device, urls, profile="tls_client"):
    """Commands for an application certificate of profile: with the domain credential (CMP cr, EST) on an
    onboarded device; from a CSR through the operator (REST API, Ansible) for every device."""
    if profile not in APPLICATION_PROFILES:
        profile = "tls_client"
    domain = device.domain
    key, cert = "%s.key" % profile, "%s.pem" % profile
    subject = "/CN=%s" % device.name
    sans = _example_sans(device, profile)
    csr_extra = " -addext %s" % _q("subjectAltName=" + ",".join(sans)) if sans else ""
    sections = []
    if device.onboarding_method != "none":
        cr = (
            "openssl cmp -cmd cr -server %s%s \\\n"
            "  -cert cert.pem -key key.pem -trusted chain.pem \\\n"
            "  -subject %s%s -newkey %s -certout %s"
            % (
                _q("%s/.well-known/cmp/p/%s~%s/certification" % (urls.cmp, domain.name, profile)),
                _cmp_tls(urls),
                _q(subject),
                " -sans %s" % _q(" ".join(s.split(":", 1)[1] for s in sans)) if sans else "",
                key,
                cert,
            )
        )
        sections.append(
            Section(
                "app-cmp",
                "Application certificate over CMP (signed with the domain credential)",
                "On the onboarded device, in the directory of key.pem, cert.pem and chain.pem.",
                _script(genkey(domain.key_type, key), cr, _verify("chain.pem", "chain.pem", cert)),
            )
        )
        label = "%s/%s" % (domain.name, profile)
        sections.append(
            Section(
                "app-est",
                "Application certificate over EST (the domain credential as TLS client certificate)",
                "On the onboarded device, in the directory of key.pem, cert.pem and chain.pem.",
                _script(
                    genkey(domain.key_type, key),
                    *_est_enroll(urls, label, "--cert cert.pem --key key.pem", subject, key, csr_extra, cert),
                    _verify("chain.pem", "chain.pem", cert),
                ),
            )
        )
    api = "%s/api/v1/devices/%d/certificates" % (urls.https, device.id)
    post = (
        "jq -n --rawfile csr %s.csr '{profile: \"%s\", csr: $csr}' \\\n"
        '  | curl -sS --fail-with-body --cacert %s -H "Authorization: Bearer $TOKEN" \\\n'
        "      -H 'Content-Type: application/json' --data @- %s \\\n"
        "  | jq -r .certificate.certificate > %s" % (profile, profile, TLS_CA, _q(api), cert)
    )
    sections.append(
        Section(
            "app-csr",
            "Application certificate from a certificate request (the operator issues it)",
            'On the device: a key and a certificate request. Then paste %s.csr into "Issue a certificate from '
            "a request\" on the device's page, or send it to the REST API with an API token (TOKEN) as below."
            % profile,
            _script(
                genkey(domain.key_type, key),
                "openssl req -new -key %s -subj %s%s -out %s.csr" % (key, _q(subject), csr_extra, profile),
                post,
                "openssl x509 -in %s -noout -subject -enddate" % cert,
            ),
        )
    )
    sections.append(_ansible_certificate(device, urls, profile, sans))
    return sections


def _ansible_certificate(device, urls, profile, sans):
    lines = [
        "- name: Issue a %s certificate for %s from its request" % (profile, device.name),
        "  trustpoint.pki.certificate:",
        "    server_url: %s" % json.dumps(urls.https),
        "    ca_path: %s" % json.dumps(TLS_CA),
        "    device: %s" % json.dumps(device.name),
        "    profile: %s" % profile,
        "    csr_path: %s" % json.dumps("%s-%s.csr" % (device.name, profile)),
        "    certificate_path: %s" % json.dumps("%s-%s.pem" % (device.name, profile)),
    ]
    if sans:
        lines.append("    subject_alt_names: %s" % json.dumps(sans))
    lines.append("  delegate_to: localhost")
    return Section(
        "app-ansible",
        "Application certificate with Ansible",
        "On the controller, with the API token in TRUSTPOINT_API_TOKEN: trustpoint.pki.certificate issues (and "
        "renews, and with state: absent revokes) the certificate for the device's request.",
        "\n".join(lines) + "\n",
        "yaml",
    )
