# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The device's files: what the factory put there, and the credential the agent keeps.

    factory dir (default /etc/trustpoint-agent), read only:
        idevid.pem  idevid.key  [idevid-chain.pem]      the IDevID, its key, its intermediates
        owner-truststore.pem                           the owner's trust anchor(s): who may own the device
    state dir (default /var/lib/trustpoint-agent), written by the agent, 0700:
        key.pem (0600)  cert.pem  chain.pem             the domain credential (LDevID) and its chain
        tls-truststore.pem                             the server's TLS trust, pinned when onboarding
        owner.pem                                      the DevOwnerID accepted (AOKI: anti-rollback)
        state.json                                     server, protocol, URLs, method; a revocation
        .lock                                          the commands that change the credential take turns

A new credential replaces the old one as a unit, crash-safe: the new files are written and synced in a
staging directory, a `.pending` marker naming it is renamed into place, and only then are the files
moved; an interrupted move is finished by the next run of any command (roll forward) that finds the state
directory's lock free: a process that holds it may be installing right now (and finishes its own). Nothing is
written through a symbolic link, and a state directory that another user may write to is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat

KEY = "key.pem"
CERT = "cert.pem"
CHAIN = "chain.pem"
TLS_TRUSTSTORE = "tls-truststore.pem"
OWNER = "owner.pem"
STATE = "state.json"
PENDING = ".pending"
LOCK = ".lock"
PRIVATE = (KEY,)
# The order of the final moves: the key first, so that a certificate never names a key that is not there.
ORDER = (KEY, CERT, CHAIN, TLS_TRUSTSTORE, OWNER, STATE)
MAX_READ = 1 << 20


class FilesError(Exception):
    """A file of the device cannot be read or written; the message names it and says what to do."""


def _nofollow():
    return getattr(os, "O_NOFOLLOW", 0)


def read(path, required=True):
    """The bytes of a file (not through a symbolic link), or None when it does not exist and not required."""
    try:
        fd = os.open(path, os.O_RDONLY | _nofollow() | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if required:
            raise FilesError("%s does not exist" % path) from None
        return None
    except OSError as exc:
        raise FilesError("cannot read %s: %s" % (path, exc.strerror or exc)) from exc
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_READ + 1)
    if len(data) > MAX_READ:
        raise FilesError("%s is larger than %d bytes" % (path, MAX_READ))
    return data


class StateDir:
    """The agent's state directory."""

    def __init__(self, path):
        self.path = os.path.abspath(path)

    def file(self, name):
        return os.path.join(self.path, name)

    def ensure(self):
        """Create the directory (0700) if needed; refuse one that is a link, or writable by others."""
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            info = os.lstat(self.path)
        except OSError as exc:
            raise FilesError("cannot create the state directory %s: %s" % (self.path, exc.strerror or exc)) from exc
        if not stat.S_ISDIR(info.st_mode):
            raise FilesError("the state directory %s is not a directory (a symbolic link?)" % self.path)
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise FilesError(
                "the state directory %s is writable by another user (owner uid %d, mode %04o); it holds a private "
                "key: make it owned by uid %d with mode 0700"
                % (self.path, info.st_uid, info.st_mode & 0o7777, os.geteuid())
            )
        if info.st_mode & 0o077:
            os.chmod(self.path, 0o700)  # ours, and it holds the key: nobody else needs to list it
        # Only while nobody holds the lock: a `status` beside an installing aoki swept its staging directory
        # before the marker was there, or raced it moving the files (a credential installed without owner.pem).
        with self.locked(wait=False) as held:
            if held:
                self.recover()
        return self

    @contextlib.contextmanager
    def locked(self, wait=True):
        """The state directory's lock (an flock on its .lock file), held by each command while it changes the
        credential: aoki, onboard, renew and revoke take turns (a revoke during an aoki round waits for its end,
        and the next round sees the device decommissioned). Yields whether it holds the lock: without wait, False
        when another process (or another open of the lock in this one) holds it."""
        dir_fd = self._dir_fd()
        try:
            fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | _nofollow() | getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the flock

    def _dir_fd(self):
        return os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _nofollow())

    def read(self, name, required=False):
        return read(self.file(name), required)

    def version(self):
        """What changes whenever a command installs or removes credential files: each file's inode and mtime
        (a rename puts another inode in place), and whether a .pending move is under way."""
        seen = []
        for name in (*ORDER, PENDING):
            try:
                info = os.lstat(self.file(name))
            except OSError:
                seen.append(None)
                continue
            seen.append((info.st_ino, info.st_mtime_ns))
        return tuple(seen)

    def state(self):
        data = self.read(STATE)
        if data is None:
            return {}
        try:
            value = json.loads(data.decode("utf-8"))
        except ValueError as exc:
            raise FilesError("%s is not JSON: %s" % (self.file(STATE), exc)) from exc
        return value if isinstance(value, dict) else {}

    def install(self, contents):
        """Replace the files named in contents ({name: bytes}) as one unit (see the module documentation)."""
        dir_fd = self._dir_fd()
        try:
            staging = ".staging-" + secrets.token_hex(6)
            os.mkdir(staging, 0o700, dir_fd=dir_fd)
            stage_fd = os.open(staging, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _nofollow(), dir_fd=dir_fd)
            try:
                for name, data in contents.items():
                    mode = 0o600 if name in PRIVATE else 0o644
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _nofollow(), mode, dir_fd=stage_fd)
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(data)
                        handle.flush()
                        os.fchmod(handle.fileno(), mode)  # whatever the umask
                        os.fsync(handle.fileno())
                os.fsync(stage_fd)
            finally:
                os.close(stage_fd)
            marker = PENDING + ".tmp"
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _nofollow(), 0o600, dir_fd=dir_fd)
            with os.fdopen(fd, "w") as handle:
                handle.write(staging)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(marker, PENDING, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
        except OSError as exc:
            raise FilesError("cannot write the new credential to %s: %s" % (self.path, exc.strerror or exc)) from exc
        finally:
            os.close(dir_fd)
        self.recover()

    def remove(self, names):
        """Delete the files named (those present), the first one first: the key goes before what names it.
        Returns the names it deleted."""
        removed = []
        dir_fd = self._dir_fd()
        try:
            for name in names:
                try:
                    os.unlink(name, dir_fd=dir_fd)  # unlink never follows a link
                except FileNotFoundError:
                    continue
                removed.append(name)
            os.fsync(dir_fd)
        except OSError as exc:
            raise FilesError("cannot delete the credential in %s: %s" % (self.path, exc.strerror or exc)) from exc
        finally:
            os.close(dir_fd)
        return removed

    def recover(self):
        """Finish an installation that a crash interrupted (the .pending marker names its staging dir)."""
        marker = self.read(PENDING)
        if marker is None:
            self._sweep()
            return
        staging = marker.decode("ascii", "replace").strip()
        if not staging.startswith(".staging-") or "/" in staging:
            raise FilesError("%s is corrupt; remove it" % self.file(PENDING))
        dir_fd = self._dir_fd()
        try:
            names = os.listdir(os.path.join(self.path, staging)) if os.path.isdir(self.file(staging)) else []
            for name in sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
                os.rename(os.path.join(staging, name), name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
            os.unlink(PENDING, dir_fd=dir_fd)
            if names or os.path.isdir(self.file(staging)):
                os.rmdir(staging, dir_fd=dir_fd)
            os.fsync(dir_fd)
        except OSError as exc:
            raise FilesError("cannot finish installing the credential in %s: %s" % (self.path, exc)) from exc
        finally:
            os.close(dir_fd)
        self._sweep()

    def _sweep(self):
        """Remove staging directories no marker names (a crash before the marker: nothing was installed)."""
        try:
            leftovers = [n for n in os.listdir(self.path) if n.startswith(".staging-")]
        except OSError:
            return
        for name in leftovers:
            directory = self.file(name)
            try:
                for entry in os.listdir(directory):
                    os.unlink(os.path.join(directory, entry))
                os.rmdir(directory)
            except OSError:
                pass
