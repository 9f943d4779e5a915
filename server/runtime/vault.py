# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Encryption at rest for CA keys and device secrets (AES-256-GCM under the vault key).

The key is never in the database: a copy of the database alone reveals no secret. It comes from exactly one
of (key_source):

- a file: DATA/vault.key by default, or --vault-key-file / $TRUSTPOINT_VAULT_KEY_FILE, for example on another
  volume than the data directory, so that a copy of the data directory holds no key either;
- the environment: $TRUSTPOINT_VAULT_KEY (base64 or hex of the 32 bytes);
- a systemd credential named trustpoint-vault-key (LoadCredential= or LoadCredentialEncrypted=, which systemd
  puts in $CREDENTIALS_DIRECTORY).

A key file is 32 raw bytes or their base64 or hex, and readable by its owner only. Several server instances
sharing one database share the key. runtime/rotation.py replaces it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

KEY_FILE = "vault.key"
KEY_ENVIRONMENT = "TRUSTPOINT_VAULT_KEY"
CREDENTIAL = "trustpoint-vault-key"
KEY_SIZE = 32
_VERSION = b"\x01"


class VaultError(Exception):
    pass


def parse_key(data, where):
    """The 32 key bytes of a key file's or variable's content: raw, base64 or hex."""
    if len(data) == KEY_SIZE:
        return bytes(data)
    text = data.strip()
    for decode in (lambda t: base64.b64decode(t, validate=True), binascii.unhexlify):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_SIZE:
            return key
    raise VaultError("%s does not hold a vault key: 32 bytes, or their base64 or hex" % where)


class KeySource:
    """Where the vault key comes from: kind is "file" (path), "environment" or "systemd" (path)."""

    def __init__(self, kind, path=None):
        self.kind = kind
        self.path = path

    def __str__(self):
        if self.kind == "environment":
            return "$" + KEY_ENVIRONMENT
        if self.kind == "systemd":
            return "the systemd credential %s (%s)" % (CREDENTIAL, self.path)
        return self.path

    def read(self):
        if self.kind == "environment":
            return parse_key(os.environ[KEY_ENVIRONMENT].encode(), "$" + KEY_ENVIRONMENT)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise VaultError("the vault key %s is missing" % self) from None
        except OSError as exc:
            raise VaultError("cannot read the vault key %s: %s" % (self, exc.strerror)) from None
        with os.fdopen(fd, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if self.kind == "file" and mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise VaultError(
                    "the vault key %s may be read or written by others (mode %04o); chmod 600 it"
                    % (self, mode & 0o7777)
                )
            return parse_key(handle.read(), str(self))


def key_source(data_dir, key_file=None):
    """The one place the vault key comes from (see the module's documentation); VaultError when several are
    configured, which would leave it unclear which key encrypts."""
    sources = []
    if key_file:
        sources.append(KeySource("file", os.path.abspath(key_file)))
    if os.environ.get(KEY_ENVIRONMENT):
        sources.append(KeySource("environment"))
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and os.path.exists(os.path.join(credentials, CREDENTIAL)):
        sources.append(KeySource("systemd", os.path.join(credentials, CREDENTIAL)))
    if len(sources) > 1:
        raise VaultError("the vault key is given %d ways (%s); give one" % (len(sources), ", ".join(map(str, sources))))
    if sources:
        return sources[0]
    return KeySource("file", os.path.join(os.path.abspath(data_dir), KEY_FILE))


def encrypted_files(data_dir):
    """The files of data_dir encrypted with the vault key (they end in .vault): a data directory that has one
    needs its key, not a new one."""
    try:
        return sorted(name for name in os.listdir(data_dir) if name.endswith(".vault"))
    except OSError:
        return []


def missing_key_advice(data_dir, key_path, key_file=None):
    """What to do when the vault key file is missing: init for a new data directory; for one that holds
    encrypted files, give the key that encrypted them (a new one would decrypt nothing)."""
    held = encrypted_files(data_dir)
    if held:
        return (
            "%s holds %s, encrypted with a vault key that is not at %s: give that key with --vault-key-file or $%s "
            "(a new key would decrypt nothing)" % (data_dir, ", ".join(held), key_path, KEY_ENVIRONMENT)
        )
    given = " --vault-key-file " + key_path if key_file else ""
    return "run `trustpoint-server init --data-dir %s%s`" % (data_dir, given)


def create_key_file(path):
    """Write a new random key to path (0600) unless it exists. Returns True if it wrote one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(os.urandom(KEY_SIZE))
        handle.flush()
        os.fsync(handle.fileno())
    return True


class Vault:
    def __init__(self, key):
        if len(key) != KEY_SIZE:
            raise VaultError("the vault key must be %d bytes" % KEY_SIZE)
        self._aead = AESGCM(key)
        self._key = key

    @classmethod
    def load(cls, data_dir, key_file=None):
        source = key_source(data_dir, key_file)
        try:
            vault = cls(source.read())
        except VaultError as exc:
            if source.kind == "file" and not os.path.exists(source.path):
                raise VaultError("%s; %s" % (exc, missing_key_advice(data_dir, source.path, key_file))) from None
            raise
        in_data_dir = os.path.join(os.path.abspath(data_dir), KEY_FILE)
        if source.path != in_data_dir and os.path.exists(in_data_dir):
            log.warning(
                "the vault key comes from %s, yet %s exists: delete it once it is kept elsewhere, so that a copy of "
                "the data directory holds no key",
                source,
                in_data_dir,
            )
        return vault

    def encrypt(self, plaintext, purpose):
        """Encrypt bytes; purpose (e.g. "device-secret") is bound as associated data."""
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, purpose.encode())

    def decrypt(self, blob, purpose):
        if not blob or blob[:1] != _VERSION:
            raise VaultError("unknown vault format")
        try:
            return self._aead.decrypt(blob[1:13], blob[13:], purpose.encode())
        except InvalidTag:
            raise VaultError("cannot decrypt %s: wrong vault key or corrupted data" % purpose) from None

    def derive_key(self, purpose, length=32):
        """A key for purpose (e.g. signing the web pages' session cookies), derived with HKDF-SHA256: every
        server instance with this vault key derives the same one, and it changes with the vault key."""
        return HKDF(hashes.SHA256(), length, salt=None, info=b"trustpoint:" + purpose.encode()).derive(self._key)
