# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""trustpoint.pki.enroll on a device where another user is hostile (issue 11, "Device-side files").

Each test plays an attack of a user (nobody) against a module run as root: a credential file that is a link
to that user's file, a credential directory (or one above it) that user may write to or owns, a temporary file
swapped for a link while the module works. The module refuses before it contacts the server (the one-time
secret stays unspent) and writes nothing through the link.
"""

from __future__ import annotations

import os
import pwd
import stat

import pytest
from conftest import openssl
from test_enroll_lifecycle import BACKENDS, _task
from test_modules import run_tasks

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attacks need root to play another user")
NOBODY = pwd.getpwnam("nobody")


def _victim(directory):
    """A file of the other user, with content the attack would replace or expose."""
    victim = directory / "victim"
    victim.write_text("nobody's file\n")
    os.chown(victim, NOBODY.pw_uid, NOBODY.pw_gid)
    victim.chmod(0o644)
    return victim


def _untouched(victim):
    status = victim.stat()
    content = victim.read_text()
    return content == "nobody's file\n" and status.st_uid == NOBODY.pw_uid and status.st_mode & 0o777 == 0o644


def _onboard(server, directory, backend, **extra):
    domain = server.create_domain()
    device, secret = server.create_device(domain["name"])
    task = _task(server, domain, directory, backend, device_id=device["id"], shared_secret=secret, **extra)
    return device, task


# The refusals come before either backend reads a file: each backend once, each file once.
@pytest.mark.parametrize(
    ("link", "backend"), [("dc.key", "python"), ("dc.key", "openssl"), ("dc.pem", "openssl"), ("chain.pem", "python")]
)
def test_a_credential_file_that_is_a_link_is_refused(server, workdir, backend, link):
    """Observed: the new key was chowned to the link target's owner (nobody could read root's key). Now a link
    is refused before anything is read or sent, in check mode too, and its target stays as it was."""
    credentials = workdir / "credentials"
    credentials.mkdir(mode=0o700)
    victim = _victim(workdir)
    (credentials / link).symlink_to(victim)
    device, task = _onboard(server, credentials, backend)
    for check in (True, False):
        failed = run_tasks(workdir, [task], check=check, expect_failure=True)["enroll"]
        assert "%s is a symbolic link" % (credentials / link) in failed["msg"], failed["msg"]
        assert not failed["changed"]
    assert _untouched(victim)
    assert (credentials / link).is_symlink()
    assert server.device(device["id"])["status"] == "pending", "the secret was not spent"


@pytest.mark.parametrize("backend", ["python"])
def test_a_directory_another_user_may_write_to_is_refused(server, workdir, backend):
    """Observed: staged temporary files were reopened by name, so a user who may write to the directory could
    swap one for a link and have root write the new key anywhere. Such a directory is now refused."""
    credentials = workdir / "shared"
    credentials.mkdir()
    device, task = _onboard(server, credentials, backend)
    cases = [
        (lambda: credentials.chmod(0o777), "%s may be written to by other users (mode 0777)" % credentials),
        (lambda: credentials.chmod(0o775), "%s may be written to by other users (mode 0775)" % credentials),
        (lambda: os.chown(credentials, NOBODY.pw_uid, 0), "%s belongs to user id %d" % (credentials, NOBODY.pw_uid)),
    ]
    for make_unsafe, problem in cases:
        credentials.chmod(0o755)
        os.chown(credentials, 0, 0)
        make_unsafe()
        failed = run_tasks(workdir, [task], expect_failure=True)["enroll"]
        assert problem in failed["msg"] and "not safe for credentials" in failed["msg"], failed["msg"]
        assert not failed["changed"]
        assert not list(credentials.iterdir()), "nothing was written"
    assert server.device(device["id"])["status"] == "pending", "the secret was not spent"

    # Safe again: the same secret onboards.
    credentials.chmod(0o700)
    os.chown(credentials, 0, 0)
    assert run_tasks(workdir, [task])["enroll"]["action"] == "enroll"


@pytest.mark.parametrize("backend", ["openssl"])
def test_a_directory_above_that_another_user_may_write_to_is_refused(server, workdir, backend):
    """Who may rename a directory above the credentials may replace the credential directory itself; the sticky
    bit (as on /tmp) prevents that for directories the module's user owns."""
    above = workdir / "above"
    above.mkdir()
    credentials = above / "credentials"
    credentials.mkdir(mode=0o700)
    device, task = _onboard(server, credentials, backend)
    above.chmod(0o777)
    failed = run_tasks(workdir, [task], expect_failure=True)["enroll"]
    assert "%s may be written to by other users (mode 0777)" % above in failed["msg"], failed["msg"]
    assert server.device(device["id"])["status"] == "pending"
    # A link on the way that another user owns is refused too.
    above.chmod(0o1777)
    link = workdir / "via-link"
    link.symlink_to(credentials)
    os.chown(link, NOBODY.pw_uid, NOBODY.pw_gid, follow_symlinks=False)
    linked = dict(task, **{"trustpoint.pki.enroll": dict(task["trustpoint.pki.enroll"])})
    for name in ("key_path", "certificate_path", "chain_path"):
        linked["trustpoint.pki.enroll"][name] = str(link / os.path.basename(task["trustpoint.pki.enroll"][name]))
    failed = run_tasks(workdir, [linked], expect_failure=True)["enroll"]
    assert "%s is a symbolic link of user id %d" % (link, NOBODY.pw_uid) in failed["msg"], failed["msg"]
    # Sticky and the credential directory root's: safe.
    assert run_tasks(workdir, [task])["enroll"]["action"] == "enroll"


@pytest.mark.parametrize("backend", BACKENDS)
def test_replaced_files_keep_their_owner_and_the_key_stays_private(server, workdir, backend):
    """The new files take the owner of the regular files they replace (lchown-like, through their descriptors),
    and the key is 0600 whatever the old file's mode was."""
    credentials = workdir / "credentials"
    credentials.mkdir(mode=0o755)
    for name in ("dc.key", "dc.pem", "chain.pem"):
        (credentials / name).write_text("old\n")
        os.chown(credentials / name, NOBODY.pw_uid, NOBODY.pw_gid)
        (credentials / name).chmod(0o644)
    _device, task = _onboard(server, credentials, backend)
    result = run_tasks(workdir, [task])["enroll"]
    assert result["action"] == "enroll", result
    for name, mode in (("dc.key", 0o600), ("dc.pem", 0o644), ("chain.pem", 0o644)):
        status = os.lstat(credentials / name)
        assert stat.S_ISREG(status.st_mode) and status.st_uid == NOBODY.pw_uid, name
        assert status.st_mode & 0o777 == mode, (name, oct(status.st_mode))
    openssl("verify", "-CAfile", str(credentials / "chain.pem"), str(credentials / "dc.pem"))
    assert not [p.name for p in credentials.iterdir() if p.name.startswith(".trustpoint-")]
