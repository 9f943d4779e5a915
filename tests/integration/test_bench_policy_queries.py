# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""bench/policy_queries.py on a small database: it runs, and every row it prints holds real numbers."""

from __future__ import annotations

import re

from bench_runs import assert_number, bench_process, scratch_environment

QUERIES = [
    "peer: device by id",
    "peer: record by fingerprint",
    "daily limit (count, 24 h)",
    "names: own name and DNS name",
    "unconfirmed of the requester",
    "sweep: anything overdue?",
]


def test_policy_queries_bench_prints_real_numbers(tmp_path):
    env, scratch = scratch_environment(tmp_path)
    result = bench_process("policy_queries.py", "--devices", "200", "--certificates", "2000", "--rounds", "30", env=env)
    assert not list(scratch.iterdir()), "the bench left its database behind"
    assert re.search(r"^filled 200 devices, 2000 certificates in \d+ s", result.stdout, re.M), result.stdout
    rows = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^(.*?)\s+(\S+)\s+(\S+)\s+(\S+)$", line)
        if match and match.group(1) in QUERIES:
            rows[match.group(1)] = [float(value) for value in match.groups()[1:]]
    assert list(rows) == QUERIES, result.stdout
    for query, (median_ms, cpu_ms, ratio) in rows.items():
        assert_number(median_ms, least=1e-3, what=query)  # printed with three decimals: a real query is above 0
        assert_number(cpu_ms, least=1e-3, what=query)
        assert_number(ratio, least=0.05, what=query)
