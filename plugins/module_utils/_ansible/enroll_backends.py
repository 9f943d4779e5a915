# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to the collection: the device side of trustpoint.pki.enroll.

Two backends do the same job: look at the credential files on the device and, when needed, generate a
key on the device and enroll it over CMP. `python` uses the core (cryptography, pyasn1); `openssl` uses
the OpenSSL 3 command line, for devices without those libraries.
"""

from __future__ import annotations

import datetime
import os
import re
import tempfile

from .. import deps
from ..errors import TrustpointError
from .connection import endpoint, http_transport

# The key file is private to its owner; certificates are public.
KEY_MODE = 0o600
CERT_MODE = 0o644
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.S)


def cmp_url(module):
    """The RFC 9483 initialization URL of the module's domain."""
    return endpoint(module, "/.well-known/cmp/p/%s/initialization" % module.params["domain"])


class Inspection:
    """What the device holds now. state: absent | invalid | renew | valid."""

    def __init__(self, state, reason, certificate=None):
        self.state = state
        self.reason = reason
        self.certificate = certificate

    @property
    def needs_enrollment(self):
        return self.state != "valid"


class CredentialFiles:
    """The key, certificate and chain paths, and their atomic replacement."""

    def __init__(self, module):
        self.module = module
        self.key = module.params["key_path"]
        self.certificate = module.params["certificate_path"]
        self.chain = module.params["chain_path"]
        self._temporary = []

    def present(self):
        return [p for p in (self.key, self.certificate, self.chain) if os.path.exists(p)]

    def check_directories(self):
        for path in (self.key, self.certificate, self.chain):
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                self.module.fail_json(msg="directory %s of %s does not exist; create it first" % (directory, path))

    def temporary(self, beside):
        """A new empty file (mode 0600) in the directory of beside, removed by cleanup() unless installed."""
        fd, path = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(beside)), prefix=".trustpoint-")
        os.close(fd)
        self._temporary.append(path)
        return path

    def install(self, key_tmp, certificate_tmp, chain_tmp):
        """Move the new files into place: key first, so that a certificate never names a missing key."""
        for tmp, dest, mode in (
            (key_tmp, self.key, KEY_MODE),
            (certificate_tmp, self.certificate, CERT_MODE),
            (chain_tmp, self.chain, CERT_MODE),
        ):
            os.chmod(tmp, mode)
            self.module.atomic_move(tmp, dest)
            # atomic_move keeps an existing file's mode; the key must end up 0600 whatever was there.
            os.chmod(dest, mode)
            self._temporary.remove(tmp)

    def cleanup(self):
        for path in self._temporary:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._temporary = []


def _days_left(not_after):
    return (not_after - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400


class PythonBackend:
    name = "python"

    def __init__(self, module):
        self.module = module
        from .. import cmp_client, keys, x509

        self.cmp_client, self.keys, self.x509 = cmp_client, keys, x509

    def inspect(self, files, trusted_pem, renew_before_days):
        x509, keys = self.x509, self.keys
        present = files.present()
        if len(present) < 3:
            return Inspection("absent", "no complete credential (found %d of 3 files)" % len(present))
        try:
            with open(files.key, "rb") as handle:
                key = keys.load_private_key(handle.read())
            with open(files.certificate, "rb") as handle:
                certificate = x509.load_certificate(handle.read())
            with open(files.chain, "rb") as handle:
                chain = x509.load_certificates(handle.read())
        except (TrustpointError, OSError) as exc:
            return Inspection("invalid", "the credential files cannot be read: %s" % exc)
        summary = x509.summary(certificate)
        if not keys.same_public_key(key, certificate.public_key()):
            return Inspection("invalid", "the certificate is not for the key in %s" % files.key, summary)
        try:
            anchors = x509.load_certificates(trusted_pem) if trusted_pem else None
            x509.verify_chain(certificate, chain, anchors)
        except TrustpointError as exc:
            return Inspection("invalid", "the certificate does not verify: %s" % exc, summary)
        days = _days_left(x509.not_after(certificate))
        if days < renew_before_days:
            return Inspection(
                "renew",
                "the certificate expires in %.1f days, inside the renewal window of %d days"
                % (days, renew_before_days),
                summary,
            )
        return Inspection("valid", "valid for %.0f more days" % days, summary)

    def enroll(self, files):
        params = self.module.params
        x509, keys = self.x509, self.keys
        key = keys.generate_private_key(params["key_type"])
        client = self.cmp_client.CmpClient(cmp_url(self.module), http_transport(self.module))
        result = client.enroll_with_shared_secret(
            params["device_id"],
            params["shared_secret"],
            key,
            x509.parse_name(params["subject"]),
            implicit_confirm=params["implicit_confirm"],
        )
        paths = [files.temporary(files.key), files.temporary(files.certificate), files.temporary(files.chain)]
        for path, data in zip(
            paths,
            (
                keys.private_key_to_pem(key),
                x509.certificates_to_pem(result.certificate).encode(),
                x509.certificates_to_pem(result.chain).encode(),
            ),
        ):
            with open(path, "wb") as handle:
                handle.write(data)
        files.install(*paths)
        return x509.summary(result.certificate)


class OpensslBackend:
    """The same steps with the `openssl` 3 command line (`openssl genpkey`, `openssl cmp`)."""

    name = "openssl"
    SECRET_ENV = "TRUSTPOINT_CMP_SECRET"  # noqa: S105 (the variable's name, not a secret)

    def __init__(self, module, binary):
        self.module = module
        self.binary = binary

    def _run(self, *args, **kwargs):
        return self.module.run_command([self.binary, *args], **kwargs)

    def _summary(self, path):
        rc, out, _err = self._run(
            "x509",
            "-in",
            path,
            "-noout",
            "-serial",
            "-subject",
            "-issuer",
            "-startdate",
            "-enddate",
            "-fingerprint",
            "-sha256",
            "-nameopt",
            "RFC2253",
        )
        if rc != 0:
            return None
        fields = {}
        for line in out.splitlines():
            key, _sep, value = line.partition("=")
            fields[key.strip()] = value.strip()

        def when(text):
            parsed = datetime.datetime.strptime(text.replace("  ", " "), "%b %d %H:%M:%S %Y %Z")
            return parsed.replace(tzinfo=datetime.timezone.utc)

        not_after = when(fields["notAfter"])
        return {
            "serial_number": fields["serial"].lower().lstrip("0") or "0",
            "subject": fields["subject"],
            "issuer": fields["issuer"],
            "not_before": when(fields["notBefore"]).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "fingerprint_sha256": fields["sha256 Fingerprint"].replace(":", "").lower(),
        }, not_after

    def _public_key(self, command, path, *extra):
        rc, out, _err = self._run(command, "-in", path, "-pubout" if command == "pkey" else "-pubkey", *extra)
        return out if rc == 0 else None

    def inspect(self, files, trusted_pem, renew_before_days):
        present = files.present()
        if len(present) < 3:
            return Inspection("absent", "no complete credential (found %d of 3 files)" % len(present))
        parsed = self._summary(files.certificate)
        if parsed is None:
            return Inspection("invalid", "%s is not a readable certificate" % files.certificate)
        summary, not_after = parsed
        key_public = self._public_key("pkey", files.key)
        if key_public is None or key_public != self._public_key("x509", files.certificate, "-noout"):
            return Inspection("invalid", "the certificate is not for the key in %s" % files.key, summary)
        anchors = files.chain
        trusted_file = None
        try:
            if trusted_pem:
                trusted_file = files.temporary(files.chain)
                with open(trusted_file, "w") as handle:
                    handle.write(trusted_pem)
                anchors = trusted_file
            rc, out, err = self._run(
                "verify",
                "-no-CApath",
                "-no-CAfile",
                "-CAfile",
                anchors,
                "-untrusted",
                files.chain,
                files.certificate,
            )
        finally:
            files.cleanup()
        if rc != 0:
            return Inspection("invalid", "the certificate does not verify: %s" % (err or out).strip(), summary)
        days = _days_left(not_after)
        if days < renew_before_days:
            return Inspection(
                "renew",
                "the certificate expires in %.1f days, inside the renewal window of %d days"
                % (days, renew_before_days),
                summary,
            )
        return Inspection("valid", "valid for %.0f more days" % days, summary)

    def _generate_key(self, path, key_type):
        if key_type.startswith("ecdsa-"):
            options = [
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-" + key_type[-3:],
                "-pkeyopt",
                "ec_param_enc:named_curve",
            ]
        else:
            options = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:" + key_type.split("-")[1]]
        # The file exists with mode 0600 already: openssl truncates it and keeps the mode.
        rc, _out, err = self._run("genpkey", *options, "-out", path)
        if rc != 0:
            raise TrustpointError("openssl genpkey failed: %s" % err.strip())

    def enroll(self, files):
        params = self.module.params
        key_tmp, cert_tmp = files.temporary(files.key), files.temporary(files.certificate)
        chain_tmp, extra_tmp, ca_tmp = (files.temporary(files.chain) for _index in range(3))
        self._generate_key(key_tmp, params["key_type"])
        args = [
            "cmp",
            "-cmd",
            "ir",
            "-server",
            cmp_url(self.module),
            "-ref",
            str(params["device_id"]),
            "-secret",
            "env:" + self.SECRET_ENV,
            "-subject",
            params["subject"],
            "-newkey",
            key_tmp,
            "-certout",
            cert_tmp,
            "-chainout",
            extra_tmp,
            "-cacertsout",
            ca_tmp,
            # Show the server's reason even when its error cannot be authenticated (wrong secret).
            "-unprotected_errors",
            "-msg_timeout",
            str(params["timeout"]),
            "-total_timeout",
            str(params["timeout"] * 2),
        ]
        if params["implicit_confirm"]:
            args.append("-implicit_confirm")
        # The secret travels in the environment, not on the command line where `ps` shows it.
        rc, out, err = self._run(*args, environ_update={self.SECRET_ENV: params["shared_secret"]})
        if rc != 0:
            reasons = [
                line.split("CMP error:", 1)[1].strip() for line in (err + out).splitlines() if "CMP error:" in line
            ]
            raise TrustpointError(
                "openssl cmp could not enroll: %s" % ("; ".join(reasons) or err.strip() or out.strip())
            )
        blocks = []
        for path in (extra_tmp, ca_tmp):
            with open(path) as handle:
                for block in _PEM_CERT.findall(handle.read()):
                    block = block.strip() + "\n"
                    if block not in blocks:
                        blocks.append(block)
        with open(chain_tmp, "w") as handle:
            handle.write("".join(blocks))
        summary = self._summary(cert_tmp)[0]
        files.install(key_tmp, cert_tmp, chain_tmp)
        return summary


def openssl_binary(module):
    """Path of an OpenSSL 3 `openssl`, or None."""
    binary = module.get_bin_path("openssl")
    if binary is None:
        return None
    rc, out, _err = module.run_command([binary, "version"])
    match = re.match(r"OpenSSL (\d+)\.", out or "")
    return binary if rc == 0 and match and int(match.group(1)) >= 3 else None


def select_backend(module):
    """The backend the module's `backend` option asks for; fails with what is missing."""
    requested = module.params["backend"]
    if requested in ("auto", "python"):
        missing, traceback = deps.missing()
        if not missing:
            return PythonBackend(module)
        if requested == "python":
            from ansible.module_utils.basic import missing_required_lib

            module.fail_json(msg=missing_required_lib(", ".join(missing)), exception=traceback)
    binary = openssl_binary(module)
    if binary is None:
        module.fail_json(
            msg="neither the Python libraries (cryptography, pyasn1, pyasn1-alt-modules) nor the "
            "OpenSSL 3 command line are available on the device; install one of them"
        )
    return OpensslBackend(module, binary)
