# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""server/db.py: with SQLite, begin_write() holds a write lock (threads, then processes) until the
write transaction ends, however it ends."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from sqlalchemy import exc, select
from trustpoint_server.storage import db as server_db
from trustpoint_server.storage.models import Domain

WAIT = 0.3  # how long a blocked writer is watched to stay blocked


def lock_of(sessions):
    return sessions.kw["info"][server_db._WRITE_LOCK]


def held(sessions):
    return lock_of(sessions).thread_lock.locked()


def add_domain(db_session, name):
    db_session.add(Domain(name=name, key_type="ecdsa-p256", validity_days=1))


def test_lock_file_is_next_to_the_database(sessions, tmp_path):
    assert lock_of(sessions).path == str(tmp_path / "trustpoint.db") + server_db.WRITE_LOCK_SUFFIX


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_held_from_begin_write_until_the_transaction_ends(sessions, tmp_path, end):
    db_session = sessions()
    db_session.scalar(select(Domain))  # a read transaction first: begin_write ends it
    assert not held(sessions)
    server_db.begin_write(db_session)
    assert held(sessions)
    assert (tmp_path / ("trustpoint.db" + server_db.WRITE_LOCK_SUFFIX)).exists()
    add_domain(db_session, "d")
    getattr(db_session, end)()
    assert not held(sessions)
    assert server_db._WRITE_LOCK_HELD not in db_session.info
    with sessions() as check:
        assert check.scalar(select(Domain.name)) == ("d" if end == "commit" else None)


def test_savepoint_does_not_release(sessions):
    with sessions() as db_session:
        server_db.begin_write(db_session)
        with db_session.begin_nested():
            add_domain(db_session, "inner")
        assert held(sessions)
        db_session.commit()
        assert not held(sessions)


def test_reads_after_the_write_do_not_take_it(sessions):
    with sessions() as db_session:
        server_db.begin_write(db_session)
        db_session.commit()
        db_session.scalar(select(Domain))
        assert not held(sessions)


def test_failed_begin_releases(sessions, monkeypatch):
    db_session = sessions()

    def broken(*args, **kwargs):
        raise RuntimeError("no connection")

    monkeypatch.setattr(db_session, "connection", broken)
    with pytest.raises(RuntimeError):
        server_db.begin_write(db_session)
    assert not held(sessions)


def _write_in_thread(sessions, name, started, done):
    def run():
        with sessions() as db_session:
            started.set()
            server_db.begin_write(db_session)
            add_domain(db_session, name)
            db_session.commit()
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_threads_write_one_at_a_time(sessions):
    first = sessions()
    server_db.begin_write(first)
    add_domain(first, "first")
    started, done = threading.Event(), threading.Event()
    thread = _write_in_thread(sessions, "second", started, done)
    started.wait(5)
    assert not done.wait(WAIT), "the second writer did not wait for the first"
    first.commit()
    assert done.wait(10)
    thread.join()
    with sessions() as check:
        assert sorted(check.scalars(select(Domain.name))) == ["first", "second"]


def test_processes_write_one_at_a_time(sessions):
    """Another process holding the lock file's flock (another gunicorn worker) makes begin_write wait."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import fcntl, os, sys
                fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
                fcntl.flock(fd, fcntl.LOCK_EX)
                print("locked", flush=True)
                sys.stdin.readline()
                """
            ),
            lock_of(sessions).path,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started, done = threading.Event(), threading.Event()
        thread = _write_in_thread(sessions, "waiting", started, done)
        started.wait(5)
        assert not done.wait(WAIT), "begin_write did not wait for the other process"
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert done.wait(10)
        thread.join()
    finally:
        holder.kill()
        holder.wait()


def test_thread_lock_gives_up_like_sqlite(sessions, monkeypatch):
    monkeypatch.setattr(server_db, "BUSY_TIMEOUT_SECONDS", 0.05)
    first = sessions()
    server_db.begin_write(first)
    second = sessions()
    started = time.monotonic()
    with pytest.raises(Exception, match="database is locked"):
        server_db.begin_write(second)
    assert time.monotonic() - started < 5
    first.rollback()
    assert not held(sessions)


def test_in_memory_database_has_only_the_thread_lock():
    engine = server_db.make_engine("sqlite://")
    sessions = server_db.session_factory(engine)
    assert lock_of(sessions).path is None
    with sessions() as db_session:
        server_db.begin_write(db_session)
        assert held(sessions)
    assert not held(sessions)


def test_other_databases_get_no_lock():
    pytest.importorskip("psycopg")
    engine = server_db.make_engine("postgresql+psycopg://user@localhost/none")  # never connects
    assert "info" not in server_db.session_factory(engine).kw


@pytest.mark.parametrize(("mib", "expected"), [(0, 0), (64, 64 * 1024 * 1024)])
def test_sqlite_mmap_size_is_what_the_setting_says(tmp_path, mib, expected):
    """sqlite_mmap_size reaches the connections of the server's engine."""
    from trustpoint_server.settings import Settings

    engine = server_db.engine_for(Settings(data_dir=str(tmp_path), sqlite_mmap_size=mib))
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA mmap_size").scalar() == expected
    finally:
        engine.dispose()


def test_an_sqlite_without_update_returning_is_refused(monkeypatch):
    """The enrollment's writes need UPDATE ... RETURNING (SQLite 3.35): an older library is named at start."""
    monkeypatch.setattr(server_db.sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(server_db.sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(ValueError, match=r"SQLite 3\.34\.1 is too old: the server needs SQLite 3\.35 or newer"):
        server_db.make_engine("sqlite://")


def test_the_write_after_a_read_sees_what_others_committed_meanwhile(sessions):
    """begin_write after a read ends the read's snapshot on the same connection: the write transaction reads what
    another writer committed in between (a one-time secret it spent, say)."""
    with sessions() as reader:
        assert reader.scalar(select(Domain.name)) is None  # the read transaction's snapshot: no domain
        with sessions() as other:
            server_db.begin_write(other)
            add_domain(other, "meanwhile")
            other.commit()
        assert reader.scalar(select(Domain.name)) is None  # still the read's snapshot
        server_db.begin_write(reader)
        assert reader.scalar(select(Domain.name)) == "meanwhile"
        reader.rollback()


def test_the_write_after_a_read_holds_sqlites_write_lock(sessions, tmp_path):
    """After the switch, the connection holds SQLite's own write lock too (BEGIN IMMEDIATE): a writer that does not
    take the lock file (an operator's sqlite3 shell) fails at once, and can write once the transaction ends."""
    with sessions() as db_session:
        db_session.scalar(select(Domain))
        server_db.begin_write(db_session)
        outsider = sqlite3.connect(str(tmp_path / "trustpoint.db"), timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                outsider.execute("BEGIN IMMEDIATE")
            db_session.commit()
            outsider.execute("BEGIN IMMEDIATE")
            outsider.execute("ROLLBACK")
        finally:
            outsider.close()


@pytest.mark.parametrize("after_a_read", [False, True])
def test_a_begin_that_fails_raises_sqlalchemys_error_and_releases(sessions, tmp_path, after_a_read):
    """BEGIN IMMEDIATE goes to the driver (issue 16), at the session's first statement or after its read; when
    SQLite refuses it (an outsider holds its write lock past the busy timeout), the error is SQLAlchemy's, as any
    statement's, and the lock file is released."""
    with sessions() as db_session:  # the pooled connection gives up after 50 ms instead of BUSY_TIMEOUT_SECONDS
        db_session.connection().connection.driver_connection.execute("PRAGMA busy_timeout=50")
    outsider = sqlite3.connect(str(tmp_path / "trustpoint.db"), timeout=0, isolation_level=None)
    try:
        outsider.execute("BEGIN IMMEDIATE")
        with sessions() as db_session:
            if after_a_read:
                db_session.scalar(select(Domain))
            with pytest.raises(exc.OperationalError, match="locked"):
                server_db.begin_write(db_session)
            assert not held(sessions)
    finally:
        outsider.close()


def test_begin_write_in_a_write_transaction_commits_it_and_begins_anew(sessions):
    """As a read transaction does: what the first wrote is committed, and the lock taken again (not waited for
    by its own holder)."""
    with sessions() as db_session:
        server_db.begin_write(db_session)
        add_domain(db_session, "first")
        db_session.flush()
        server_db.begin_write(db_session)
        assert held(sessions)
        db_session.rollback()
        assert not held(sessions)
        assert db_session.scalar(select(Domain.name)) == "first"


def test_a_forked_process_waits_for_its_parents_write_lock(sessions):
    """The lock file stays open between transactions; a forked process must not use its parent's descriptor (it
    would share the parent's flock) nor its parent's thread lock (held by a thread that does not run in the child):
    forked while the parent holds the lock, the child gets it only once the parent has released it."""
    lock = lock_of(sessions)
    lock.release(lock.acquire())  # the parent's descriptor is open now
    fd = lock.acquire()
    read_end, write_end = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: reports when it got the lock
        code = 1
        try:
            os.close(read_end)
            child_fd = lock.acquire()
            os.write(write_end, b"%f" % (time.monotonic() - start))
            lock.release(child_fd)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        time.sleep(WAIT)
    finally:
        lock.release(fd)
    with os.fdopen(read_end, "rb") as pipe:
        got_after = float(pipe.read() or b"-1")
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert got_after >= WAIT
    assert lock.acquire() == fd  # the parent keeps its descriptor
    lock.release(fd)


# --- the write-ahead log synced after the write lock -----------------------------------------------------------
NORMAL, FULL = 1, 2  # PRAGMA synchronous


def synchronous(db_session):
    return db_session.connection().exec_driver_sql("PRAGMA synchronous").scalar()


@pytest.fixture
def synced(sessions, monkeypatch):
    """The logs sync_log syncs (for real), each with whether the write lock was held then."""
    calls = []
    real = server_db.sync_log

    def sync_log(path):
        calls.append((path, held(sessions)))
        real(path)

    monkeypatch.setattr(server_db, "sync_log", sync_log)
    return calls


def test_a_write_commits_without_waiting_for_the_disk_and_syncs_its_log_after_the_lock(sessions, tmp_path, synced):
    db_session = sessions()
    assert synchronous(db_session) == FULL  # a read transaction first, as an enrollment's
    server_db.begin_write(db_session)
    assert synchronous(db_session) == NORMAL
    add_domain(db_session, "d")
    db_session.flush()
    assert synced == []
    db_session.commit()
    wal = str(tmp_path / "trustpoint.db-wal")
    assert lock_of(sessions).wal == wal and os.path.exists(wal)
    # Once for the read and the write (one transaction of the session), after the lock was released: the next
    # writer did not wait for it.
    assert synced == [(wal, False)]
    db_session.close()  # nothing used the database since
    assert synced == [(wal, False)]


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_a_transaction_that_only_read_syncs_the_log_too(sessions, tmp_path, synced, end):
    """Another connection sees a relaxed commit before its writer has synced it: a reader syncs the log before it
    goes on to report what it saw."""
    db_session = sessions()
    db_session.scalar(select(Domain))
    assert synced == []
    getattr(db_session, end)()
    assert synced == [(str(tmp_path / "trustpoint.db-wal"), False)]
    db_session.close()
    assert len(synced) == 1


def test_a_session_that_did_not_use_the_database_syncs_nothing(sessions, synced):
    with sessions() as db_session:
        db_session.info["something"] = 1
    assert synced == []


def test_a_write_that_rolls_back_syncs_no_more_than_a_read(sessions, synced):
    db_session = sessions()
    server_db.begin_write(db_session)
    add_domain(db_session, "d")
    db_session.flush()
    db_session.rollback()
    assert len(synced) == 1 and not held(sessions)
    with sessions() as check:
        assert check.scalar(select(Domain.name)) is None


def driver_connection(db_session):
    return db_session.connection().connection.driver_connection


def test_the_connections_next_transaction_commits_with_full_sync(sessions, synced):
    with sessions() as first:
        server_db.begin_write(first)
        used = driver_connection(first)
        add_domain(first, "first")
        first.commit()
    with sessions() as second:  # no begin_write
        assert driver_connection(second) is used  # the pooled connection the write before relaxed
        add_domain(second, "second")
        second.flush()
        assert synchronous(second) == FULL
        second.commit()
    with sessions() as third:
        server_db.begin_write(third)
        assert synchronous(third) == NORMAL
    assert len(synced) == 3


def recording_syncs(monkeypatch):
    """The files sync_log syncs from now on (for real), by the path their descriptor has."""
    fsynced = []
    real = server_db._fdatasync

    def sync(fd):
        fsynced.append(os.readlink("/proc/self/fd/%d" % fd))
        real(fd)

    monkeypatch.setattr(server_db, "_fdatasync", sync)
    return fsynced


def test_sync_log_syncs_the_file_and_passes_over_a_log_already_removed(tmp_path, monkeypatch):
    path = tmp_path / "trustpoint.db-wal"
    path.write_bytes(b"frames")
    fsynced = recording_syncs(monkeypatch)
    server_db.sync_log(str(path))
    server_db.sync_log(str(tmp_path / "checkpointed-and-removed-wal"))
    assert fsynced == [str(path)]


def test_an_in_memory_database_has_no_log_to_sync(synced):
    engine = server_db.make_engine("sqlite://")
    sessions = server_db.session_factory(engine)
    assert lock_of(sessions).wal is None
    with sessions() as db_session:
        server_db.begin_write(db_session)
        assert synchronous(db_session) == FULL
        db_session.commit()
    assert synced == []


def test_the_log_synced_is_the_one_sqlite_writes_next_to_a_linked_database(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "link.db").symlink_to(tmp_path / "real" / "data.db")
    engine = server_db.make_engine("sqlite:///%s" % (tmp_path / "link.db"))
    sessions = server_db.session_factory(engine)
    fsynced = recording_syncs(monkeypatch)
    try:
        with sessions() as db_session:
            server_db.begin_write(db_session)
            db_session.connection().exec_driver_sql("CREATE TABLE t (x)")
            [(_seq, _name, file)] = db_session.connection().exec_driver_sql("PRAGMA database_list").all()
            db_session.commit()
        assert lock_of(sessions).wal == file + "-wal" == str(tmp_path / "real" / "data.db-wal")
        assert fsynced == [file + "-wal"]
    finally:
        engine.dispose()


def test_after_a_failed_sync_the_process_answers_nothing_from_the_database(sessions, monkeypatch, caplog):
    """The commit is already visible when its sync fails, and the kernel reports a write-back error once."""
    monkeypatch.setattr(server_db, "_sync_failed", None)  # restored after the test

    def fail(_fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(server_db, "_fdatasync", fail)
    db_session = sessions()
    server_db.begin_write(db_session)
    add_domain(db_session, "d")
    with pytest.raises(OSError, match="Input/output error"):
        db_session.commit()
    assert not held(sessions)
    assert "cannot sync the database log" in caplog.text
    monkeypatch.setattr(server_db, "_fdatasync", os.fsync)  # the disk answers again: the process still refuses
    reader = sessions()
    reader.scalar(select(Domain.name))
    with pytest.raises(OSError, match=r"an earlier sync of .*trustpoint\.db-wal failed: Input/output error"):
        reader.close()


def test_a_connection_not_in_wal_mode_is_never_relaxed(sessions, synced):
    """Where WAL mode cannot be had (a file system without shared memory), PRAGMA journal_mode=WAL leaves the
    rollback journal: there NORMAL would not sync at all, and no log would be there to sync."""
    with sessions() as db_session:
        info = db_session.connection().connection.info
        assert info[server_db._WAL] is True  # what the connect event read from SQLite for this database file
        info[server_db._WAL] = False  # as it reads it on such a file system
    with sessions() as db_session:
        server_db.begin_write(db_session)
        assert synchronous(db_session) == FULL
