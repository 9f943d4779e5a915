# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""bench/failed_auth.py with two attackers for two seconds: it runs, and its report holds real numbers."""

from __future__ import annotations

import json

from bench_runs import assert_latencies, assert_number, bench_process, scratch_environment

OPERATIONS = ["API GET /domains (HTTPS)", "CMP ir (plain HTTP)", "EST simpleenroll (HTTPS)"]
REQUESTS = 2


def test_failed_auth_bench_reports_real_numbers(tmp_path):
    out = tmp_path / "report.json"
    small = ("--attackers", "2", "--attack-rate", "4", "--attack-seconds", "2", "--requests", str(REQUESTS))
    env, scratch = scratch_environment(tmp_path)
    result = bench_process("failed_auth.py", *small, "--workers", "1", "--json", str(out), env=env)
    assert not list(scratch.iterdir()), "the bench left its work directory behind"
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["no budgets", "defaults"]
    for name, configuration in report["results"].items():
        assert sorted(configuration["quiet"]) == OPERATIONS
        for operation, latencies in configuration["quiet"].items():
            assert_latencies(latencies, REQUESTS, (name, "quiet", operation))
        assert_number(configuration["quiet_cpu_ms_per_op"], least=1e-3, what=name)
        assert sorted(configuration["attacks"]) == ["cmp", "est"]
        for kind, attack in configuration["attacks"].items():
            what = (name, kind)
            # Every legitimate operation of the attack was answered, in one half or the other.
            for operation in OPERATIONS:
                halves = [attack["attacked"][half][operation] for half in ("first half", "second half")]
                assert_latencies(halves[0] + halves[1], REQUESTS, (*what, operation))
            assert attack["requests"] > 0 and sum(attack["answers"].values()) == attack["requests"], attack
            assert not [outcome for outcome in attack["answers"] if outcome.startswith(("error", "HTTP"))], attack
            for field in ("seconds", "server_cores", "cpu_ms_per_attacker_request"):
                assert_number(attack[field], what=(*what, field))
            assert len(attack["server_cores_halves"]) == 2
            for cores in attack["server_cores_halves"]:
                assert_number(cores, what=what)
    for line in ("Legitimate operations (2 of each kind per phase)", "The attackers' requests", "(milliseconds)"):
        assert line in result.stdout
    # One printed row per configuration, attack and operation, with its p50 / max in milliseconds.
    rows = [line for line in result.stdout.splitlines() if line.startswith(("no budgets", "defaults"))]
    assert len(rows) == 2 * 2 * len(OPERATIONS) + 2 * 2, result.stdout
