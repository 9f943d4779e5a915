# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""services/health.py: a readiness check is a real write, at most one per process every CACHE_SECONDS."""

from __future__ import annotations

from sqlalchemy import event
from trustpoint_server.services import health
from trustpoint_server.storage import migrate
from trustpoint_server.storage.db import make_engine, session_factory


def test_readiness_writes_and_caches(tmp_path, monkeypatch):
    engine = make_engine("sqlite:///%s" % (tmp_path / "t.db"))
    migrate.upgrade(engine)
    writes = []
    event.listen(
        engine, "before_cursor_execute", lambda *args: writes.append(args[2]) if "readiness_probe" in args[2] else None
    )
    now = [1000.0]
    monkeypatch.setattr(health.time, "monotonic", lambda: now[0])
    readiness = health.Readiness(session_factory(engine), str(tmp_path), min_free_space=0)
    for _number in range(10):
        assert readiness.check() == (True, {"database_write": "ok", "free_space": "ok"})
    assert len(writes) == 2  # the UPDATE that found no row, then the INSERT
    now[0] += health.CACHE_SECONDS
    assert readiness.check()[0]
    assert len(writes) == 3 and writes[-1].startswith("UPDATE")

    # Far more free space asked for than any disk has: not ready, and it says why.
    readiness = health.Readiness(session_factory(engine), str(tmp_path), min_free_space=1 << 40)
    ready, checks = readiness.check()
    assert not ready and "MiB free in the data directory's file system" in checks["free_space"]
    engine.dispose()


def test_a_failing_write_is_not_ready(tmp_path, caplog):
    engine = make_engine("sqlite:///%s" % (tmp_path / "t.db"))  # no schema: the write fails
    ready, checks = health.Readiness(session_factory(engine), str(tmp_path), min_free_space=0).check()
    assert not ready and checks["database_write"].startswith("a write transaction fails (OperationalError)")
    # The database's words (here the path's table; elsewhere host and user) reach the log, not the answer.
    assert "no such table" not in checks["database_write"] and str(tmp_path) not in checks["database_write"]
    assert "no such table: readiness_probe" in caplog.text
    engine.dispose()
