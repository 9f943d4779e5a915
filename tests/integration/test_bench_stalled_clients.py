# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""bench/stalled_clients.py with 60 stalled connections for a few seconds: it runs, and its report holds real
numbers."""

from __future__ import annotations

import json

from bench_runs import assert_latencies, assert_number, bench_process, scratch_environment

OPERATIONS = ["API GET /domains (HTTPS)", "CMP ir (plain HTTP)", "EST simpleenroll (HTTPS)"]
KINDS = ["plain-body", "plain-head", "plain-idle", "tls-body", "tls-byte", "tls-head"]
REQUESTS = 2


def test_stalled_clients_bench_reports_real_numbers(tmp_path):
    out = tmp_path / "report.json"
    small = ("--stalled", "60", "--requests", str(REQUESTS), "--attack-seconds", "4", "--workers", "1")
    env, scratch = scratch_environment(tmp_path)
    result = bench_process("stalled_clients.py", *small, "--json", str(out), env=env)
    assert not list(scratch.iterdir()), "the bench left its work directory behind"
    report = json.loads(out.read_text())
    assert sorted(report["operations"]) == OPERATIONS
    for operation, row in report["operations"].items():
        assert_latencies(row["quiet_s"], REQUESTS, operation)
        assert_latencies(row["attacked_s"], REQUESTS, operation)
        for field in ("quiet_p50_ms", "attacked_max_ms"):
            assert_number(row[field], least=1e-3, what=(operation, field))
        assert_number(row["delay_ms"], least=-row["quiet_p50_ms"], what=operation)
        assert isinstance(row["met"], bool)
    assert sorted(report["attack"]) == KINDS
    for kind, row in report["attack"].items():
        assert row["closed"] == len(row["lifetimes_s"])
        for lifetime in row["lifetimes_s"]:
            assert_number(lifetime, what=kind)
    assert_number(report["quiet_cpu_ms_per_op"], least=1e-3)
    assert_number(report["attack_cpu_cores"])
    assert isinstance(report["met"], bool)
    assert "Stalled connections held: mean" in result.stdout
    assert "Target (issue 11: no legitimate request delayed by more than 1 s): " in result.stdout
