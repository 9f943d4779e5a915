# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to the collection: the device side of trustpoint.pki.enroll.

Two backends do the same jobs: look at the credential files on the device; onboard (CMP ir with a
shared secret or an IDevID), renew (kur signed with the current credential) or revoke (rr), always
with keys generated on the device. `python` uses the core (cryptography, pyasn1); `openssl` uses the
OpenSSL 3 command line, for devices without those libraries.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
import shutil
import tempfile
import uuid

from .. import deps
from ..errors import TrustpointError
from .connection import endpoint, http_sender, http_transport

# The key file is private to its owner; certificates are public.
KEY_MODE = 0o600
CERT_MODE = 0o644
DIRECTORY_MODE = 0o755
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.S)
# RFC 5280 reason codes, by the names the module takes.
REVOCATION_REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}


def cmp_url(module, operation="{operation}"):
    """The RFC 9483 URL of the module's domain, for one operation or with the {operation} placeholder."""
    return endpoint(module, "/.well-known/cmp/p/%s/%s" % (module.params["domain"], operation))


def est_url(module):
    """The EST base URL of the module's domain (RFC 7030 label = domain)."""
    return endpoint(module, "/.well-known/est/%s" % module.params["domain"])


class Inspection:
    """What the device holds now. state: absent | unreadable | invalid | untrusted | expired | renew | valid.

    invalid: the files hold no certificate for the key; untrusted: a certificate for the key that does not
    verify against the trust anchors; expired: a certificate for the key past its notAfter."""

    def __init__(self, state, reason, certificate=None):
        self.state = state
        self.reason = reason
        self.certificate = certificate


class FileError(TrustpointError):
    """Installing or removing the credential files failed; changed says whether a file was changed anyway."""

    def __init__(self, message, changed=False):
        super().__init__(message)
        self.changed = changed


class CredentialFiles:
    """The key, certificate and chain paths, and their replacement as one unit."""

    def __init__(self, module):
        self.module = module
        self.key = module.params["key_path"]
        self.certificate = module.params["certificate_path"]
        self.chain = module.params["chain_path"]
        self._temporary = []
        # The key, certificate and chain temporaries the new credential is written to (stage()).
        self.staged = None

    def paths(self):
        return (self.key, self.certificate, self.chain)

    def present(self):
        return [p for p in self.paths() if os.path.lexists(p)]

    def key_mode(self):
        """The key file's mode as text (0600), or None without a key file."""
        try:
            return "%04o" % (os.stat(self.key).st_mode & 0o7777)
        except OSError:
            return None

    def check_directories(self, paths=None):
        """Fail unless each path's directory exists and may be written to, and no path is a directory."""
        for path in paths or self.paths():
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                self.module.fail_json(msg="directory %s of %s does not exist; create it first" % (directory, path))
            if not os.access(directory, os.W_OK | os.X_OK):
                self.module.fail_json(
                    msg="cannot write to directory %s (of %s) as user id %d; run the task as a user that may "
                    "(become: true) or change the directory's permissions" % (directory, path, os.geteuid())
                )
            if os.path.isdir(path):
                self.module.fail_json(msg="%s is a directory; it must be a file or not exist" % path)

    def stage(self):
        """Create the key, certificate and chain temporaries beside their destinations, before any server is
        contacted: a run that could not write them must not spend a one-time secret."""
        self.check_directories()
        try:
            self.staged = tuple(self.temporary(path) for path in self.paths())
        except OSError as exc:
            self.cleanup()
            self.module.fail_json(msg="cannot create a temporary file beside the credential files: %s" % exc)
        return self.staged

    def temporary(self, beside, content=None):
        """A new file (mode 0600, empty or with content) in the directory of beside, removed by cleanup()
        unless installed."""
        fd, path = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(beside)), prefix=".trustpoint-")
        self._temporary.append(path)
        with os.fdopen(fd, "wb") as handle:
            if content:
                handle.write(content if isinstance(content, bytes) else content.encode())
        return path

    def _adopt(self, tmp, dest):
        """Give tmp the owner and SELinux context of the file it replaces (as atomic_move does)."""
        module = self.module
        existing = os.path.exists(dest)
        if existing:
            status = os.stat(dest)
            try:
                os.chown(tmp, status.st_uid, status.st_gid)
            except OSError:
                pass  # not root: the new file stays ours
        if module.selinux_enabled():
            context = module.selinux_context(dest) if existing else module.selinux_default_context(dest)
            module.set_context_if_different(tmp, context, False)

    def _backup(self, dest):
        """A copy of dest in its directory (a hard link where possible), or None when dest does not exist."""
        if not os.path.lexists(dest):
            return None
        backup = os.path.join(os.path.dirname(os.path.abspath(dest)), ".trustpoint-backup-" + uuid.uuid4().hex)
        try:
            os.link(dest, backup, follow_symlinks=False)
        except OSError:
            shutil.copy2(dest, backup, follow_symlinks=False)
        self._temporary.append(backup)
        return backup

    def install(self, key_tmp, certificate_tmp, chain_tmp):
        """Move the new files into place, key first so that a certificate never names a missing key. When a
        move fails, the files moved before it are put back: the credential is replaced whole or not at all.
        Raises FileError."""
        moves = ((key_tmp, self.key, KEY_MODE), (certificate_tmp, self.certificate, CERT_MODE),
                 (chain_tmp, self.chain, CERT_MODE))  # fmt: skip
        try:
            for tmp, dest, mode in moves:
                os.chmod(tmp, mode)
                self._adopt(tmp, dest)
            backups = [self._backup(dest) for _tmp, dest, _mode in moves]
        except OSError as exc:
            raise FileError("cannot prepare the replacement of the credential files: %s" % exc) from exc
        done = []
        for (tmp, dest, _mode), backup in zip(moves, backups):
            try:
                os.rename(tmp, dest)
            except OSError as exc:
                problems = self._restore(done)
                if problems:
                    raise FileError(
                        "cannot move the new file to %s (%s), and cannot restore %s; the credential files are "
                        "inconsistent: run the task again" % (dest, exc, "; ".join(problems)),
                        changed=True,
                    ) from exc
                raise FileError(
                    "cannot move the new file to %s (%s); the previous credential files were restored" % (dest, exc)
                ) from exc
            self._temporary.remove(tmp)
            done.append((dest, backup))

    def _restore(self, done):
        """Undo the moves in done ((dest, backup) pairs); the problems that remain."""
        problems = []
        for dest, backup in reversed(done):
            try:
                if backup is None:
                    os.unlink(dest)
                else:
                    os.rename(backup, dest)
                    self._temporary.remove(backup)
            except OSError as exc:
                problems.append("%s (%s)" % (dest, exc))
        return problems

    def remove(self):
        """Delete the credential files (after revocation). Raises FileError."""
        removed = []
        for path in self.present():
            try:
                os.unlink(path)
            except OSError as exc:
                raise FileError(
                    "cannot delete %s: %s%s"
                    % (path, exc, "; already deleted: " + ", ".join(removed) if removed else ""),
                    changed=bool(removed),
                ) from exc
            removed.append(path)

    def cleanup(self):
        for path in self._temporary:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._temporary = []


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _missing_directories(paths):
    """The directories of paths that do not exist, parents first."""
    missing = []
    for path in paths:
        directory = os.path.dirname(os.path.abspath(path))
        chain = []
        while directory and not os.path.isdir(directory):
            chain.append(directory)
            directory = os.path.dirname(directory)
        missing.extend(d for d in reversed(chain) if d not in missing)
    return missing


def place_support_files(module, files):
    """Create the credential directories (create_directories) and write the server's TLS trust anchor
    (ca_content) to ca_path, atomically and without following a symlink at ca_path. Honours check mode.

    Returns None when nothing changed, else (before, after) of the trust anchor for the diff (its SHA-256, or
    None where there is none)."""
    params = module.params
    changed = False
    ca_path, content = params["ca_path"], params["ca_content"]
    if params["create_directories"]:
        for directory in _missing_directories(list(files.paths()) + ([ca_path] if content is not None else [])):
            changed = True
            if module.check_mode:
                continue
            try:
                os.mkdir(directory, DIRECTORY_MODE)
                os.chmod(directory, DIRECTORY_MODE)
            except OSError as exc:
                module.fail_json(msg="cannot create directory %s: %s" % (directory, exc))
    before = after = None
    if content is not None:
        data = content.strip().encode() + b"\n"
        after = hashlib.sha256(data).hexdigest()
        try:
            current = read(ca_path) if os.path.lexists(ca_path) and not os.path.islink(ca_path) else None
        except OSError as exc:
            module.fail_json(msg="cannot read ca_path %s to compare it with ca_content: %s" % (ca_path, exc))
        before = hashlib.sha256(current).hexdigest() if current is not None else None
        if current != data:
            changed = True
            if not module.check_mode:
                _write_public(module, ca_path, data)
        elif module.set_mode_if_different(ca_path, CERT_MODE, False):
            changed = True
    return (before, after) if changed else None


def _write_public(module, path, data):
    """Replace path with a new file (mode 0644) holding data; rename replaces a symlink, never its target."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        module.fail_json(msg="directory %s of ca_path %s does not exist; create it first" % (directory, path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".trustpoint-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, CERT_MODE)
        if module.selinux_enabled():
            module.set_context_if_different(tmp, module.selinux_default_context(path), False)
        os.rename(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        module.fail_json(msg="cannot write the server's TLS trust anchor to ca_path %s: %s" % (path, exc))


def _days_left(not_after):
    return (not_after - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400


def _judge(days, renew_before_days, summary):
    if days < renew_before_days:
        return Inspection(
            "renew",
            "the certificate expires in %.1f days, inside the renewal window of %d days" % (days, renew_before_days),
            summary,
        )
    return Inspection("valid", "valid for %.0f more days" % days, summary)


def trust_anchor_pem(module, files):
    """PEM of the certificates that signed responses must chain to: ca_certificates, else the root at the
    end of the device's chain file (renewal and revocation, where the device already trusts its PKI)."""
    if module.params["ca_certificates"]:
        return module.params["ca_certificates"]
    if os.path.exists(files.chain):
        blocks = _PEM_CERT.findall(read(files.chain).decode("ascii", "replace"))
        if blocks:
            return blocks[-1]
    raise TrustpointError("no trust anchor for the server's signature: set ca_certificates (the domain's CA chain)")


class PythonBackend:
    name = "python"

    def __init__(self, module):
        self.module = module
        from .. import keys, x509

        self.keys, self.x509 = keys, x509

    # The protocol clients are imported when the server is contacted: their ASN.1 modules take about a second
    # of CPU to import, which a run that only inspects the files (most runs) does not need.
    @property
    def cmp_client(self):
        from .. import cmp_client

        return cmp_client

    @property
    def est(self):
        from .. import est

        return est

    def inspect(self, files, trusted_pem, renew_before_days):
        x509, keys = self.x509, self.keys
        present = files.present()
        if len(present) < 3:
            return Inspection("absent", "no complete credential (found %d of 3 files)" % len(present))
        try:
            key = keys.load_private_key(read(files.key))
            certificate = x509.load_certificate(read(files.certificate))
            chain = x509.load_certificates(read(files.chain))
        except OSError as exc:
            return Inspection("unreadable", "the credential files cannot be read: %s" % exc)
        except TrustpointError as exc:
            return Inspection("invalid", "the credential files cannot be read: %s" % exc)
        summary = x509.summary(certificate)
        if not keys.same_public_key(key, certificate.public_key()):
            return Inspection("invalid", "the certificate is not for the key in %s" % files.key, summary)
        days = _days_left(x509.not_after(certificate))
        if days < 0:
            return Inspection("expired", "the certificate expired on %s" % summary["not_after"], summary)
        try:
            anchors = x509.load_certificates(trusted_pem) if trusted_pem else None
            x509.verify_chain(certificate, chain, anchors)
        except TrustpointError as exc:
            return Inspection("untrusted", "the certificate does not verify: %s" % exc, summary)
        return _judge(days, renew_before_days, summary)

    def check_anchors(self, pem):
        """Raise TrustpointError unless pem holds at least one readable certificate."""
        if not self.x509.load_certificates(pem):
            raise TrustpointError("no PEM certificate in it")

    def check_subject(self, subject):
        self.x509.parse_name(subject)

    def _client(self):
        return self.cmp_client.CmpClient(cmp_url(self.module), http_transport(self.module))

    def _credential(self, key_path, certificate_path, chain_path=None):
        x509, keys = self.x509, self.keys
        chain = x509.load_certificates(read(chain_path)) if chain_path else []
        certificate = x509.load_certificate(read(certificate_path))
        return self.cmp_client.SignatureCredential(keys.load_private_key(read(key_path)), certificate, chain)

    def _install(self, files, key, enrollment):
        x509 = self.x509
        contents = (
            self.keys.private_key_to_pem(key),
            x509.certificates_to_pem(enrollment.certificate),
            x509.certificates_to_pem(enrollment.chain),
        )
        for path, content in zip(files.staged, contents):
            with open(path, "wb") as handle:
                handle.write(content if isinstance(content, bytes) else content.encode())
        files.install(*files.staged)
        return x509.summary(enrollment.certificate)

    def _est(
        self,
        files,
        key,
        client_cert=None,
        client_key=None,
        username=None,
        password=None,
        reenroll=False,
        subject=None,
        subject_alt_names=(),
    ):
        """EST: a CSR for key, simpleenroll (or simplereenroll), and the chain from /cacerts."""
        x509 = self.x509
        client = self.est.EstClient(est_url(self.module), http_sender(self.module, client_cert, client_key))
        csr = self.est.build_csr(key, subject or x509.parse_name(self.module.params["subject"]), subject_alt_names)
        certificate = client.enroll(csr, username, password, reenroll=reenroll)
        ca_certificates = client.ca_certificates()
        anchors = self.cmp_client.trust_anchors(
            x509.load_certificates(self.module.params["ca_certificates"])
            if self.module.params["ca_certificates"]
            else ca_certificates
        )
        path = x509.verify_chain(certificate, ca_certificates, anchors)
        return self._install(files, key, self.cmp_client.Enrollment(certificate, path[1:], ca_certificates, True))

    def enroll(self, files):
        """Onboard: a new key, and an ir (or EST simpleenroll) authenticated by the secret or the IDevID."""
        params = self.module.params
        key = self.keys.generate_private_key(params["key_type"])
        if params["method"] == "est_password":
            return self._est(files, key, username=params["username"], password=params["password"])
        if params["method"] == "est_idevid":
            return self._est(files, key, params["idevid_certificate_path"], params["idevid_key_path"])
        subject = self.x509.parse_name(params["subject"])
        if params["method"] == "cmp_idevid":
            credential = self._credential(
                params["idevid_key_path"], params["idevid_certificate_path"], params["idevid_chain_path"]
            )
            trusted = self.x509.load_certificates(trust_anchor_pem(self.module, files))
        else:
            credential = self.cmp_client.MacCredential(params["device_id"], params["shared_secret"])
            trusted = self.x509.load_certificates(params["ca_certificates"]) if params["ca_certificates"] else None
        enrollment = self._client().initialize(
            key, subject, credential, trusted=trusted, implicit_confirm=params["implicit_confirm"]
        )
        return self._install(files, key, enrollment)

    def renew(self, files):
        """A new key, certified by a kur signed with the current credential (EST devices: simplereenroll
        with it as TLS client certificate, repeating its subject and SANs)."""
        key = self.keys.generate_private_key(self.module.params["key_type"])
        if self.module.params["method"].startswith("est_"):
            current = self.x509.load_certificate(read(files.certificate))
            return self._est(
                files,
                key,
                files.certificate,
                files.key,
                reenroll=True,
                subject=current.subject,
                subject_alt_names=self.x509.subject_alt_names(current),
            )
        trusted = self.x509.load_certificates(trust_anchor_pem(self.module, files))
        enrollment = self._client().update_key(
            key,
            self._credential(files.key, files.certificate, files.chain),
            trusted,
            implicit_confirm=self.module.params["implicit_confirm"],
        )
        return self._install(files, key, enrollment)

    def revoke(self, files):
        credential = self._credential(files.key, files.certificate, files.chain)
        trusted = self.x509.load_certificates(trust_anchor_pem(self.module, files))
        self._client().revoke(credential.certificate, credential, trusted, self.module.params["revocation_reason"])


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
        days = _days_left(not_after)
        if days < 0:
            return Inspection("expired", "the certificate expired on %s" % summary["not_after"], summary)
        anchors = files.chain
        if trusted_pem:
            # In Ansible's private temporary directory: inspection writes nothing beside the credential.
            fd, anchors = tempfile.mkstemp(dir=self.module.tmpdir, prefix="anchors-")
            with os.fdopen(fd, "w") as handle:
                handle.write(trusted_pem)
        rc, out, err = self._run(
            "verify", "-no-CApath", "-no-CAstore", "-CAfile", anchors, "-untrusted", files.chain, files.certificate
        )
        if rc != 0:
            return Inspection("untrusted", "the certificate does not verify: %s" % (err or out).strip(), summary)
        return _judge(days, renew_before_days, summary)

    def check_anchors(self, pem):
        """Raise TrustpointError unless pem holds at least one certificate openssl can read."""
        blocks = _PEM_CERT.findall(pem)
        if not blocks:
            raise TrustpointError("no PEM certificate in it")
        for block in blocks:
            rc, _out, err = self._run("x509", "-noout", data=block, binary_data=True)
            if rc != 0:
                raise TrustpointError("not a readable certificate: %s" % err.strip())

    def check_subject(self, subject):
        if not subject.strip().startswith("/"):
            raise TrustpointError("the openssl backend takes the OpenSSL form /CN=name/O=organization")

    def _generate_key(self, path, key_type):
        if key_type.startswith("ecdsa-"):
            options = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-" + key_type[-3:],
                       "-pkeyopt", "ec_param_enc:named_curve"]  # fmt: skip
        else:
            options = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:" + key_type.split("-")[1]]
        # The file exists with mode 0600 already: openssl truncates it and keeps the mode.
        rc, _out, err = self._run("genpkey", *options, "-out", path)
        if rc != 0:
            raise TrustpointError("openssl genpkey failed: %s" % err.strip())

    def _cmp(self, operation, args, environ=None):
        """Run `openssl cmp` against the domain's URL for operation, over TLS when the URL is https."""
        params = self.module.params
        url = cmp_url(self.module, operation)
        command = ["cmp", "-server", url, *args,
                   # Show the server's reason even when its error cannot be authenticated (wrong secret).
                   "-unprotected_errors",
                   "-msg_timeout", str(params["timeout"]), "-total_timeout", str(params["timeout"] * 2)]  # fmt: skip
        if url.startswith("https://"):
            command.append("-tls_used")
            if params["validate_certs"]:
                # The module checked that ca_path is set before anything changed (openssl cmp has no system store).
                command += ["-tls_trusted", params["ca_path"]]
        rc, out, err = self._run(*command, environ_update=environ or {})
        if rc != 0:
            reasons = [
                line.split("CMP error:", 1)[1].strip() for line in (err + out).splitlines() if "CMP error:" in line
            ]
            raise TrustpointError(
                "openssl cmp %s failed: %s" % (operation, "; ".join(reasons) or err.strip() or out.strip())
            )

    def _enroll(self, files, operation, authentication, environ=None, signed=True):
        params = self.module.params
        key_tmp, cert_tmp, chain_tmp = files.staged
        extra_tmp, ca_tmp = files.temporary(files.chain), files.temporary(files.chain)
        self._generate_key(key_tmp, params["key_type"])
        args = ["-cmd", "ir" if operation == "initialization" else "kur", *authentication,
                "-subject", params["subject"], "-newkey", key_tmp,
                "-certout", cert_tmp, "-chainout", extra_tmp, "-cacertsout", ca_tmp]  # fmt: skip
        if params["implicit_confirm"]:
            args.append("-implicit_confirm")
        self._cmp(operation, args, environ)
        blocks = []
        for path in (extra_tmp, ca_tmp):
            for block in _PEM_CERT.findall(read(path).decode("ascii", "replace")):
                block = block.strip() + "\n"
                if block not in blocks:
                    blocks.append(block)
        if signed:
            # Responses to signed requests carry no caPubs: the trust anchor completes the chain.
            for block in _PEM_CERT.findall(trust_anchor_pem(self.module, files)):
                block = block.strip() + "\n"
                if block not in blocks:
                    blocks.append(block)
        with open(chain_tmp, "w") as handle:
            handle.write("".join(blocks))
        summary = self._summary(cert_tmp)[0]
        files.install(key_tmp, cert_tmp, chain_tmp)
        return summary

    def _signed_by(self, key_path, certificate_path, chain_path, files):
        args = ["-cert", certificate_path, "-key", key_path,
                "-trusted", files.temporary(files.chain, trust_anchor_pem(self.module, files))]  # fmt: skip
        if chain_path:
            args += ["-extracerts", chain_path]
        return args

    def _curl(self, operation, files, output, body=None, client_cert=None, client_key=None, credentials=None):
        """One EST request with curl; the answer's body goes to output. Credentials travel in a 0600 config
        file, not on the command line."""
        params = self.module.params
        curl = self.module.get_bin_path("curl")
        if curl is None:
            raise TrustpointError("the openssl backend needs curl for EST; install it")
        url = "%s/%s" % (est_url(self.module), operation)
        config = ['url = "%s"' % url, 'output = "%s"' % output, "silent", "show-error", "fail-with-body",
                  "max-time = %d" % params["timeout"]]  # fmt: skip
        if not params["validate_certs"]:
            config.append("insecure")
        elif params["ca_path"]:
            config.append('cacert = "%s"' % params["ca_path"])
        if client_cert:
            config += ['cert = "%s"' % client_cert, 'key = "%s"' % client_key]
        if credentials:
            config.append('user = "%s:%s"' % credentials)
        if body is not None:
            config += ['header = "Content-Type: application/pkcs10"', 'data-binary = "@%s"' % body]
        rc, _out, err = self.module.run_command(
            [curl, "--config", files.temporary(files.chain, "\n".join(config) + "\n")]
        )
        if rc != 0:
            detail = read(output).decode("utf-8", "replace").strip() if os.path.exists(output) else ""
            raise TrustpointError("EST %s failed: %s %s" % (operation, err.strip(), detail[:300]))

    def _certificates(self, files, base64_path):
        """PEM blocks of a base64 certs-only EST answer, via openssl pkcs7."""
        der = files.temporary(files.chain, base64.b64decode(read(base64_path), validate=False))
        rc, out, err = self._run("pkcs7", "-inform", "DER", "-in", der, "-print_certs")
        if rc != 0:
            raise TrustpointError("the EST answer is not a certs-only PKCS#7: %s" % err.strip())
        return [block.strip() + "\n" for block in _PEM_CERT.findall(out)]

    def _est(self, files, operation, client_cert=None, client_key=None, credentials=None, template=None):
        params = self.module.params
        key_tmp, cert_tmp, chain_tmp = files.staged
        self._generate_key(key_tmp, params["key_type"])
        csr = files.temporary(files.chain)
        if template:
            # Re-enrollment repeats the current certificate's subject and SANs (RFC 7030 4.2.2). x509 -x509toreq
            # writes text before the PEM: `openssl req` turns that into DER.
            pem = files.temporary(files.chain)
            steps = [["x509", "-x509toreq", "-in", template, "-signkey", key_tmp, "-copy_extensions", "copy",
                      "-out", pem], ["req", "-in", pem, "-outform", "DER", "-out", csr]]  # fmt: skip
        else:
            steps = [["req", "-new", "-key", key_tmp, "-subj", params["subject"], "-outform", "DER", "-out", csr]]
        for step in steps:
            rc, _out, err = self._run(*step)
            if rc != 0:
                raise TrustpointError("openssl could not make the certificate request: %s" % err.strip())
        body = files.temporary(files.chain, base64.b64encode(read(csr)))
        answer, cacerts = files.temporary(files.chain), files.temporary(files.chain)
        self._curl(operation, files, answer, body, client_cert, client_key, credentials)
        self._curl("cacerts", files, cacerts)
        with open(cert_tmp, "w") as handle:
            handle.write(self._certificates(files, answer)[0])
        chain = self._certificates(files, cacerts)
        # The chain file lists the issuing CA first and the self-signed root last.
        chain.sort(key=lambda block: self._self_signed(files, block))
        with open(chain_tmp, "w") as handle:
            handle.write("".join(chain))
        anchors = files.temporary(files.chain, params["ca_certificates"]) if params["ca_certificates"] else chain_tmp
        rc, out, err = self._run(
            "verify", "-no-CApath", "-no-CAstore", "-CAfile", anchors, "-untrusted", chain_tmp, cert_tmp
        )
        if rc != 0:
            raise TrustpointError("the EST certificate does not verify: %s" % (err or out).strip())
        summary = self._summary(cert_tmp)[0]
        files.install(key_tmp, cert_tmp, chain_tmp)
        return summary

    def _self_signed(self, files, block):
        rc, out, _err = self._run("x509", "-in", files.temporary(files.chain, block), "-noout", "-subject", "-issuer")
        lines = [line.split("=", 1)[1].strip() for line in out.splitlines() if "=" in line]
        return rc == 0 and len(lines) == 2 and lines[0] == lines[1]

    def enroll(self, files):
        params = self.module.params
        if params["method"] == "est_password":
            return self._est(files, "simpleenroll", credentials=(params["username"], params["password"]))
        if params["method"] == "est_idevid":
            return self._est(files, "simpleenroll", params["idevid_certificate_path"], params["idevid_key_path"])
        if params["method"] == "cmp_idevid":
            authentication = self._signed_by(
                params["idevid_key_path"], params["idevid_certificate_path"], params["idevid_chain_path"], files
            )
            return self._enroll(files, "initialization", authentication)
        # The secret travels in the environment, not on the command line where `ps` shows it.
        authentication = ["-ref", str(params["device_id"]), "-secret", "env:" + self.SECRET_ENV]
        environ = {self.SECRET_ENV: params["shared_secret"]}
        return self._enroll(files, "initialization", authentication, environ, signed=False)

    def renew(self, files):
        if self.module.params["method"].startswith("est_"):
            return self._est(files, "simplereenroll", files.certificate, files.key, template=files.certificate)
        return self._enroll(files, "keyupdate", self._signed_by(files.key, files.certificate, files.chain, files))

    def revoke(self, files):
        reason = str(REVOCATION_REASONS[self.module.params["revocation_reason"]])
        args = ["-cmd", "rr", *self._signed_by(files.key, files.certificate, files.chain, files),
                "-oldcert", files.certificate, "-revreason", reason]  # fmt: skip
        try:
            self._cmp("revocation", args)
        except TrustpointError as exc:
            if "certRevoked" not in str(exc):  # already revoked is what we want
                raise


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
