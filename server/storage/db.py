# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Database engine and the per-request session."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import weakref

from flask import current_app, g
from sqlalchemy import create_engine, event, exc, func, select
from sqlalchemy.orm import make_transient_to_detached, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "trustpoint.db"
# How long a SQLite writer waits for the write lock before it fails ("database is locked").
BUSY_TIMEOUT_SECONDS = 15
WRITE_LOCK_SUFFIX = ".writelock"
# The PostgreSQL advisory lock (any bigint; this one is "TP" and a version) all write transactions take.
POSTGRESQL_WRITE_LOCK_KEY = 0x5450_0001


def database_url(data_dir, url=None):
    """The configured URL, or SQLite in the data directory."""
    return url or "sqlite:///" + os.path.join(os.path.abspath(data_dir), DEFAULT_DATABASE)


def engine_for(settings):
    """The engine of the settings' database."""
    return make_engine(
        database_url(settings.data_dir, settings.database_url), sqlite_mmap_mib=settings.sqlite_mmap_size
    )


# UPDATE ... RETURNING (the enrollment's writes) came with SQLite 3.35; SQLAlchemy leaves it out before.
MIN_SQLITE = (3, 35)


def make_engine(url, sqlite_mmap_mib=0):
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ValueError(
                "SQLite %s is too old: the server needs SQLite %d.%d or newer (Debian 12 and Ubuntu 22.04 have it), "
                "or PostgreSQL (--database-url)" % (sqlite3.sqlite_version, *MIN_SQLITE)
            )
        # A connection reads B-tree pages again after another connection wrote (every enrollment of another
        # thread or worker does), with a read call per 4 KiB page, or, mapped, with none: at a million
        # certificates 68 read calls per enrollment instead of 30. Off by default: no CPU difference could
        # be measured (bench/README.md, "Flat with size"), and through the map an I/O error on the file
        # kills the worker (SIGBUS) instead of failing the request.
        mmap_size = sqlite_mmap_mib * 1024 * 1024  # SQLite takes at most its SQLITE_MAX_MMAP_SIZE (2 GiB)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, record):
            # Let SQLAlchemy's "begin" below decide how transactions start.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            # A file system without shared memory for the WAL index keeps the rollback journal.
            record.info[_WAL] = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
            cursor.execute("PRAGMA busy_timeout=%d" % (BUSY_TIMEOUT_SECONDS * 1000))
            if mmap_size:
                cursor.execute("PRAGMA mmap_size=%d" % mmap_size)
            # FULL (whatever the library's default): NORMAL would skip the fsync at each commit, and a power
            # loss could then lose the last records of issued certificates. Only begin_write's transactions
            # commit with NORMAL, in WAL mode; the session syncs the log itself (_set_sync).
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            # Write transactions take the lock up front: a deferred transaction that reads, then
            # writes after another worker committed, fails at once ("database is locked") instead
            # of waiting. Reads stay deferred and never block anyone.
            write = connection.get_execution_options().get(WRITE_OPTION)
            _set_sync(connection, relaxed=write == RELAXED_SYNC)
            _sqlite_begin_on_driver(connection, "BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _sqlite_begin_on_driver(connection, statement):
    """statement (BEGIN ..., a PRAGMA) on the driver's connection of connection (SQLAlchemy's): exec_driver_sql's
    execution context cost 15-35 us per request (issue 16). Its errors become SQLAlchemy's, as exec_driver_sql's
    would."""
    try:
        connection.connection.driver_connection.execute(statement)
    except sqlite3.Error as error:
        raise exc.DBAPIError.instance(statement, (), error, sqlite3.Error, dialect=connection.dialect) from error


WRITE_OPTION = "trustpoint_write"
RELAXED_SYNC = "relaxed sync"  # WRITE_OPTION's value for a transaction that commits with synchronous=NORMAL
_SYNC_RELAXED = "trustpoint_sync_relaxed"  # connection info key: the connection is at synchronous=NORMAL
_WAL = "trustpoint_wal"  # connection info key: the connection's database is in WAL mode
_UNSYNCED = "trustpoint_unsynced"  # Session.info key: a transaction of the session used the database
_WRITE_LOCK = "trustpoint_write_lock"  # Session.info key of the sessionmaker's SqliteWriteLock
_WRITE_LOCK_HELD = "trustpoint_write_lock_held"  # Session.info key: the lock file descriptor while held


class SqliteWriteLock:
    """Lets one write transaction at a time at a SQLite database: a thread lock, then an flock.

    Without it, concurrent writers queue in SQLite's busy handler, which polls the lock with sleeps of
    up to 100 ms: that made the latency tail under load. Here a waiting writer sleeps in the kernel
    and wakes as soon as the lock is free. The thread lock orders the threads of this process; the
    flock on a lock file next to the database orders the processes (gunicorn workers, the CLI). A
    process opens the lock file on its first write and keeps it open: an open and a close per write
    transaction cost a path lookup and a system call more (issue 16). A forked child forgets the
    descriptor it inherited (it closes its copy, which leaves the parent's lock alone: an inherited
    descriptor would share the parent's flock) and opens its own. A process that dies releases its flock
    with its descriptors. (A lock file deleted while servers run leaves the processes that opened it
    before on the deleted file, new ones on a new file: writers of the two then wait in SQLite's busy
    handler again, as without this lock, until every process has restarted.)

    The holder is a write transaction of a few milliseconds whose own SQLite wait ends after
    BUSY_TIMEOUT_SECONDS, so the flock wait is bounded by that; the thread lock gives up after the
    same time with SQLite's "database is locked".
    """

    def __init__(self, database):
        in_memory = not database or database == ":memory:" or database.startswith("file:")
        self.path = None if in_memory else os.path.abspath(database) + WRITE_LOCK_SUFFIX
        self.thread_lock = threading.Lock()
        # SQLite's name for it: next to the database file, a symbolic link resolved
        self.wal = None if in_memory else os.path.realpath(database) + "-wal"
        self._fd = None
        _LOCKS.add(self)

    def acquire(self):
        """Wait for the lock; returns the lock file descriptor (None without a file) for release()."""
        if not self.thread_lock.acquire(timeout=BUSY_TIMEOUT_SECONDS):
            raise sqlite3.OperationalError("database is locked (no write lock after %d s)" % BUSY_TIMEOUT_SECONDS)
        locked = None
        try:
            if self.path is None:
                return None
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            locked = self._fd
            return locked
        except BaseException:
            if locked is not None:  # interrupted (a signal's exception) after the flock
                fcntl.flock(locked, fcntl.LOCK_UN)
            self.thread_lock.release()
            raise

    def release(self, fd):
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self.thread_lock.release()

    def _forget_after_fork(self):
        # In the child, where only the forking thread runs: no thread holds the lock here.
        self.thread_lock = threading.Lock()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


_LOCKS = weakref.WeakSet()  # every SqliteWriteLock of this process


def _forget_write_locks_after_fork():
    for lock in list(_LOCKS):
        lock._forget_after_fork()


os.register_at_fork(after_in_child=_forget_write_locks_after_fork)


def begin_write(db_session):
    """End the session's read transaction and start a write transaction.

    Call it after the expensive work of a request (key generation, MAC checks, signing), right
    before the writes, so that SQLite's write lock is held for milliseconds. There must be no
    pending changes yet. The session holds the database's write lock until the write transaction
    ends (commit, rollback or close): SqliteWriteLock and BEGIN IMMEDIATE with SQLite, a transaction
    advisory lock with PostgreSQL. Either way writers take turns, across threads, workers and server
    instances, so a check made after begin_write (a one-time secret unused, the next CRL number) still
    holds at the commit.
    """
    lock = db_session.info.get(_WRITE_LOCK)
    if db_session.in_transaction():
        if db_session.new or db_session.dirty or db_session.deleted:
            raise RuntimeError("begin_write() after changes: they would commit in the read transaction")
        if lock is not None and _WRITE_LOCK_HELD not in db_session.info:
            _switch_to_write(db_session, lock)
            return
        db_session.commit()  # a read transaction, or a write transaction (its end releases the lock)
    if lock is not None:
        db_session.info[_WRITE_LOCK_HELD] = lock.acquire()
    try:
        relaxed = lock is not None and lock.wal is not None
        connection = db_session.connection(execution_options={WRITE_OPTION: RELAXED_SYNC if relaxed else True})
        if connection.dialect.name == "postgresql":
            # Row locks alone would let two instances both see a one-time secret unused.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(%d)" % POSTGRESQL_WRITE_LOCK_KEY)
    except BaseException:
        db_session.rollback()
        _release_write_lock(db_session)
        raise


def _switch_to_write(db_session, lock):
    """SQLite: end the session's read transaction and begin the write transaction on the same connection, within
    the session's transaction (its commit, rollback or close ends the write transaction and releases the lock).
    A commit and a new transaction of the session would cost 0.1 ms more of SQLAlchemy's bookkeeping per
    enrollment (issue 16); sqlite3's commit() and rollback(), which SQLAlchemy calls, act on whatever transaction
    the connection has."""
    connection = db_session.connection()
    connection.connection.driver_connection.commit()  # the read transaction: nothing to write (checked by the caller)
    db_session.info[_WRITE_LOCK_HELD] = lock.acquire()
    try:
        _set_sync(connection, relaxed=lock.wal is not None)
        _sqlite_begin_on_driver(connection, "BEGIN IMMEDIATE")
    except BaseException:
        db_session.rollback()
        _release_write_lock(db_session)
        raise


def _set_sync(connection, relaxed):
    """Before a transaction begins (SQLite allows no change within one): begin_write's, with the write lock of a
    database file, commits with synchronous=NORMAL (relaxed), every other with FULL. A relaxed commit does not wait
    for the disk; the session syncs the write-ahead log when the transaction has ended (_transaction_end), out of
    the write lock, so that the next writer does not wait for this one's fsync (bench/README.md, "A new machine; the
    log synced after the write lock")."""
    info = connection.connection.info
    relaxed = relaxed and info.get(_WAL, False)
    if info.get(_SYNC_RELAXED, False) != relaxed:
        _sqlite_begin_on_driver(connection, "PRAGMA synchronous=NORMAL" if relaxed else "PRAGMA synchronous=FULL")
        info[_SYNC_RELAXED] = relaxed


def _transaction_begun(db_session, _transaction, _connection):
    db_session.info[_UNSYNCED] = True


def _release_write_lock(db_session):
    if _WRITE_LOCK_HELD in db_session.info:
        db_session.info[_WRITE_LOCK].release(db_session.info.pop(_WRITE_LOCK_HELD))


def _transaction_end(db_session, transaction):
    """Commit, rollback and close all end here; savepoints (nested transactions) do not hold the lock.

    A session's transaction that used the database syncs the write-ahead log when it ends, whether it wrote or only
    read: between a relaxed commit and its writer's sync, other connections already see the commit. So whatever a
    transaction wrote or saw is on disk before its session goes on (to answer, to report what it read), as with
    synchronous=FULL everywhere; a crash loses only commits that no one has acted on, and the ones after them
    (SQLite recovers a log up to its first frame not fully written). A sync with nothing to write costs 15 us of
    CPU. Reads through the engine outside a session (the TLS client CA bundle) are not covered."""
    if transaction.parent is None:
        _release_write_lock(db_session)
        wal = db_session.info[_WRITE_LOCK].wal
        if db_session.info.pop(_UNSYNCED, False) and wal is not None:
            sync_log(wal)


_sync_failed = None  # the OSError of this process's first failed sync_log()


def sync_log(path):
    """Sync a write-ahead log: what every connection wrote to it is on disk when this returns.

    A failed sync leaves commits that others may have seen and that may not be on disk, and the kernel reports a
    write-back error once: from then on every sync of this process fails, so that its requests answer nothing from
    the database until it is restarted (its readiness check fails too)."""
    global _sync_failed
    if _sync_failed is not None:
        raise OSError(_sync_failed.errno, "an earlier sync of %s failed: %s" % (path, _sync_failed.strerror))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # checkpointed into the database file and removed (SQLite synced that file then)
    try:
        _fdatasync(fd)
    except OSError as exc:
        _sync_failed = exc
        log.critical("cannot sync the database log %s (%s): this process answers nothing from it any more", path, exc)
        raise
    finally:
        os.close(fd)


_fdatasync = getattr(os, "fdatasync", os.fsync)  # what SQLite syncs its log with (no mtime written)


# Ids are SQL BIGINTs at most (SQLite INTEGER): a larger number in a URL names no row (the database
# driver would raise OverflowError instead).
MAX_ID = 2**63 - 1


def get_by_id(db_session, model, ident):
    """The model row with id ident (an int from a URL), or None."""
    return db_session.get(model, ident) if 0 < ident <= MAX_ID else None


# --- Core statements beside the ORM -------------------------------------------------------------------------
# The enrollment paths write with SQLAlchemy Core on the session's connection (issue 16: the unit of work cost
# more than the SQL). The session must then not show the rows as they were: these keep its objects true.


def loaded(db_session, model, ident):
    """The session's object of model's row ident when the session holds one; never a query."""
    return db_session.identity_map.get(identity_key(model, ident))


def show_written(db_session, model, ident, values, row=None):
    """A Core statement wrote values (column or relationship name -> value) into model's row ident: the session's
    object of that row, if loaded, shows them as its committed state (a pending change of one of them is
    dropped, the statement decided it); so does row, the caller's plain object of it (services/enrolling.py),
    if given. Returns the session's object or None."""
    obj = loaded(db_session, model, ident)
    if obj is not None:
        for name, value in values.items():
            set_committed_value(obj, name, value)
    if row is not None and row is not obj:
        row.__dict__.update(values)
    return obj


def adopt(db_session, obj):
    """obj, new with its primary key, was just INSERTed with Core: it becomes the session's clean persistent
    object of its row (attributes not given load on first use). Unlike an object the ORM inserted, it stays in the
    session after a rollback (expired, its row gone): a request that writes again after a rollback uses a new
    session."""
    make_transient_to_detached(obj)
    db_session.add(obj)
    return obj


def session():
    """The request's session, opened on first use and closed when the request ends."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["trustpoint"].sessions()
    return g.db_session


def close_session(_exc=None):
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.rollback()
        db_session.close()


def session_factory(engine):
    if engine.dialect.name != "sqlite":
        # PostgreSQL: begin_write's advisory lock ends with the transaction, nothing to release here.
        return sessionmaker(engine, expire_on_commit=False)
    factory = sessionmaker(engine, expire_on_commit=False, info={_WRITE_LOCK: SqliteWriteLock(engine.url.database)})
    event.listen(factory, "after_begin", _transaction_begun)
    event.listen(factory, "after_transaction_end", _transaction_end)
    return factory


MAX_PER_PAGE = 200


class Page:
    """One page of a query's rows: items, the total count, this page's number (from 1) and size."""

    def __init__(self, items, total, number, size):
        self.items = items
        self.total = total
        self.number = number
        self.size = size

    @property
    def pages(self):
        return max(1, -(-self.total // self.size))


def paginate(db_session, query, number=1, size=25):
    """Page number (from 1) of size rows of query; a number past the end gives the last page."""
    size = max(1, min(int(size), MAX_PER_PAGE))
    total = db_session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    number = max(1, min(int(number), max(1, -(-total // size))))
    items = db_session.scalars(query.limit(size).offset((number - 1) * size)).all()
    return Page(items, total, number, size)


def contains(column, text):
    """A case-insensitive "column contains text" condition; LIKE's wildcards in text match themselves."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike("%" + escaped + "%", escape="\\")
