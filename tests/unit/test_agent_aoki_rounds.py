# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""`trustpoint-agent aoki` runs unattended: a round that fails in any way (mDNS blocked on a loaded device, an
error nobody foresaw) is logged and tried again after a pause; only a wrong command line ends it at once."""

from __future__ import annotations

import logging
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "agent"))
from trustpoint_agent import cli, discovery
from zeroconf import EventLoopBlocked


@pytest.fixture
def pauses(monkeypatch):
    taken = []
    monkeypatch.setattr(cli.time, "sleep", taken.append)
    monkeypatch.setattr(cli.random, "uniform", lambda low, high: high)  # no jitter: the back-off itself
    return taken


def test_a_failed_round_is_tried_again(tmp_path, monkeypatch, pauses, caplog, capsys):
    rounds = iter([EventLoopBlocked(), RuntimeError("a bug"), []])

    def browse(timeout, interfaces):
        outcome = next(rounds)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(discovery, "_browse", browse)
    argv = ["--state-dir", str(tmp_path / "state"), "aoki", "--factory-dir", str(tmp_path / "factory")]
    with caplog.at_level(logging.INFO, logger="trustpoint_agent"):
        assert cli.main([*argv, "--attempts", "3"]) == 1
    log = caplog.text
    assert "mDNS discovery failed: EventLoopBlocked" in log
    assert "unexpected error (please report it)" in log and "RuntimeError: a bug" in log
    # The third round found no server and then the factory provisioning missing: that is what it says last.
    assert "factory provisioning is incomplete" in capsys.readouterr().err
    assert pauses == [cli.FIRST_WAIT, cli.FIRST_WAIT * 2]


def test_a_wrong_url_ends_it_at_once(tmp_path, pauses, capsys):
    argv = ["--state-dir", str(tmp_path / "state"), "aoki", "--url", "http://server", "--attempts", "3"]
    assert cli.main(argv) == 2
    assert "https://" in capsys.readouterr().err and pauses == []
