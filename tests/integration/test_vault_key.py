# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Secrets at rest (issue 11): the vault key outside the data directory (a file, the environment, a systemd
credential) and `trustpoint-server rotate-vault-key`, which re-encrypts every stored secret: the domains' CA
keys, the devices' one-time secrets, the DevOwnerIDs' keys (AOKI) and the TLS CA key. After each, the real
server issues with the CA keys, onboards a pending device with its secret, and reissues its TLS certificate with
the TLS CA key."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess

import pytest
from aoki_helpers import Aoki
from cmp_helpers import PkiDomain, assert_cmp_ok, enroll_with_secret, new_key_file, run_cmp
from conftest import BIN, Server, free_port
from trustpoint_server.runtime import rotation, vault
from trustpoint_server.settings import Settings

CLI = str(BIN / "trustpoint-server")


def _blobs(data):
    """Every vault-encrypted value at rest: the database's and the TLS CA key file."""
    db = sqlite3.connect("file:%s?mode=ro" % (data / "trustpoint.db"), uri=True)
    try:
        rows = db.execute("SELECT private_key_encrypted FROM certificate_authority ORDER BY id").fetchall()
        rows += db.execute(
            "SELECT secret_encrypted FROM device WHERE secret_encrypted IS NOT NULL ORDER BY id"
        ).fetchall()
        rows += db.execute("SELECT private_key_encrypted FROM owner_credential ORDER BY id").fetchall()
    finally:
        db.close()
    return [row[0] for row in rows] + [(data / "tls-ca-key.vault").read_bytes()]


def _works(server, domain, device, secret, workdir):
    """The server decrypts what it needs: the CA key (issue), the device's secret (onboard), and, at its init,
    the TLS CA key (the server certificate was reissued for the new --tls-san: it names it)."""
    domain.server = server  # the domain's URLs point at this (restarted) server
    enroll_with_secret(server, domain, "after", device=device, secret=secret)
    assert server.device(device["id"])["status"] == "onboarded"
    tls = (server.data_dir / "tls-cert.pem").read_text()
    from cryptography import x509 as cx509

    certificate = cx509.load_pem_x509_certificates(tls.encode())[0]
    names = certificate.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
    assert "rotated.example" in names.get_values_for_type(cx509.DNSName)


def _run_fails(data, *args, env=None):
    result = subprocess.run(
        [CLI, "run", "--data-dir", str(data), "--listen", "127.0.0.1:%d" % free_port(), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode != 0
    return result.stderr


def test_a_key_file_outside_the_data_directory_and_its_rotation(tmp_path, workdir):
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    key = keys / "vault.key"
    data = tmp_path / "data"
    option = ["--vault-key-file", str(key)]
    server = Server(data, free_port(), extra_args=option, init_args=option)
    try:
        assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"
        assert not (data / "vault.key").exists(), "the data directory holds no key"
        domain = PkiDomain(server, workdir)
        device, secret = server.create_device(domain.name)
        Aoki(server, tmp_path / "aoki", devices=1)  # a second domain and a DevOwnerID
    finally:
        server.stop()
    # Without the key the server does not start, and says where it looked.
    assert "the vault key %s is missing" % (data / "vault.key") in _run_fails(data)

    before = _blobs(data)
    result = subprocess.run([CLI, "rotate-vault-key", "--data-dir", str(data), *option], capture_output=True,
                            text=True, check=True)  # fmt: skip
    assert "re-encrypted 4 ca-key, 1 device-secret, 1 owner-key, 1 tls-ca-key" in result.stdout, result.stdout
    after = _blobs(data)
    assert all(old != new for old, new in zip(before, after)), "every secret is re-encrypted"
    (retired,) = keys.glob("vault.key.retired-*")
    old, new = (
        vault.Vault(vault.KeySource("file", str(retired)).read()),
        vault.Vault(vault.KeySource("file", str(key)).read()),
    )
    assert old.decrypt(before[0], "ca-key") == new.decrypt(after[0], "ca-key")
    assert old.decrypt(before[-2], "owner-key") == new.decrypt(after[-2], "owner-key")
    with pytest.raises(vault.VaultError):
        old.decrypt(after[0], "ca-key")

    server = Server(data, free_port(), extra_args=option, init_args=[*option, "--tls-san", "rotated.example"])
    try:
        _works(server, domain, device, secret, workdir)
    finally:
        server.stop()


def test_a_key_from_the_environment_or_a_systemd_credential(tmp_path, workdir, monkeypatch):
    data = tmp_path / "data"
    key = os.urandom(32)
    monkeypatch.setenv(vault.KEY_ENVIRONMENT, base64.b64encode(key).decode())
    server = Server(data, free_port())
    try:
        assert not (data / "vault.key").exists()
        domain = PkiDomain(server, workdir)
        device, secret = server.create_device(domain.name)
    finally:
        server.stop()
    # Two sources at once: refused, naming both.
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / vault.CREDENTIAL).write_bytes(key)
    (credentials / vault.CREDENTIAL).chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert "the vault key is given 2 ways" in _run_fails(data)

    # Rotation writes the new key where it is told; the operator installs it (here: as the systemd credential).
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    result = subprocess.run([CLI, "rotate-vault-key", "--data-dir", str(data)], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode != 0 and "--new-vault-key-file" in result.stderr
    new_key = tmp_path / "new.key"
    subprocess.run([CLI, "rotate-vault-key", "--data-dir", str(data), "--new-vault-key-file", str(new_key)],
                   capture_output=True, text=True, check=True)  # fmt: skip
    monkeypatch.delenv(vault.KEY_ENVIRONMENT)
    (credentials / vault.CREDENTIAL).chmod(0o600)
    (credentials / vault.CREDENTIAL).write_bytes(new_key.read_bytes())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    server = Server(data, free_port(), init_args=["--tls-san", "rotated.example"])
    try:
        _works(server, domain, device, secret, workdir)
    finally:
        server.stop()


def test_an_interrupted_rotation_is_finished_by_running_it_again(tmp_path, workdir, monkeypatch):
    """The rotation stops after the database and the TLS CA key were re-encrypted, before the key file is
    replaced: the service cannot decrypt them with the old key, so it is not started; rotate-vault-key run again
    takes the new key it wrote and finishes."""
    data = tmp_path / "data"
    server = Server(data, free_port())
    try:
        domain = PkiDomain(server, workdir)
        enrolled = enroll_with_secret(server, domain, "first")
        device, secret = server.create_device(domain.name)
    finally:
        server.stop()
    before = _blobs(data)

    def interrupted(*_args, **_kwargs):
        raise OSError("power failure")

    monkeypatch.setattr(rotation.os, "link", interrupted)
    with pytest.raises(OSError, match="power failure"):
        rotation.rotate(Settings(data_dir=str(data)))
    monkeypatch.undo()
    assert (data / "vault.key.new").exists() and _blobs(data) != before

    result = subprocess.run([CLI, "rotate-vault-key", "--data-dir", str(data)], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert "took the new vault key" in result.stdout and "re-encrypted nothing" in result.stdout, result.stdout
    assert not (data / "vault.key.new").exists()
    server = Server(data, free_port(), init_args=["--tls-san", "rotated.example"])
    try:
        _works(server, domain, device, secret, workdir)
        # The device onboarded before renews: its record, signed by the CA, is intact.
        returncode, output = run_cmp(
            "-cmd", "kur", "-server", domain.url("keyupdate"), *enrolled.signer_args(domain),
            "-newkey", new_key_file(workdir / "renewed.key"), "-certout", workdir / "renewed.pem",
        )  # fmt: skip
        assert_cmp_ok(returncode, output)
    finally:
        server.stop()


def test_init_again_after_the_key_was_moved_out_asks_for_it(tmp_path):
    """docs/server.md moves DATA/vault.key out; `init` run again without --vault-key-file wrote a new key beside
    the data it encrypts none of, then failed, and other commands advised exactly that `init`. Both now say to
    give the key that was moved, and nothing is written."""
    data = tmp_path / "data"
    subprocess.run([str(BIN / "trustpoint-server"), "init", "--data-dir", str(data)], check=True, capture_output=True)
    (data / vault.KEY_FILE).rename(tmp_path / "vault.key")
    mistyped = ["--vault-key-file", str(tmp_path / "vault.kye")]
    for command in (["init"], ["operator", "list"], ["init", *mistyped], ["operator", "list", *mistyped]):
        result = subprocess.run([str(BIN / "trustpoint-server"), *command, "--data-dir", str(data)],
                                capture_output=True, text=True, check=False)  # fmt: skip
        assert result.returncode != 0 and "give that key with --vault-key-file" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and not (data / vault.KEY_FILE).exists()
        assert not (tmp_path / "vault.kye").exists()
    subprocess.run([str(BIN / "trustpoint-server"), "init", "--data-dir", str(data), "--vault-key-file",
                    str(tmp_path / "vault.key")], check=True, capture_output=True)  # fmt: skip
