# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""bench/cmp_enroll.py's options run: a few requests each, so that they cannot rot unnoticed.

Not a measurement: the numbers are not looked at, only that every answer was a verified ip, that the rows
say what was measured, and that the requests reached every instance. The mock server is skipped (the CMP
tests exercise it), except where the flows are compared with it: that it takes the signed ir is part of it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from bench_runs import CommandLines, bench_process
from conftest import BIN

SMALL = ("--skip-mock", "--requests", "6", "--concurrency", "2", "--warmup", "2", "--calibration-requests", "20")
ENROLL_PATH = "POST /.well-known/cmp/p/bench/initialization"


def run_bench(tmp_path, *options, env=None):
    """(JSON report, stderr, work directory) of one run, every answer fully verified; the work directory is kept in
    tmp_path/work-N."""
    out = tmp_path / ("report-%d.json" % len(list(tmp_path.glob("report-*.json"))))
    result = bench_process(
        "cmp_enroll.py", *SMALL, "--verify-sample", "-1", "--keep", "--json", str(out), *options, env=env
    )
    kept = re.search(r"^kept (\S+)$", result.stderr, re.MULTILINE)
    assert kept, result.stderr[-3000:]
    work = tmp_path / ("work-%s" % out.stem)
    shutil.move(kept.group(1), str(work))
    return json.loads(out.read_text()), result.stderr, work


def enrollment_rows(report):
    rows = [row for row in report["results"] if "config" in row]
    assert rows, report["results"]
    for row in rows:
        assert row["requests"] == 6
        assert row["errors"] == 0, row["error_kinds"]
        assert (row["verified"], row["verify_failures"]) == (6, 0), row["verify_problems"]
        assert row["server_cpu_ms_per_req"] > 0
        assert row["server_cpu_user_ms_per_req"] + row["server_cpu_system_ms_per_req"] > 0
    return rows


def served(data_dir):
    """Enrollments an instance answered (its access log)."""
    return (data_dir / "server.log").read_text(errors="replace").count(ENROLL_PATH)


def test_two_instances_on_a_prefilled_sqlite_database(tmp_path):
    """--prefill with --prefill-dir loads once and is reused; --instances 2 spreads the requests over two
    servers on the one database; --server-args variants are measured apart, side by side (--rounds 2)."""
    prefills = tmp_path / "prefilled"
    options = ("--prefill", "300", "--prefill-devices", "30", "--prefill-domains", "2", "--prefill-dir", str(prefills))
    variants = ("--server-args", "--sqlite-mmap-size 0", "--server-args", "")
    report, stderr, work = run_bench(tmp_path, *options, "--instances", "2", *variants, "--rounds", "2")
    assert "prefilling 300 certificates, 30 devices, 2 domains" in stderr
    rows = enrollment_rows(report)
    assert [row["server_args"] for row in rows] == ["--sqlite-mmap-size 0", ""]
    for row in rows:
        assert row["instances"] == 2 and row["database"] == "SQLite"
        assert row["prefill"] == {"certificates": 300, "devices": 30, "domains": 2}
        assert "db_cpu_ms_per_req" not in row  # SQLite runs inside the server processes
    # Both instances of a configuration answered (warm-up 2 + 6 measured in two slices, round-robin: 4 each).
    for config in (0, 1):
        assert [served(work / ("data-config-%d-%d" % (config, n))) for n in (0, 1)] == [4, 4]
    # The second instance used the first's database: it has no database of its own.
    assert not (work / "data-config-0-1" / "trustpoint.db").exists()

    report, stderr, _work = run_bench(tmp_path, *options)
    assert "reusing the prefilled data directory" in stderr and "prefilling" not in stderr
    assert enrollment_rows(report)[0]["instances"] == 1


def test_two_server_commands_side_by_side(tmp_path):
    """--server-command, repeated: a before/after pair of versions in one run, each row naming its command. Here the
    same trustpoint-server twice, once through a symlink, as two versions would differ in their directories."""
    command = str(BIN / "trustpoint-server")
    other = tmp_path / "other" / "trustpoint-server"
    other.parent.mkdir()
    other.symlink_to(command)
    report, _stderr, _work = run_bench(
        tmp_path, "--server-command", command, "--server-command", str(other), "--rounds", "2"
    )
    rows = enrollment_rows(report)
    assert [row["server_command"] for row in rows] == [command, str(other)]
    assert [row["target"] for row in rows] == ["trustpoint 2w x 2t (%s)" % path for path in (command, other)]
    assert report["settings"]["server_commands"] == [command, str(other)]


def test_two_instances_on_postgresql(tmp_path):
    """--database postgresql: a throwaway cluster of the bench's own (gone afterwards), two instances on it,
    and the database's CPU per enrollment reported apart. The database URL (with the cluster's password) reaches
    the servers through their environment, never a command line that `ps` shows."""
    watch = CommandLines()
    watch.start()
    try:
        report, stderr, work = run_bench(tmp_path, "--database", "postgresql", "--instances", "2", env=watch.env)
    finally:
        command_lines = watch.stop()
    # The commands the bench's servers ran with (after the interpreter and the script: `python trustpoint-server`).
    commands = {
        argv[n + 1] for argv in command_lines for n, arg in enumerate(argv[:-1]) if arg.endswith("/trustpoint-server")
    }
    assert commands >= {"init", "run"}, command_lines
    assert not [argv for argv in command_lines if any(re.match(r"postgres\w*(\+\w+)?://", arg) for arg in argv)]
    (row,) = enrollment_rows(report)
    assert row["database"] == "PostgreSQL" and row["instances"] == 2
    # Reported apart; a few requests may cost the database less than one clock tick (CI saw 0.0).
    assert isinstance(row["db_cpu_ms_per_req"], float) and row["db_cpu_ms_per_req"] >= 0
    assert [served(work / ("data-config-0-%d" % n)) for n in (0, 1)] == [4, 4]
    assert report["settings"]["database"] == ["postgresql"]
    cluster = re.search(r"PostgreSQL cluster in (\S+)", stderr)
    assert cluster, stderr[-2000:]
    assert not Path(cluster.group(1)).exists(), "the bench left its PostgreSQL cluster"


def test_the_three_flows_against_the_mock(tmp_path):
    """--flow pbm-ir,signed-ir,est-enroll: an ir signed with an IDevID and an EST simpleenroll over HTTPS next to
    the PBM ir, each answer verified; the mock takes the signed ir too, and every row of ours names the mock
    figure its CPU ratio is taken against (issue 16: the signed ir against the mock's signed ir, EST against
    the mock's PBM ir) and says MET or NOT MET."""
    out = tmp_path / "report.json"
    # 40 requests: the mock's CPU is read in clock ticks (10 ms), and six of its enrollments may not fill one.
    small = ("--requests", "40", "--concurrency", "2", "--warmup", "2", "--calibration-requests", "20")
    flows = ("--flow", "pbm-ir", "--flow", "signed-ir,est-enroll")
    result = bench_process("cmp_enroll.py", *small, *flows, "--verify-sample", "-1", "--json", str(out))
    report = json.loads(out.read_text())
    assert report["settings"]["flows"] == ["pbm-ir", "signed-ir", "est-enroll"]
    mocks = {row["flow"]: row for row in report["results"] if "config" not in row}
    assert sorted(mocks) == ["pbm-ir", "signed-ir"]
    rows = {row["flow"]: row for row in report["results"] if "config" in row}
    for row in [*mocks.values(), *rows.values()]:
        assert row["requests"] == 40
        assert (row["errors"], row["verified"], row["verify_failures"]) == (0, 40, 0), row["verify_problems"]
    assert sorted(rows) == ["est-enroll", "pbm-ir", "signed-ir"]
    expected = {
        "pbm-ir": (5.0, "openssl mock PBM ir, C=2"),
        "signed-ir": (8.0, "openssl mock signed ir, C=2"),
        "est-enroll": (6.0, "openssl mock PBM ir, C=2"),
    }
    for flow, (target, reference) in expected.items():
        row = rows[flow]
        assert row["cpu_target_ratio"] == target
        # Six requests can take less than one CPU clock tick in the mock: then there is no ratio to take.
        if mocks[flow if flow != "est-enroll" else "pbm-ir"]["server_cpu_ms_per_req"] > 0:
            assert row["cpu_ratio_reference"] == reference
            assert row["cpu_ratio_to_mock"] == row["server_cpu_ms_per_req"] / row["mock_server_cpu_ms_per_req"]
            assert row["cpu_target"] in ("MET", "NOT MET")
            assert "%s -> %s" % ("target <= %gx" % target, row["cpu_target"]) in result.stdout
        else:
            assert row["cpu_target"] == "n/a (no mock run)"
    assert rows["est-enroll"]["target"].endswith(", EST simpleenroll")


def test_the_mock_takes_turns_with_rounds(tmp_path):
    """--rounds R with the mock: the mock's runs interleave with ours slice by slice (MockTarget), so that the CPU
    ratios compare the same moments; its answers are verified as before, and an EST flow beside a PBM ir gets no
    mock run of its own (its reference is the PBM ir's)."""
    out = tmp_path / "report.json"
    small = ("--requests", "40", "--concurrency", "2", "--warmup", "2", "--calibration-requests", "20")
    flows = ("--flow", "pbm-ir,signed-ir,est-enroll", "--rounds", "2")
    result = bench_process("cmp_enroll.py", *small, *flows, "--verify-sample", "-1", "--json", str(out))
    report = json.loads(out.read_text())
    mocks = [row for row in report["results"] if "config" not in row]
    assert sorted((row["target"], row["flow"]) for row in mocks) == [
        ("openssl mock", "pbm-ir"),
        ("openssl mock, signed ir", "signed-ir"),
    ]
    for row in mocks:
        assert (row["requests"], row["errors"], row["verified"], row["verify_failures"]) == (40, 0, 40, 0)
    # The mock ran between our slices, not before our server started: its rows come after ours in the report.
    order = [row["target"] for row in report["results"]]
    assert order.index("openssl mock") > order.index("trustpoint 2w x 2t, PBM ir")
    ours = {row["flow"]: row for row in report["results"] if "config" in row}
    assert sorted(ours) == ["est-enroll", "pbm-ir", "signed-ir"]
    assert ours["pbm-ir"]["rounds"] == 2
    assert "mock server (signed ir)" in result.stderr
