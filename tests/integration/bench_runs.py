# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs of the benchmarks in bench/ for their smoke tests: a few requests each, so that they cannot rot unnoticed.
Not measurements: the tests look at what the reports hold (real numbers, every answer good), not at the values."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench_process(script, *options, timeout=600, env=None):
    """The finished process of bench/<script> with options (stdout and stderr as text), which must have exited 0."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *options],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=str(ROOT), env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def scratch_environment(tmp_path):
    """(environment, directory): the environment of a bench run whose temporary directory is tmp_path/tmp, which
    the bench must leave empty."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    return dict(os.environ, TMPDIR=str(directory)), directory


def assert_number(value, least=0.0, what=""):
    """value is a real, finite number (not a bool, None or NaN) of at least least."""
    assert isinstance(value, (int, float)) and not isinstance(value, bool), (what, value)
    assert math.isfinite(value) and value >= least, (what, value)
    return value


def assert_latencies(latencies, count, what=""):
    """count latencies in seconds, every one of an answered request (a failure is None)."""
    assert len(latencies) == count, (what, latencies)
    for value in latencies:
        assert_number(value, least=1e-6, what=what)


class CommandLines(threading.Thread):
    """While it runs, the command lines (argv lists) of the processes started with its environment (env: every
    process started with it, and their children, carry its marker), as `ps` shows them to every user."""

    def __init__(self):
        super().__init__(daemon=True)
        self.marker = "TP_BENCH_RUN=%s" % uuid.uuid4().hex
        self.env = dict(os.environ, TP_BENCH_RUN=self.marker.split("=", 1)[1])
        self.seen = set()
        self._done = threading.Event()

    def run(self):
        marker = self.marker.encode() + b"\0"
        while not self._done.wait(0.05):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open("/proc/%s/environ" % pid, "rb") as handle:
                        if marker not in handle.read():
                            continue
                    with open("/proc/%s/cmdline" % pid, "rb") as handle:
                        argv = handle.read().split(b"\0")
                except OSError:  # gone meanwhile, or not ours to read
                    continue
                self.seen.add(tuple(arg.decode(errors="replace") for arg in argv if arg))

    def stop(self):
        self._done.set()
        self.join()
        return self.seen
