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
import stat
import tempfile
import time
import uuid

from .. import deps
from ..errors import TrustpointError
from ..retry import DELAYS
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
    """The key, certificate and chain paths, and their replacement as one unit.

    Written so that no other user can redirect or read what the module writes, even when it runs as root:
    the directories of the files (and every directory above them) must not be writable by another user, the
    files themselves must not be symbolic links, new files are created with O_EXCL | O_NOFOLLOW in a directory
    opened once (a file descriptor), written, chmod-ed and chown-ed through their own descriptors and renamed
    relative to that directory, never opened again by name. Whatever else the backends need (openssl's
    inputs and outputs, curl's configuration with a password) lives in a private work directory.
    """

    def __init__(self, module):
        self.module = module
        self.key = module.params["key_path"]
        self.certificate = module.params["certificate_path"]
        self.chain = module.params["chain_path"]
        self._directories = {}  # real directory path -> descriptor
        self._temporary = []  # (directory descriptor, name) removed by cleanup() unless installed
        self._work = None
        # The key, certificate and chain temporaries (directory descriptor, name, file descriptor), by stage().
        self.staged = None

    def paths(self):
        return (self.key, self.certificate, self.chain)

    def present(self):
        return [p for p in self.paths() if os.path.lexists(p)]

    def key_mode(self):
        """The key file's mode as text (0600), or None without a key file."""
        try:
            return "%04o" % (os.lstat(self.key).st_mode & 0o7777)
        except OSError:
            return None

    # --- checks, before anything is read, sent or written ------------------------------------------------

    def check_safe(self):
        """Fail unless every credential path is a regular file or absent (not a symbolic link, not a directory),
        in a directory that no other user may write to (nor any directory above it)."""
        for path in self.paths():
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                continue  # check_directories() says so when the module would write there
            problem = unsafe_directory(directory)
            if problem:
                self.module.fail_json(
                    msg="the directory of %s is not safe for credentials: %s; another user could replace or read "
                    "what the module writes there. Use a directory that only its owner (root or the user the "
                    "task runs as) may write to (chmod go-w)" % (path, problem)
                )
            if os.path.islink(path):
                self.module.fail_json(
                    msg="%s is a symbolic link (to %s); the module writes credential files only as regular files: "
                    "give the real path, or remove the link" % (path, os.readlink(path))
                )
            if os.path.isdir(path):
                self.module.fail_json(msg="%s is a directory; it must be a file or not exist" % path)

    def check_directories(self, paths=None):
        """Fail unless each path's directory exists, is safe and may be written to, and no path is a directory."""
        self.check_safe()
        for path in paths or self.paths():
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                self.module.fail_json(msg="directory %s of %s does not exist; create it first" % (directory, path))
            if not os.access(directory, os.W_OK | os.X_OK):
                self.module.fail_json(
                    msg="cannot write to directory %s (of %s) as user id %d; run the task as a user that may "
                    "(become: true) or change the directory's permissions" % (directory, path, os.geteuid())
                )

    # --- reading ---------------------------------------------------------------------------------------

    def read(self, path):
        """The content of a credential file, opened without following a symbolic link."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    # --- the private work directory ------------------------------------------------------------------------

    @property
    def work(self):
        """A directory only this process's user may enter (in Ansible's private temporary directory)."""
        if self._work is None:
            self._work = tempfile.mkdtemp(prefix="trustpoint-", dir=self.module.tmpdir)
            os.chmod(self._work, 0o700)
        return self._work

    def work_file(self, name, content=None):
        """A path in the work directory; with content, a file (0600) holding it."""
        path = os.path.join(self.work, name)
        if content is not None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content if isinstance(content, bytes) else content.encode())
        return path

    def work_copy(self, path, name):
        """A copy of a credential file in the work directory, for a command that reads files by name."""
        return self.work_file(name, self.read(path))

    def read_work(self, name):
        fd = os.open(os.path.join(self.work, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    # --- staging and installing --------------------------------------------------------------------------

    def _directory(self, path):
        """(descriptor of path's directory, path's name in it)."""
        directory = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        if directory not in self._directories:
            self._directories[directory] = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._directories[directory], os.path.basename(path)

    def _create(self, beside):
        """A new empty file (0600) in the directory of beside: (directory descriptor, name, file descriptor)."""
        dir_fd, _name = self._directory(beside)
        for _attempt in range(100):
            name = ".trustpoint-" + uuid.uuid4().hex
            try:
                fd = os.open(
                    name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
                )
            except FileExistsError:
                continue
            self._temporary.append((dir_fd, name))
            return dir_fd, name, fd
        raise OSError("cannot create a temporary file beside %s" % beside)

    def stage(self):
        """Create the key, certificate and chain temporaries beside their destinations, before any server is
        contacted: a run that could not write them must not spend a one-time secret."""
        self.check_directories()
        try:
            self.staged = tuple(self._create(path) for path in self.paths())
        except OSError as exc:
            self.cleanup()
            self.module.fail_json(msg="cannot create a temporary file beside the credential files: %s" % exc)
        return self.staged

    def _adopt(self, fd, dir_fd, name, dest):
        """Give the new file the owner and SELinux context of the file it replaces (as atomic_move does), through
        its descriptor: never a symbolic link's target's."""
        module = self.module
        try:
            status = os.stat(os.path.basename(dest), dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            status = None
        if status is not None and stat.S_ISREG(status.st_mode):
            try:
                os.fchown(fd, status.st_uid, status.st_gid)
            except OSError:
                pass  # not root: the new file stays ours
        if module.selinux_enabled():
            # By name, in a directory no other user may write to (check_safe).
            context = module.selinux_context(dest) if status is not None else module.selinux_default_context(dest)
            module.set_context_if_different(os.path.join(os.path.dirname(os.path.abspath(dest)), name), context, False)

    def _backup(self, dest):
        """A hard link to dest in its directory (a copy where links fail), or None when dest does not exist."""
        dir_fd, name = self._directory(dest)
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        backup = ".trustpoint-backup-" + uuid.uuid4().hex
        try:
            os.link(name, backup, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            self._temporary.append((dir_fd, backup))
        except OSError:
            _copy_dir_fd, _copy_name, fd = self._create(dest)
            os.rename(_copy_name, backup, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            self._temporary[-1] = (dir_fd, backup)
            with os.fdopen(fd, "wb") as handle:
                handle.write(self.read(dest))
        return backup

    def install(self, contents):
        """Write contents (key, certificate, chain: bytes or text) to the staged files and move them into place,
        key first so that a certificate never names a missing key. When a move fails, the files moved before it
        are put back: the credential is replaced whole or not at all. Raises FileError."""
        modes = (KEY_MODE, CERT_MODE, CERT_MODE)
        try:
            for (dir_fd, name, fd), dest, content, mode in zip(self.staged, self.paths(), contents, modes):
                data = content if isinstance(content, bytes) else content.encode()
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                while data:
                    data = data[os.write(fd, data) :]
                os.fchmod(fd, mode)
                self._adopt(fd, dir_fd, name, dest)
                os.fsync(fd)
            backups = [self._backup(dest) for dest in self.paths()]
        except OSError as exc:
            raise FileError("cannot prepare the replacement of the credential files: %s" % exc) from exc
        done = []
        for (dir_fd, name, fd), dest, backup in zip(self.staged, self.paths(), backups):
            try:
                # The name must still be our file: a replaced one (a link planted meanwhile) is not moved.
                ours, there = os.fstat(fd), os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if (ours.st_dev, ours.st_ino) != (there.st_dev, there.st_ino):
                    raise OSError("the temporary file %s was replaced by someone else" % name)
                os.rename(name, os.path.basename(dest), src_dir_fd=dir_fd, dst_dir_fd=self._directory(dest)[0])
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
            self._temporary.remove((dir_fd, name))
            done.append((dest, backup))
        for directory_fd in set(dir_fd for dir_fd, _name, _fd in self.staged):
            try:
                os.fsync(directory_fd)  # the renames too survive a power loss
            except OSError:
                pass

    def _restore(self, done):
        """Undo the moves in done ((dest, backup) pairs); the problems that remain."""
        problems = []
        for dest, backup in reversed(done):
            dir_fd, name = self._directory(dest)
            try:
                if backup is None:
                    os.unlink(name, dir_fd=dir_fd)
                else:
                    os.rename(backup, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                    self._temporary.remove((dir_fd, backup))
            except OSError as exc:
                problems.append("%s (%s)" % (dest, exc))
        return problems

    def remove(self):
        """Delete the credential files (after revocation). Raises FileError."""
        removed = []
        for path in self.present():
            try:
                dir_fd, name = self._directory(path)
                os.unlink(name, dir_fd=dir_fd)
            except OSError as exc:
                raise FileError(
                    "cannot delete %s: %s%s"
                    % (path, exc, "; already deleted: " + ", ".join(removed) if removed else ""),
                    changed=bool(removed),
                ) from exc
            removed.append(path)

    def cleanup(self):
        for dir_fd, name in self._temporary:
            try:
                os.unlink(name, dir_fd=dir_fd)
            except OSError:
                pass
        self._temporary = []
        for _dir_fd, _name, fd in self.staged or ():
            try:
                os.close(fd)
            except OSError:
                pass
        self.staged = None
        for fd in self._directories.values():
            os.close(fd)
        self._directories = {}
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None


def unsafe_directory(directory, euid=None):
    """Why another user could replace files in directory, or None: a directory on its path, or the directory it
    really is, owned by someone other than root and euid, or writable by others (above it: without the sticky
    bit); or a symbolic link on the path owned by someone else."""
    euid = os.geteuid() if euid is None else euid
    trusted = (0, euid)
    # The path as given: every directory passed through, and every symbolic link followed.
    current = "/"
    for part in os.path.abspath(directory).split("/")[1:]:
        problem = _unsafe_parent(current, trusted)
        if problem:
            return problem
        candidate = os.path.join(current, part)
        status = os.lstat(candidate)
        if stat.S_ISLNK(status.st_mode):
            if status.st_uid not in trusted:
                return "%s is a symbolic link of user id %d" % (candidate, status.st_uid)
            candidate = os.path.realpath(candidate)
        current = candidate
    # The directory as it really is, and what lies above it.
    real = os.path.realpath(directory)
    status = os.stat(real)
    if status.st_uid not in trusted:
        return "%s belongs to user id %d" % (real, status.st_uid)
    if status.st_mode & 0o022:
        return "%s may be written to by other users (mode %04o)" % (real, status.st_mode & 0o7777)
    parent = os.path.dirname(real)
    while True:
        problem = _unsafe_parent(parent, trusted)
        if problem or parent == "/":
            return problem
        parent = os.path.dirname(parent)


def _unsafe_parent(path, trusted):
    """Why others could rename what path holds, or None."""
    status = os.stat(path)
    if status.st_uid not in trusted:
        return "%s belongs to user id %d" % (path, status.st_uid)
    if status.st_mode & 0o022 and not status.st_mode & stat.S_ISVTX:
        return "%s may be written to by other users (mode %04o)" % (path, status.st_mode & 0o7777)
    return None


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
            _check_safe_directory(module, os.path.dirname(directory), directory)
            try:
                os.mkdir(directory, DIRECTORY_MODE)
                # chmod through a descriptor: never a link someone put in its place.
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.fchmod(fd, DIRECTORY_MODE)
                finally:
                    os.close(fd)
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


def _check_safe_directory(module, directory, target):
    problem = unsafe_directory(directory)
    if problem:
        module.fail_json(
            msg="the directory of %s is not safe: %s; another user could replace what the module writes there. Use "
            "a directory that only its owner (root or the user the task runs as) may write to (chmod go-w)"
            % (target, problem)
        )


def _write_public(module, path, data):
    """Replace path with a new file (mode 0644) holding data, written and chmod-ed through its descriptor in a
    directory no other user may write to; rename replaces a symlink, never its target."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        module.fail_json(msg="directory %s of ca_path %s does not exist; create it first" % (directory, path))
    _check_safe_directory(module, directory, "ca_path %s" % path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".trustpoint-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), CERT_MODE)
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
        blocks = _PEM_CERT.findall(files.read(files.chain).decode("ascii", "replace"))
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
            key = keys.load_private_key(files.read(files.key))
            certificate = x509.load_certificate(files.read(files.certificate))
            chain = x509.load_certificates(files.read(files.chain))
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
        return self.cmp_client.CmpClient(
            cmp_url(self.module), http_transport(self.module), retries=self.module.params["retries"]
        )

    def _credential(self, key_path, certificate_path, chain_path=None, read=read):
        """A signing credential from PEM files; read: how (files.read for the device's own credential files)."""
        x509, keys = self.x509, self.keys
        chain = x509.load_certificates(read(chain_path)) if chain_path else []
        certificate = x509.load_certificate(read(certificate_path))
        return self.cmp_client.SignatureCredential(keys.load_private_key(read(key_path)), certificate, chain)

    def _own_credential(self, files):
        return self._credential(files.key, files.certificate, files.chain, read=files.read)

    def _install(self, files, key, enrollment):
        x509 = self.x509
        files.install(
            (
                self.keys.private_key_to_pem(key),
                x509.certificates_to_pem(enrollment.certificate),
                x509.certificates_to_pem(enrollment.chain),
            )
        )
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
        client = self.est.EstClient(
            est_url(self.module),
            http_sender(self.module, client_cert, client_key),
            retries=self.module.params["retries"],
        )
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
            current = self.x509.load_certificate(files.read(files.certificate))
            # The TLS client needs the credential as files: copies in the private work directory.
            return self._est(
                files,
                key,
                files.work_copy(files.certificate, "current.pem"),
                files.work_copy(files.key, "current.key"),
                reenroll=True,
                subject=current.subject,
                subject_alt_names=self.x509.subject_alt_names(current),
            )
        trusted = self.x509.load_certificates(trust_anchor_pem(self.module, files))
        enrollment = self._client().update_key(
            key,
            self._own_credential(files),
            trusted,
            implicit_confirm=self.module.params["implicit_confirm"],
        )
        return self._install(files, key, enrollment)

    def revoke(self, files):
        credential = self._own_credential(files)
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
        # openssl reads files by name: it reads copies in the private work directory.
        try:
            key = files.work_copy(files.key, "inspect.key")
            certificate = files.work_copy(files.certificate, "inspect.pem")
            chain = files.work_copy(files.chain, "inspect-chain.pem")
        except OSError as exc:
            return Inspection("unreadable", "the credential files cannot be read: %s" % exc)
        parsed = self._summary(certificate)
        if parsed is None:
            return Inspection("invalid", "%s is not a readable certificate" % files.certificate)
        summary, not_after = parsed
        key_public = self._public_key("pkey", key)
        if key_public is None or key_public != self._public_key("x509", certificate, "-noout"):
            return Inspection("invalid", "the certificate is not for the key in %s" % files.key, summary)
        days = _days_left(not_after)
        if days < 0:
            return Inspection("expired", "the certificate expired on %s" % summary["not_after"], summary)
        anchors = files.work_file("anchors.pem", trusted_pem) if trusted_pem else chain
        rc, out, err = self._run(
            "verify", "-no-CApath", "-no-CAstore", "-CAfile", anchors, "-untrusted", chain, certificate
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
        # In the private work directory; the module installs the key (0600) through its own descriptor.
        rc, _out, err = self._run("genpkey", *options, "-out", path)
        if rc != 0:
            raise TrustpointError("openssl genpkey failed: %s" % err.strip())

    def _retrying(self, what, attempt):
        """attempt() -> (rc, out, err, transient); run again while it fails transiently, at most retries more
        times. Returns the last (rc, out, err)."""
        retries = self.module.params["retries"]
        for number in range(retries + 1):
            rc, out, err, transient = attempt()
            if rc == 0 or not transient or number == retries:
                return rc, out, err
            self.module.warn("%s: the answer was lost (%s); sending the request again" % (what, _last_line(err or out)))
            time.sleep(DELAYS[min(number, len(DELAYS) - 1)])
        return rc, out, err

    def _cmp(self, operation, args, environ=None):
        """Run `openssl cmp` against the domain's URL for operation, over TLS when the URL is https; again (a new
        transaction) when the answer was lost."""
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

        def attempt():
            rc, out, err = self._run(*command, environ_update=environ or {})
            return rc, out, err, rc != 0 and _cmp_answer_lost(err + out)

        rc, out, err = self._retrying("openssl cmp %s" % operation, attempt)
        if rc != 0:
            reasons = [
                line.split("CMP error:", 1)[1].strip() for line in (err + out).splitlines() if "CMP error:" in line
            ]
            raise TrustpointError(
                "openssl cmp %s failed: %s" % (operation, "; ".join(reasons) or err.strip() or out.strip())
            )

    def _enroll(self, files, operation, authentication, environ=None, signed=True):
        params = self.module.params
        key, cert, extra, ca = (files.work_file(name) for name in ("new.key", "new.pem", "extra.pem", "capubs.pem"))
        self._generate_key(key, params["key_type"])
        args = ["-cmd", "ir" if operation == "initialization" else "kur", *authentication,
                "-subject", params["subject"], "-newkey", key,
                "-certout", cert, "-chainout", extra, "-cacertsout", ca]  # fmt: skip
        if params["implicit_confirm"]:
            args.append("-implicit_confirm")
        self._cmp(operation, args, environ)
        blocks = []
        for name in ("extra.pem", "capubs.pem"):
            content = files.read_work(name) if os.path.exists(files.work_file(name)) else b""
            for block in _PEM_CERT.findall(content.decode("ascii", "replace")):
                block = block.strip() + "\n"
                if block not in blocks:
                    blocks.append(block)
        if signed:
            # Responses to signed requests carry no caPubs: the trust anchor completes the chain.
            for block in _PEM_CERT.findall(trust_anchor_pem(self.module, files)):
                block = block.strip() + "\n"
                if block not in blocks:
                    blocks.append(block)
        summary = self._summary(cert)[0]
        files.install((files.read_work("new.key"), files.read_work("new.pem"), "".join(blocks)))
        return summary

    def _signed_by(self, key_path, certificate_path, chain_path, files):
        args = ["-cert", certificate_path, "-key", key_path,
                "-trusted", files.work_file("trusted.pem", trust_anchor_pem(self.module, files))]  # fmt: skip
        if chain_path:
            args += ["-extracerts", chain_path]
        return args

    def _signed_by_own(self, files):
        """openssl options: sign with the device's credential (copies in the work directory)."""
        return self._signed_by(
            files.work_copy(files.key, "current.key"),
            files.work_copy(files.certificate, "current.pem"),
            files.work_copy(files.chain, "current-chain.pem"),
            files,
        )

    def _curl(self, operation, files, output, body=None, client_cert=None, client_key=None, credentials=None):
        """One EST request with curl; the answer's body goes to output. Credentials travel in a 0600 config
        file in the private work directory, not on the command line. Sent again when the answer was lost."""
        params = self.module.params
        curl = self.module.get_bin_path("curl")
        if curl is None:
            raise TrustpointError("the openssl backend needs curl for EST; install it")
        url = "%s/%s" % (est_url(self.module), operation)
        config = ['url = "%s"' % url, 'output = "%s"' % output, "silent", "show-error", "fail-with-body",
                  'write-out = "%{http_code}"', "max-time = %d" % params["timeout"]]  # fmt: skip
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
        config_file = files.work_file("curl-%s.conf" % operation, "\n".join(config) + "\n")

        def attempt():
            rc, out, err = self.module.run_command([curl, "--config", config_file])
            status = int(out.strip()) if out.strip().isdigit() else 0
            return rc, out, err, rc in _CURL_ANSWER_LOST or (rc == 22 and status >= 500)

        rc, _out, err = self._retrying("EST %s" % operation, attempt)
        if rc != 0:
            detail = (
                files.read_work(os.path.basename(output)).decode("utf-8", "replace").strip()
                if os.path.exists(output)
                else ""
            )
            raise TrustpointError("EST %s failed: %s %s" % (operation, err.strip(), detail[:300]))

    def _certificates(self, files, base64_name):
        """PEM blocks of a base64 certs-only EST answer, via openssl pkcs7."""
        der = files.work_file(base64_name + ".der", base64.b64decode(files.read_work(base64_name), validate=False))
        rc, out, err = self._run("pkcs7", "-inform", "DER", "-in", der, "-print_certs")
        if rc != 0:
            raise TrustpointError("the EST answer is not a certs-only PKCS#7: %s" % err.strip())
        return [block.strip() + "\n" for block in _PEM_CERT.findall(out)]

    def _est(self, files, operation, client_cert=None, client_key=None, credentials=None, template=None):
        params = self.module.params
        key, csr = files.work_file("new.key"), files.work_file("request.der")
        self._generate_key(key, params["key_type"])
        if template:
            # Re-enrollment repeats the current certificate's subject and SANs (RFC 7030 4.2.2). x509 -x509toreq
            # writes text before the PEM: `openssl req` turns that into DER.
            pem = files.work_file("request.pem")
            steps = [["x509", "-x509toreq", "-in", template, "-signkey", key, "-copy_extensions", "copy",
                      "-out", pem], ["req", "-in", pem, "-outform", "DER", "-out", csr]]  # fmt: skip
        else:
            steps = [["req", "-new", "-key", key, "-subj", params["subject"], "-outform", "DER", "-out", csr]]
        for step in steps:
            rc, _out, err = self._run(*step)
            if rc != 0:
                raise TrustpointError("openssl could not make the certificate request: %s" % err.strip())
        body = files.work_file("request.b64", base64.b64encode(files.read_work("request.der")))
        self._curl(operation, files, files.work_file("answer.b64"), body, client_cert, client_key, credentials)
        self._curl("cacerts", files, files.work_file("cacerts.b64"))
        cert = files.work_file("new.pem", self._certificates(files, "answer.b64")[0])
        chain = self._certificates(files, "cacerts.b64")
        # The chain file lists the issuing CA first and the self-signed root last.
        chain.sort(key=lambda block: self._self_signed(files, block))
        chain_file = files.work_file("new-chain.pem", "".join(chain))
        anchors = files.work_file("anchors.pem", params["ca_certificates"]) if params["ca_certificates"] else chain_file
        rc, out, err = self._run(
            "verify", "-no-CApath", "-no-CAstore", "-CAfile", anchors, "-untrusted", chain_file, cert
        )
        if rc != 0:
            raise TrustpointError("the EST certificate does not verify: %s" % (err or out).strip())
        summary = self._summary(cert)[0]
        files.install((files.read_work("new.key"), files.read_work("new.pem"), "".join(chain)))
        return summary

    def _self_signed(self, files, block):
        rc, out, _err = self._run("x509", "-in", files.work_file("block.pem", block), "-noout", "-subject", "-issuer")
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
            current = files.work_copy(files.certificate, "current.pem")
            key = files.work_copy(files.key, "current.key")
            return self._est(files, "simplereenroll", current, key, template=current)
        return self._enroll(files, "keyupdate", self._signed_by_own(files))

    def revoke(self, files):
        reason = str(REVOCATION_REASONS[self.module.params["revocation_reason"]])
        args = ["-cmd", "rr", *self._signed_by_own(files),
                "-oldcert", files.work_file("current.pem"), "-revreason", reason]  # fmt: skip
        try:
            self._cmp("revocation", args)
        except TrustpointError as exc:
            if "certRevoked" not in str(exc):  # already revoked is what we want
                raise


# curl's exit codes for an exchange whose answer never came: could not connect, partial answer, timeout, TLS
# connect error, empty reply, send or receive failure.
_CURL_ANSWER_LOST = (7, 18, 28, 35, 52, 55, 56)


def _cmp_answer_lost(output):
    """Whether `openssl cmp` failed because an answer was lost (or the server said to send again), not because
    the server refused or an answer was wrong."""
    if "systemUnavail" in output:
        return True
    if "PKIStatus: rejection" in output or "PKIFailureInfo" in output or "sending" not in output:
        return False  # the server refused, or nothing was sent (a local problem)
    lowered = output.lower()
    return any(marker in lowered for marker in _OPENSSL_ANSWER_LOST)


# What openssl cmp 3.0 prints when the connection closed or failed before an answer was read.
_OPENSSL_ANSWER_LOST = (
    "failed reading data",
    "transfer error",
    "error sending",
    "error receiving",
    "connect error",
    "connection refused",
    "connection reset",
    "timeout",
    "timed out",
    "unexpected eof",
    "server closed",
)


def _last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


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
