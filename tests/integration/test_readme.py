# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The README's quickstart, run as written: a newcomer's first contact must work."""

from __future__ import annotations

import json
import re
import subprocess

from conftest import BIN, REPO, free_port, openssl


def quickstart_block():
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_readme_quickstart_onboards_a_device(tmp_path):
    """The quickstart's commands start a server, onboard device1 with openssl cmp and verify it."""
    script = quickstart_block()
    assert "openssl cmp -cmd ir" in script and "-ref $ID -secret pass:$SECRET" in script
    assert "https://127.0.0.1:8443" in script and "--listen-plain 127.0.0.1:8080" in script
    for port in ("8443", "8080"):  # HTTPS, plain HTTP (CMP)
        script = script.replace("127.0.0.1:" + port, "127.0.0.1:%d" % free_port())
    script = script.replace(".venv/bin/", str(BIN) + "/")
    # Afterwards, ask the server what it recorded.
    script += 'curl -sf -H "Authorization: Bearer $TOKEN" $URL/api/v1/devices > devices.json\n'
    wrapped = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + script
    result = subprocess.run(
        ["bash", "-c", wrapped], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cert.pem: OK" in result.stdout
    (device,) = json.loads((tmp_path / "devices.json").read_text())
    assert device["name"] == "device1" and device["status"] == "onboarded"
    serial = openssl("x509", "-in", str(tmp_path / "cert.pem"), "-noout", "-serial").stdout.split("=")[1]
    assert device["credential"]["serial_number"] == serial.strip().lower().lstrip("0")
