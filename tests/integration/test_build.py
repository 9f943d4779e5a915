# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection a user builds from a checkout holds no secret: no private key, token, vault key or database.

tests/fixtures/release-0.1.0 (a 0.1.0 data directory with its keys, token and database, for the upgrade test)
is excluded from the build (galaxy.yml build_ignore), as is everything the quickstart writes.
"""

from __future__ import annotations

import tarfile

from collection_build import DECOYS, build, checkout_copy, secrets_in


def test_build_holds_no_secret(tmp_path):
    tarball = build(checkout_copy(tmp_path / "checkout"), tmp_path / "dist")
    assert secrets_in(tarball) == []
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    # The build still has what a user needs: the role, the playbooks, the modules and their docs.
    for name in (
        "roles/device_onboarding/tasks/main.yml",
        "roles/device_onboarding/meta/argument_specs.yml",
        "playbooks/onboard_devices.yml",
        "plugins/modules/enroll.py",
        "plugins/module_utils/cmp_client.py",
        "meta/runtime.yml",
    ):
        assert name in names


def test_secret_scan_finds_what_it_must(tmp_path):
    """The scan itself: a tarball with a key, a token and a database inside is caught."""
    root = tmp_path / "c"
    root.mkdir()
    (root / "a.pem").write_text(DECOYS["key.pem"])
    (root / "admin-token").write_text("x")
    (root / "data.bin").write_bytes(b"SQLite format 3\x00rest")
    (root / "ok.txt").write_text("harmless")
    tarball = tmp_path / "t.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        for path in root.iterdir():
            archive.add(path, arcname=path.name)
    assert sorted(secrets_in(tarball)) == ["a.pem", "admin-token", "data.bin"]
