# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""trustpoint-agent's state directory: a credential is replaced as a unit, also across a crash; nothing is
written through a symbolic link; a directory that others may write to is refused."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "agent"))
from trustpoint_agent import files


def credential_files(path):
    return sorted(name for name in os.listdir(path) if name != files.LOCK)


def test_install_replaces_the_files_together_with_modes(tmp_path):
    state = files.StateDir(tmp_path / "state").ensure()
    state.install({files.KEY: b"key-1", files.CERT: b"cert-1", files.STATE: b"{}"})
    state.install({files.KEY: b"key-2", files.CERT: b"cert-2"})
    assert state.read(files.KEY) == b"key-2" and state.read(files.CERT) == b"cert-2"
    assert (tmp_path / "state" / files.KEY).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state" / files.CERT).stat().st_mode & 0o777 == 0o644
    assert credential_files(tmp_path / "state") == [files.CERT, files.KEY, files.STATE]


def test_a_crash_after_the_marker_is_finished_by_the_next_run(tmp_path, monkeypatch):
    state = files.StateDir(tmp_path / "state").ensure()
    state.install({files.KEY: b"old-key", files.CERT: b"old-cert"})
    real_rename = os.rename

    def crash_after_the_key(src, dst, **kwargs):
        if dst == files.CERT:  # the key is in place, the certificate not yet
            raise KeyboardInterrupt("power cut")
        return real_rename(src, dst, **kwargs)

    monkeypatch.setattr(os, "rename", crash_after_the_key)
    with pytest.raises(KeyboardInterrupt):
        state.install({files.KEY: b"new-key", files.CERT: b"new-cert"})
    monkeypatch.setattr(os, "rename", real_rename)
    # Half-way: the new key, the old certificate, and the marker naming the staged rest.
    assert state.read(files.KEY) == b"new-key" and state.read(files.CERT) == b"old-cert"
    assert state.read(files.PENDING) is not None
    files.StateDir(tmp_path / "state").ensure()  # the next command of the agent
    assert state.read(files.KEY) == b"new-key" and state.read(files.CERT) == b"new-cert"
    assert credential_files(tmp_path / "state") == [files.CERT, files.KEY]


def test_a_crash_before_the_marker_leaves_the_old_credential(tmp_path, monkeypatch):
    state = files.StateDir(tmp_path / "state").ensure()
    state.install({files.KEY: b"old-key", files.CERT: b"old-cert"})
    real_rename = os.rename

    def crash_at_the_marker(src, dst, **kwargs):
        if dst == files.PENDING:
            raise KeyboardInterrupt("power cut")
        return real_rename(src, dst, **kwargs)

    monkeypatch.setattr(os, "rename", crash_at_the_marker)
    with pytest.raises(KeyboardInterrupt):
        state.install({files.KEY: b"new-key", files.CERT: b"new-cert"})
    monkeypatch.setattr(os, "rename", real_rename)
    files.StateDir(tmp_path / "state").ensure()
    assert state.read(files.KEY) == b"old-key" and state.read(files.CERT) == b"old-cert"
    assert not any(name.startswith(".staging-") for name in os.listdir(tmp_path / "state"))


def test_a_reader_beside_an_installing_command_leaves_its_installation_alone(tmp_path, monkeypatch):
    """`trustpoint-agent status` (any command's start, StateDir.ensure) finishes or sweeps an installation only
    when no other command holds the state directory: beside an installing aoki it swept the staging directory
    before the marker was there (a zero-touch device came out without its owner.pem)."""
    state = files.StateDir(tmp_path / "state").ensure()
    state.install({files.KEY: b"old-key", files.CERT: b"old-cert", files.OWNER: b"old-owner"})
    real_rename = os.rename
    looked = []

    def status_before_the_marker(src, dst, **kwargs):
        if dst == files.PENDING and not looked:
            looked.append(files.StateDir(tmp_path / "state").ensure())  # another process's status, right now
        return real_rename(src, dst, **kwargs)

    monkeypatch.setattr(os, "rename", status_before_the_marker)
    with state.locked() as held:
        assert held
        state.install({files.KEY: b"new-key", files.CERT: b"new-cert", files.OWNER: b"new-owner"})
    assert looked
    assert [state.read(name) for name in (files.KEY, files.CERT, files.OWNER)] == [
        b"new-key",
        b"new-cert",
        b"new-owner",
    ]
    assert credential_files(tmp_path / "state") == [files.CERT, files.KEY, files.OWNER]


def test_links_and_open_directories_are_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"secret")
    state = files.StateDir(tmp_path / "state").ensure()
    os.symlink(target, tmp_path / "state" / files.KEY)
    with pytest.raises(files.FilesError):
        state.read(files.KEY, required=True)
    state.install({files.KEY: b"new-key"})  # replaces the link itself
    assert target.read_bytes() == b"secret"
    assert not (tmp_path / "state" / files.KEY).is_symlink()

    os.symlink(tmp_path / "state", tmp_path / "linked")
    with pytest.raises(files.FilesError, match="not a directory"):
        files.StateDir(tmp_path / "linked").ensure()
    (tmp_path / "open").mkdir()
    os.chmod(tmp_path / "open", 0o777)  # noqa: S103 (the misconfiguration under test)
    with pytest.raises(files.FilesError, match="writable by another user"):
        files.StateDir(tmp_path / "open").ensure()
    (tmp_path / "listable").mkdir(mode=0o755)
    files.StateDir(tmp_path / "listable").ensure()
    assert (tmp_path / "listable").stat().st_mode & 0o777 == 0o700


def test_a_revoke_interrupted_after_its_record_is_finished_by_the_next(tmp_path):
    """revoke writes state.json first, then deletes the files: after a crash in between the credential counts as
    gone (aoki, renew and status do not use it), and revoke run again deletes what is left."""
    from trustpoint_agent.onboarding import Agent

    state = files.StateDir(tmp_path / "state").ensure()
    revoked = b'{"revoked_at": "2026-12-06T10:00:00Z", "revoked_serial_number": "1f"}'
    state.install({files.KEY: b"key", files.CERT: b"cert", files.CHAIN: b"chain", files.STATE: revoked})
    agent = Agent(state)
    assert agent.credential() is None and agent.valid_credential() is None
    deleted = ", ".join(str(tmp_path / "state" / name) for name in (files.KEY, files.CERT, files.CHAIN))
    assert agent.revoke() == "already revoked: 1f at 2026-12-06T10:00:00Z\ndeleted " + deleted
    assert credential_files(tmp_path / "state") == [files.STATE]
    assert agent.revoke() == "already revoked: 1f at 2026-12-06T10:00:00Z"  # nothing left: nothing said


def test_a_revoke_waits_for_the_command_that_holds_the_state_directory(tmp_path):
    """The commands that change the credential take turns (StateDir.locked): a revoke during an aoki round waits
    for the round's end, so the round cannot install a credential after the device was decommissioned."""
    import subprocess
    import time

    state = files.StateDir(tmp_path / "state").ensure()
    command = [sys.executable, "-m", "trustpoint_agent.cli", "--state-dir", str(tmp_path / "state"), "revoke",
               "--unit-dir", str(tmp_path / "units"), "--cron-file", str(tmp_path / "cron")]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO / "agent"))
    with state.locked():
        revoke = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while revoke.poll() is None and time.monotonic() < deadline:
            with open("/proc/%d/wchan" % revoke.pid) as wchan:  # what the process sleeps in (Linux)
                if "lock" in wchan.read():
                    break
            time.sleep(0.05)
        waited = revoke.poll() is None and state.read(files.STATE) is None
    out, err = revoke.communicate(timeout=60)
    assert waited, ("revoke did not wait for the lock", out, err)
    assert revoke.returncode == 0 and out.startswith("decommissioned: "), (out, err)
    assert (tmp_path / "state" / files.LOCK).stat().st_mode & 0o777 == 0o600


def _credential(name):
    """A key and its certificate under a root of its own, as PEM: (key, certificate, chain)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, public_key, signing_key, ca):
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signing_key, hashes.SHA256())
        )

    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = certificate(name + " root", name + " root", root_key.public_key(), root_key, True)
    leaf = certificate(name, name + " root", key.public_key(), root_key, False)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {files.KEY: key_pem, files.CERT: leaf.public_bytes(pem), files.CHAIN: root.public_bytes(pem)}


def test_status_beside_a_command_moving_a_credential_in_reports_the_new_one(tmp_path, monkeypatch):
    """`status` takes no lock: read between the moves of the new key and of its certificate, it said "the
    certificate is not for its key" (not onboarded). It reads again until no move is under way."""
    import threading

    from trustpoint_agent.onboarding import Agent

    state = files.StateDir(tmp_path / "state").ensure()
    state.install({**_credential("old"), files.STATE: b'{"method": "aoki"}'})
    new = _credential("new")
    real_rename = os.rename
    key_moved, looked = threading.Event(), threading.Event()

    def pause_after_the_key(src, dst, **kwargs):
        real_rename(src, dst, **kwargs)
        if dst == files.KEY and threading.current_thread() is not threading.main_thread():
            key_moved.set()
            looked.wait(0.3)  # `status` reads now, the old certificate still in place

    monkeypatch.setattr(os, "rename", pause_after_the_key)
    installer = threading.Thread(target=state.install, args=(new,))
    installer.start()
    assert key_moved.wait(10)
    report = Agent(files.StateDir(tmp_path / "state")).status(settle_seconds=10)
    looked.set()
    installer.join()
    assert "problem" not in report, report
    assert report["onboarded"] and report["certificate"]["subject"] == "CN=new"


def test_status_says_when_the_files_keep_changing(tmp_path, monkeypatch):
    from trustpoint_agent.onboarding import Agent

    state = files.StateDir(tmp_path / "state").ensure()
    state.install(_credential("device"))
    (tmp_path / "state" / files.PENDING).write_text(".staging-000000000000")  # a move under way, never ending
    report = Agent(state).status(settle_seconds=0.2)
    assert "kept changing the credential" in report["problem"]
