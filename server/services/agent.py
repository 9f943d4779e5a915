# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The device agent (trustpoint-agent): the one-time onboarding token of an `agent` device, the one command
that onboards it, and the wheels the server hands out at /agent/.

A token is `<device id>.<secret>[.<pin>]`: the device id is the CMP reference, the secret protects the
agent's CMP ir with a MAC (it never travels), and the pin (core aoki.pin) names the anchor of the server's
TLS chain, so that the agent trusts the server before it sends anything.
"""

from __future__ import annotations

import hashlib
import os
import re

from trustpoint_core import aoki as aoki_format

from .aoki import tls_truststore

WHEELS_DIR = "agent-wheels"  # in the data directory, unless --agent-wheels names another
PROGRAM = "trustpoint-agent"
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,200}\.(whl|tar\.gz|zip)")


def token(device, secret, settings):
    """The onboarding token of device for its secret (with the pin of the server's TLS anchor)."""
    parts = [str(device.id), secret]
    truststore = tls_truststore(settings)
    if truststore:
        parts.append(aoki_format.pin(truststore[0]))
    return ".".join(parts)


def command(base_url, onboarding_token):
    """The exact command an operator pastes on the device (one place formats it: API, module, pages)."""
    return "%s onboard --url %s --token %s" % (PROGRAM, base_url.rstrip("/"), onboarding_token)


def shown_once(device, secrets, settings, base_url):
    """What the API shows of a freshly issued secret: an agent device's token becomes the full token and
    the command that uses it; other kinds stay as they are."""
    if "onboarding_token" not in secrets:
        return secrets
    value = token(device, secrets["onboarding_token"], settings)
    return {"onboarding_token": value, "agent_command": command(base_url, value)}


# --- the wheels at /agent/ --------------------------------------------------------------------------


def wheels_dir(settings):
    return settings.agent_wheels or os.path.join(settings.data_dir, WHEELS_DIR)


def wheels(settings):
    """[(file name, sha256 hex, size)] of the distributions in the wheels directory, by name."""
    directory = wheels_dir(settings)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    found = []
    for name in names:
        path = os.path.join(directory, name)
        if not _FILE_NAME.fullmatch(name) or not os.path.isfile(path):
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 16), b""):
                digest.update(block)
        found.append((name, digest.hexdigest(), os.path.getsize(path)))
    return found


def wheel_path(settings, name):
    """The path of one distribution of the wheels directory, or None (never outside it)."""
    if not _FILE_NAME.fullmatch(name):
        return None
    path = os.path.join(wheels_dir(settings), name)
    return path if os.path.isfile(path) else None
