# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""bench/tls_context.py with a few calls: it runs, reads the number of domain CAs it created, prints real numbers
for each domain count, and leaves no data directory behind."""

from __future__ import annotations

import re

from bench_runs import assert_number, bench_process, scratch_environment


def test_tls_context_bench_prints_real_numbers(tmp_path):
    env, scratch = scratch_environment(tmp_path)
    result = bench_process("tls_context.py", "--domains", "1,3", "--calls", "20", env=env)
    assert not list(scratch.iterdir()), "the bench left its data directory behind"
    rows = re.findall(r"^ +(\d+)((?: +\S+){5})$", result.stdout, re.M)
    assert [domains for domains, _figures in rows] == ["1", "3"], result.stdout
    for _domains, figures in rows:
        for value in figures.split():
            assert_number(float(value), least=0.01, what=result.stdout)
