# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""docs/zero-touch.md's walkthrough, run as written: AOKI and the guided flow on one machine."""

from __future__ import annotations

import os
import re
import subprocess

from conftest import BIN, REPO, free_port


def walkthrough():
    text = (REPO / "docs" / "zero-touch.md").read_text()
    section = text.split("## Try it on one machine", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_the_zero_touch_walkthrough_onboards_two_devices(tmp_path):
    script = walkthrough()
    assert "trustpoint-agent --state-dir state aoki" in script and "agent_command" in script
    for port in ("8443", "8080"):
        script = script.replace("127.0.0.1:" + port, "127.0.0.1:%d" % free_port())
    script = script.replace("T=$(mktemp -d) && cd $T", "cd %s" % tmp_path)
    wrapped = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + script
    env = dict(os.environ, PATH="%s:%s" % (BIN, os.environ["PATH"]))
    result = subprocess.run(
        ["bash", "-c", wrapped], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr + (tmp_path / "server.log").read_text()
    assert result.stdout.count("onboarded with aoki") == 1, result.stdout
    assert result.stdout.count("onboarded with agent") == 1, result.stdout
    assert "trustpoint-agent onboard --url https://127.0.0.1:" in result.stdout
    assert "Traceback" not in result.stderr
