# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""runtime/vault.py: where the vault key comes from (issue 11, "Secrets at rest"), and rotation's inventory."""

from __future__ import annotations

import base64
import os

import pytest
from trustpoint_server.runtime import rotation, vault
from trustpoint_server.storage.models import Base

KEY = bytes(range(32))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in (vault.KEY_ENVIRONMENT, "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("form", [KEY, base64.b64encode(KEY) + b"\n", KEY.hex().encode() + b"\n"])
def test_a_key_file_holds_raw_base64_or_hex_bytes(tmp_path, form):
    path = tmp_path / "key"
    path.write_bytes(form)
    path.chmod(0o600)
    assert vault.key_source(str(tmp_path / "data"), str(path)).read() == KEY


def test_the_default_is_the_data_directory(tmp_path):
    source = vault.key_source(str(tmp_path))
    assert (source.kind, source.path) == ("file", str(tmp_path / "vault.key"))
    assert vault.create_key_file(source.path) and not vault.create_key_file(source.path)
    assert oct(os.stat(source.path).st_mode & 0o777) == "0o600"
    assert len(source.read()) == 32


def test_environment_and_systemd_credential(tmp_path, monkeypatch):
    monkeypatch.setenv(vault.KEY_ENVIRONMENT, base64.b64encode(KEY).decode())
    source = vault.key_source(str(tmp_path))
    assert source.kind == "environment" and source.read() == KEY
    monkeypatch.delenv(vault.KEY_ENVIRONMENT)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / vault.CREDENTIAL).write_bytes(KEY)
    (credentials / vault.CREDENTIAL).chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    source = vault.key_source(str(tmp_path))
    assert source.kind == "systemd" and source.read() == KEY


def test_two_sources_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(vault.KEY_ENVIRONMENT, KEY.hex())
    with pytest.raises(vault.VaultError, match="given 2 ways"):
        vault.key_source(str(tmp_path), str(tmp_path / "key"))


def test_a_key_file_others_may_read_is_refused(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(KEY)
    path.chmod(0o640)
    with pytest.raises(vault.VaultError, match=r"may be read or written by others \(mode 0640\); chmod 600"):
        vault.key_source(str(tmp_path), str(path)).read()


@pytest.mark.parametrize("content", [b"", b"short", b"x" * 33, base64.b64encode(b"y" * 16)])
def test_what_is_not_a_key_is_refused(tmp_path, content):
    path = tmp_path / "key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(vault.VaultError, match="does not hold a vault key"):
        vault.key_source(str(tmp_path), str(path)).read()


def test_rotation_knows_every_encrypted_column():
    """Every column named *_encrypted is declared in its model's __encrypted__, so rotation re-encrypts it."""
    declared = {(model.__tablename__, column) for model, column, _purpose in rotation.encrypted_columns()}
    named = {
        (table.name, column.name)
        for table in Base.metadata.tables.values()
        for column in table.columns
        if column.name.endswith("_encrypted")
    }
    assert named and named == declared
