# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""CredentialFiles (trustpoint.pki.enroll's file writer) never writes through a name another user could swap."""

from __future__ import annotations

import os

import pytest
from trustpoint_core._ansible.enroll_backends import (
    CredentialFiles,
    FileError,
    unsafe_directory,
)


class Failed(Exception):
    pass


class FakeModule:
    def __init__(self, directory, tmpdir):
        self.params = {
            "key_path": str(directory / "dc.key"),
            "certificate_path": str(directory / "dc.pem"),
            "chain_path": str(directory / "chain.pem"),
        }
        self.tmpdir = str(tmpdir)

    def fail_json(self, msg, **_kwargs):
        raise Failed(msg)

    def selinux_enabled(self):
        return False


@pytest.fixture
def files(tmp_path):
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    files = CredentialFiles(FakeModule(credentials, work))
    yield files
    files.cleanup()


def test_a_swapped_temporary_file_is_not_installed_and_nothing_is_written_through_it(files, tmp_path):
    """A staged file replaced by a link between staging and installing (possible only where another user may
    write, which check_safe refuses): the content goes to the module's own file, the link is not moved into
    place, and the previous credential stays."""
    credentials = tmp_path / "credentials"
    for name in ("dc.key", "dc.pem", "chain.pem"):
        (credentials / name).write_text("previous %s\n" % name)
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    files.stage()
    _dir_fd, name, _fd = files.staged[1]
    os.unlink(credentials / name)
    os.symlink(victim, credentials / name)
    with pytest.raises(FileError, match=r"replaced by someone else.*previous credential files were restored"):
        files.install((b"KEY", b"CERTIFICATE", b"CHAIN"))
    assert victim.read_text() == "victim\n"
    for name in ("dc.key", "dc.pem", "chain.pem"):
        assert (credentials / name).read_text() == "previous %s\n" % name
        assert not (credentials / name).is_symlink()


def test_install_writes_through_descriptors_with_the_modes(files, tmp_path):
    credentials = tmp_path / "credentials"
    files.stage()
    files.install((b"KEY", "CERTIFICATE", "CHAIN"))
    assert (credentials / "dc.key").read_bytes() == b"KEY"
    assert (credentials / "dc.key").stat().st_mode & 0o777 == 0o600
    assert (credentials / "dc.pem").stat().st_mode & 0o777 == 0o644
    files.cleanup()
    assert sorted(p.name for p in credentials.iterdir()) == ["chain.pem", "dc.key", "dc.pem"]


def test_reads_do_not_follow_links(files, tmp_path):
    credentials = tmp_path / "credentials"
    (credentials / "dc.key").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").write_text("secret of someone else")
    with pytest.raises(OSError):
        files.read(str(credentials / "dc.key"))
    with pytest.raises(Failed, match="is a symbolic link"):
        files.check_safe()


def test_unsafe_directories(tmp_path):
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o700)
    assert unsafe_directory(str(safe)) is None
    safe.chmod(0o770)
    assert "may be written to by other users (mode 0770)" in unsafe_directory(str(safe))
    safe.chmod(0o700)
    # The owner must be root or the user the module runs as.
    if os.geteuid() == 0:
        os.chown(safe, 65534, 65534)
        assert "%s belongs to user id 65534" % safe in unsafe_directory(str(safe))
        os.chown(safe, 0, 0)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    inner = sticky / "inner"
    inner.mkdir(mode=0o700)
    assert unsafe_directory(str(inner)) is None
    sticky.chmod(0o777)
    assert "%s may be written to by other users (mode 0777)" % sticky in unsafe_directory(str(inner))
