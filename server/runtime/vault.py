# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Encryption at rest for CA keys and device secrets (AES-256-GCM under the data directory's key).

The key lives in DATA/vault.key (mode 0600), outside the database: a copy of the database alone
reveals no secret. Several server instances sharing one database share this file too.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_FILE = "vault.key"
_VERSION = b"\x01"


class VaultError(Exception):
    pass


class Vault:
    def __init__(self, key):
        if len(key) != 32:
            raise VaultError("the vault key must be 32 bytes")
        self._aead = AESGCM(key)
        self._key = key

    @classmethod
    def load(cls, data_dir):
        path = os.path.join(data_dir, KEY_FILE)
        try:
            with open(path, "rb") as handle:
                return cls(handle.read())
        except FileNotFoundError:
            raise VaultError("%s is missing; run `trustpoint-server init --data-dir %s`" % (path, data_dir)) from None

    @staticmethod
    def create_key_file(data_dir):
        """Write a new key file (0600) unless one exists. Returns True if it wrote one."""
        path = os.path.join(data_dir, KEY_FILE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(32))
        return True

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
