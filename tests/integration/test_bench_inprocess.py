# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""bench/inprocess.py with a few requests of each flow: it runs, every answer is what the flow expects (an ip, a
certificate, an error), and each round prints real numbers; its data directory is gone afterwards."""

from __future__ import annotations

import pstats
import re

import pytest
from bench_runs import assert_number, bench_process, scratch_environment


@pytest.mark.parametrize("flow", ["pbm-ir", "est-enroll", "malformed-ir"])
def test_inprocess_bench_prints_real_numbers(tmp_path, flow):
    env, scratch = scratch_environment(tmp_path)
    profile = tmp_path / "out.prof"
    options = ("--flow", flow, "--requests", "4", "--rounds", "2", "--profile", str(profile))
    result = bench_process("inprocess.py", *options, env=env)
    assert not list(scratch.iterdir()), "the bench left its data directory behind"
    rounds = re.findall(r"^round (\d): (\S+), 4 requests, (\S+) ms CPU and (\S+) ms wall per request$", result.stdout,
                        re.M)  # fmt: skip
    assert [(number, name) for number, name, _cpu, _wall in rounds] == [("1", flow), ("2", flow)], result.stdout
    for _number, _name, cpu, wall in rounds:
        assert_number(float(cpu), least=0.01, what="CPU")
        assert_number(float(wall), least=0.01, what="wall")
    assert profile.stat().st_size > 0 and "function calls" in result.stdout


@pytest.mark.parametrize(
    ("flow", "phases"),
    [
        (
            "pbm-ir",
            (
                "PBM key derivation",
                "CMP: verify the request's MAC",
                "DB: end the read, begin the write",
                "DB: commit",
                "DB: device, domain, CAs",
                "driver: execute (storage/sql.py)",
                "driver: commit",
            ),
        ),
        (
            "est-enroll",
            (
                "EST: authenticate",
                "EST: password check",
                "EST: PKCS#7 answer",
                "DB: the URL's domain, CAs",
                "DB: device, domain, CAs",
                "DB: record the certificate",
            ),
        ),
    ],
)
def test_phases_split_a_requests_cpu(tmp_path, flow, phases):
    env, _scratch = scratch_environment(tmp_path)
    result = bench_process("inprocess.py", "--flow", flow, "--requests", "6", "--phases", env=env)
    total = float(re.search(r"^CPU per phase, 6 requests, (\S+) ms each:$", result.stdout, re.M).group(1))
    lines = dict(re.findall(r"^  (.+?) +(-?\d+\.\d+) ms +\S+ %$", result.stdout, re.M))
    for phase in phases:  # each timed function was reached, through whatever name its callers imported it by
        assert_number(float(lines[phase]), least=0.001, what=phase)
    if flow == "pbm-ir":  # every statement on the driver's cursor, BEGIN included: none through SQLAlchemy's execute
        assert "driver: execute" not in lines, result.stdout
    # The phases leave out what they call: with the rest they add up to the request, none counted twice.
    assert abs(sum(float(value) for value in lines.values()) - total) < 0.01, result.stdout
    assert_number(float(lines["rest (WSGI, test client, between phases)"]), least=0.0, what="rest")


@pytest.mark.parametrize("flow", ["pbm-ir", "est-enroll"])
@pytest.mark.parametrize("through_flask", [False, True], ids=["ahead-of-flask", "through-flask"])
def test_inprocess_bench_measures_the_path_it_names(tmp_path, flow, through_flask):
    """The CMP and EST requests of the profiled round enter Flask's request dispatch only with --through-flask."""
    env, _scratch = scratch_environment(tmp_path)
    profile = tmp_path / "out.prof"
    options = ("--flow", flow, "--requests", "3", "--profile", str(profile))
    bench_process("inprocess.py", *options + (("--through-flask",) if through_flask else ()), env=env)
    functions = {name for _file, _line, name in pstats.Stats(str(profile)).stats}
    assert ("full_dispatch_request" in functions) == through_flask
    assert "respond" in functions
