# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs of the benchmarks in bench/ for their smoke tests: a few requests each, so that they cannot rot unnoticed.
Not measurements: the tests look at what the reports hold (real numbers, every answer good), not at the values."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench_process(script, *options, timeout=600):
    """The finished process of bench/<script> with options (stdout and stderr as text), which must have exited 0."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *options],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=str(ROOT),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


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
