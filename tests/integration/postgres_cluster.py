# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""A throwaway PostgreSQL cluster for the tests.

initdb in a new temporary directory (owned by the `postgres` user when the tests run as root), one
postmaster listening on 127.0.0.1 at a free port with its unix socket in that directory, a database and
a login role with a password (scram-sha-256 over TCP; the superuser `postgres` connects without one,
over the socket only). stop() ends the postmaster and removes the directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import free_port

try:
    import psycopg
except ImportError:  # reported by require_psycopg(), as a failure that says what to do
    psycopg = None

PG_ROOT = "/usr/lib/postgresql"
SETUP_HINT = "run `make setup` (tools/setup-system.sh installs the Debian package postgresql)"


def require_psycopg():
    if psycopg is None:
        pytest.fail(
            "psycopg is not installed in the virtualenv; run `make setup` (the dev extra installs psycopg[binary])"
        )
    return psycopg


def server_bindir():
    """The bin directory of the newest PostgreSQL server installed; fails the test without one."""
    found = []
    for initdb in glob.glob(os.path.join(PG_ROOT, "*", "bin", "initdb")):
        bindir = os.path.dirname(initdb)
        if all(os.access(os.path.join(bindir, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            version = tuple(int(part) for part in re.findall(r"\d+", os.path.basename(os.path.dirname(bindir))))
            found.append((version, bindir))
    if not found:
        pytest.fail(
            "the PostgreSQL server (initdb, pg_ctl and postgres in %s/VERSION/bin) is not installed; %s"
            % (PG_ROOT, SETUP_HINT)
        )
    return Path(max(found)[1])


def _owner():
    """(command prefix, (uid, gid)) that run the cluster's programs: as `postgres` when we are root
    (the server refuses to run as root), else as ourselves."""
    if os.geteuid() != 0:
        return [], None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("there is no `postgres` user to run the PostgreSQL server as; %s" % SETUP_HINT)
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("runuser (util-linux) is not installed; %s" % SETUP_HINT)
    return [runuser, "-u", "postgres", "--"], (account.pw_uid, account.pw_gid)


def _alive(pid):
    """The process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class PostgresCluster:
    """A running cluster with one database owned by one login role; url is SQLAlchemy's URL of it."""

    SUPERUSER = "postgres"

    def __init__(self, database="trustpoint", user="trustpoint", listen=("127.0.0.1",), allow=(), durable=False):
        """listen: addresses the postmaster listens on; allow: further networks (CIDR) the login role may
        connect from, with its password (127.0.0.1 always may); durable: keep PostgreSQL's fsync at each
        commit (benchmarks; the tests turn it off)."""
        require_psycopg()
        self.listen = tuple(listen)
        self.allow = tuple(allow)
        self.durable = durable
        self.bindir = server_bindir()
        self.database = database
        self.user = user
        self.password = secrets.token_hex(16)
        self.root = Path(tempfile.mkdtemp(prefix="trustpoint-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()
        self.pid = None
        self.process = None
        self._log = None
        self._prefix, owner = _owner()
        try:
            if owner is not None:
                os.chown(str(self.root), *owner)
            self._start()
            with self.connect(dbname="postgres") as connection:
                connection.execute(
                    "CREATE ROLE %s LOGIN PASSWORD '%s'" % (self.user, self.password)  # our own names: no quoting
                )
                connection.execute("CREATE DATABASE %s OWNER %s" % (self.database, self.user))
        except BaseException:
            self.stop()
            raise

    @property
    def url(self):
        return self.url_at("127.0.0.1")

    def url_at(self, address):
        """SQLAlchemy's URL of the database at one of the addresses it listens on."""
        return "postgresql+psycopg://%s:%s@%s:%d/%s" % (self.user, self.password, address, self.port, self.database)

    def _run(self, tool, *args):
        result = subprocess.run(
            [*self._prefix, str(self.bindir / tool), *[str(a) for a in args]],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
            cwd=str(self.root),
        )
        return result

    def _checked(self, tool, *args):
        result = self._run(tool, *args)
        if result.returncode != 0:
            raise RuntimeError(
                "%s failed (%d):\n%s%s\n%s" % (tool, result.returncode, result.stdout, result.stderr, self.log())
            )
        return result

    def _start(self):
        """initdb, settings, then the postmaster in the foreground; returns once it accepts connections."""
        self._checked(
            "initdb",
            "--pgdata", self.data, "--username", self.SUPERUSER, "--auth-local", "trust",
            "--auth-host", "scram-sha-256", "--encoding", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        settings = {
            "listen_addresses": "'%s'" % ",".join(self.listen),
            "port": str(self.port),
            "unix_socket_directories": "'%s'" % self.root,
            "max_connections": "100",
        }
        if not self.durable:
            # Throwaway data: no durability, no waiting for disks.
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        with open(str(self.data / "postgresql.conf"), "a") as handle:
            handle.write("\n# the test's throwaway cluster\n")
            handle.writelines("%s = %s\n" % item for item in settings.items())
        with open(str(self.data / "pg_hba.conf"), "a") as handle:
            handle.writelines(
                "host %s %s %s scram-sha-256\n" % (self.database, self.user, network) for network in self.allow
            )
        # The postmaster runs as our child (through runuser, which waits for it), not daemonized by
        # pg_ctl: stop() reaps it, and nothing of it outlives the test session.
        self._log = open(str(self.log_path), "ab")  # noqa: SIM115 (open for the postmaster's lifetime)
        self.process = subprocess.Popen(
            [*self._prefix, str(self.bindir / "postgres"), "-D", str(self.data)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(self.root),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(
                    host=str(self.root), port=self.port, user=self.SUPERUSER, dbname="postgres", connect_timeout=5
                ).close()
                break
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start:\n" + self.log()) from None
                time.sleep(0.05)
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def connect(self, dbname=None, autocommit=True):
        """A psycopg connection as the superuser, over the cluster's unix socket."""
        return psycopg.connect(
            host=str(self.root),
            port=self.port,
            user=self.SUPERUSER,
            dbname=dbname or self.database,
            autocommit=autocommit,
            connect_timeout=10,
        )

    def query(self, sql, parameters=()):
        """Rows of one query on the database."""
        with self.connect() as connection:
            return connection.execute(sql, parameters).fetchall()

    def lock_waiters(self):
        """Backends of the database waiting for a lock."""
        rows = self.query(
            "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.datname = %s",
            (self.database,),
        )
        return rows[0][0]

    @contextlib.contextmanager
    def holding(self, *statements):
        """Run statements (LOCK TABLE, SELECT ... FOR UPDATE) in a transaction that stays open until the
        block ends: what they lock, everyone else waits for. Yields wait_for_waiters(count)."""
        with self.connect(autocommit=False) as connection:
            for statement in statements:
                # SQL, or (SQL, parameters)
                connection.execute(*(statement if isinstance(statement, tuple) else (statement,)))

            def wait_for_waiters(count, timeout=20):
                """True once count other backends wait for a lock, False after timeout seconds."""
                deadline = time.monotonic() + timeout
                while self.lock_waiters() < count:
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.05)
                return True

            try:
                yield wait_for_waiters
            finally:
                connection.rollback()

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        """End the postmaster (fast shutdown, then immediate, then SIGKILL) and remove the directory."""
        try:
            if self.process is not None and self.process.poll() is None:
                # SIGINT: fast shutdown (clients are disconnected); SIGQUIT: immediate; then SIGKILL.
                for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid or self.process.pid, signum)
                    try:
                        self.process.wait(30)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                if self.process.poll() is None:  # the postmaster died but runuser did not notice
                    self.process.kill()
                    self.process.wait(10)
        finally:
            if self._log is not None:
                self._log.close()
            shutil.rmtree(str(self.root), ignore_errors=True)

    def processes(self):
        """Pids of processes still running from the cluster's data directory (none after stop())."""
        found = []
        marker = str(self.data).encode()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _alive(int(entry)):
                try:
                    with open("/proc/%s/cmdline" % entry, "rb") as handle:
                        command = handle.read()
                    with open("/proc/%s/stat" % entry) as handle:
                        parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if marker in command or parent == self.pid:
                    found.append(int(entry))
        if self.pid is not None and _alive(self.pid):
            found.append(self.pid)
        return sorted(set(found))
