# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Building the collection as a user would: `ansible-galaxy collection build` of a checkout."""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from conftest import BIN, REPO
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat


def _private_key_pem():
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


# What a checkout holds after the README's quickstart and `make setup`, besides the tracked files.
DECOYS = {
    "quickstart/tp-data/admin-token": "tp_0123456789abcdef\n",
    "quickstart/tp-data/vault.key": "k" * 32,
    "quickstart/key.pem": _private_key_pem(),
    "quickstart/device1.json": '{"shared_secret": "s3cret"}\n',
    # where the quickstart of 0.1.0 wrote, in the repository root
    "tp-data/admin-token": "tp_0123456789abcdef\n",
    "tp-data/tls-key.pem": _private_key_pem(),
    "tp-data/trustpoint.db": "SQLite format 3\x00",
    "device1.json": '{"shared_secret": "s3cret"}\n',
    "key.pem": _private_key_pem(),
}
# A PEM private key (a real one: a test's placeholder block is shorter), a database, an archive (which could
# hide either); a token or vault key by its name.
SECRET_CONTENT = re.compile(
    rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\s+[A-Za-z0-9+/=\s]{100,}-----END|^SQLite format 3\x00|^PK\x03\x04", re.M
)
SECRET_NAME = re.compile(r"(^|/)(admin-token|vault\.key|[^/]*\.vault|[^/]*\.db|[^/]*\.key|device1\.json)$")


def checkout_copy(destination: Path) -> Path:
    """The tracked files of the repository, plus the files a user's checkout holds after the quickstart."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if name and (REPO / name).is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target)
    for name, content in DECOYS.items():
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        (destination / name).write_text(content)
    return destination


def build(source: Path, output: Path) -> Path:
    """The tarball `ansible-galaxy collection build` makes of source."""
    output.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", str(source), "--output-path", str(output)],
        capture_output=True,
        text=True,
        check=True,
    )
    (tarball,) = output.glob("trustpoint-pki-*.tar.gz")
    return tarball


def secrets_in(tarball: Path):
    """Members of the tarball that are or hold a private key, token, vault key, database or archive."""
    found = []
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            head = archive.extractfile(member).read()
            if SECRET_NAME.search(member.name) or SECRET_CONTENT.search(head):
                found.append(member.name)
    return found
