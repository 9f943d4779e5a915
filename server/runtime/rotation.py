# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""`trustpoint-server rotate-vault-key`: encrypt every stored secret under a new vault key.

What the vault encrypts: the columns a model lists in its __encrypted__ ({column: purpose}: CA keys, device
secrets, ...) and the files of ENCRYPTED_FILES in the data directory (the TLS CA key). Run it with the service
stopped; every step can be repeated after an interruption:

1. the new key: --new-vault-key-file (read if it exists, else created), or, for a key file, <key file>.new;
2. one database transaction re-encrypts every column: a secret that the new key already decrypts (an earlier,
   interrupted run) is left as it is, one that neither key decrypts stops the rotation with nothing changed;
3. each encrypted file is replaced atomically;
4. a key file is replaced by the new key (atomically); the old one stays beside it as
   <key file>.retired-<UTC time> for the backups made before, until those are gone.

With the key in the environment or a systemd credential the operator installs the new key there.
"""

from __future__ import annotations

import datetime
import os

from sqlalchemy import select

from ..storage.db import begin_write, engine_for, session_factory
from ..storage.models import Base
from . import tls
from .vault import KeySource, Vault, VaultError, create_key_file, key_source

# Files of the data directory encrypted with the vault: name -> purpose.
ENCRYPTED_FILES = {tls.CA_KEY_FILE: tls.VAULT_PURPOSE}


def encrypted_columns():
    """(model, column, purpose) of every column the models declare encrypted."""
    found = []
    for mapper in Base.registry.mappers:
        for column, purpose in getattr(mapper.class_, "__encrypted__", {}).items():
            found.append((mapper.class_, column, purpose))
    return sorted(found, key=lambda item: (item[0].__name__, item[1]))


def _reencrypt(blob, purpose, old, new):
    """blob under the new key: (blob, True) re-encrypted, or (blob, False) when new already decrypts it."""
    try:
        return new.encrypt(old.decrypt(blob, purpose), purpose), True
    except VaultError:
        pass
    try:
        new.decrypt(blob, purpose)
    except VaultError:
        raise VaultError(
            "a stored %s decrypts with neither the current nor the new vault key; nothing was changed" % purpose
        ) from None
    return blob, False


def rotate(settings, new_key_file=None, now=None):
    """Re-encrypt every stored secret under a new key; returns the lines to print."""
    source = key_source(settings.data_dir, settings.vault_key_file)
    old = Vault(source.read())
    swap = new_key_file is None
    if swap:
        if source.kind != "file":
            raise VaultError(
                "the vault key comes from %s: give --new-vault-key-file PATH to write the new key to, and install "
                "it there once the rotation is done" % source
            )
        new_key_file = source.path + ".new"
    new_key_file = os.path.abspath(new_key_file)
    created = create_key_file(new_key_file)
    new = Vault(KeySource("file", new_key_file).read())
    lines = ["%s the new vault key %s" % ("created" if created else "took", new_key_file)]

    # The encrypted files first, in memory: one that decrypts with neither key stops the rotation before the
    # database changes.
    files = {}
    for name, purpose in ENCRYPTED_FILES.items():
        path = os.path.join(settings.data_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as handle:
                files[path] = (purpose, *_reencrypt(handle.read(), purpose, old, new))

    engine = engine_for(settings)
    counts = {}
    try:
        with session_factory(engine)() as db:
            begin_write(db)
            for model, column, purpose in encrypted_columns():
                attribute = getattr(model, column)
                for row in db.scalars(select(model).where(attribute.is_not(None))):
                    blob, changed = _reencrypt(getattr(row, column), purpose, old, new)
                    setattr(row, column, blob)
                    counts[purpose] = counts.get(purpose, 0) + changed
            db.commit()
    finally:
        engine.dispose()
    for path, (purpose, blob, changed) in files.items():
        if changed:
            tls.write_atomically(path, blob, 0o600)
        counts[purpose] = counts.get(purpose, 0) + changed
    lines.append(
        "re-encrypted %s"
        % (", ".join("%d %s" % (n, purpose) for purpose, n in sorted(counts.items()) if n) or "nothing")
    )

    if swap:
        stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
        retired = "%s.retired-%s" % (source.path, stamp)
        if not os.path.exists(retired):  # a second rotation within the same second keeps the first old key
            os.link(source.path, retired)  # the old key stays in place until the new one replaces it
        os.replace(new_key_file, source.path)
        lines.append(
            "%s holds the new key; the old one is in %s: keep it with the backups made before now, then delete it"
            % (source.path, retired)
        )
    else:
        lines.append(
            "install the new key %s where the service reads its key (%s) before starting it; keep the old key with "
            "the backups made before now" % (new_key_file, source)
        )
    return lines
