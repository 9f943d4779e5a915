# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Readiness: whether the service can do its work now, beyond being alive (/healthz).

/readyz checks what an enrollment needs: a write transaction commits (the database is reachable, writable
and not full: SQLite's file system or PostgreSQL), and the data directory's file system has the free space
the operator asks for (min_free_space MiB; SQLite can still commit a small write into an existing journal
while the next larger one fails). Each process checks at most once per CACHE_SECONDS and answers from the
last check meanwhile: an unauthenticated caller cannot turn it into a stream of writes.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from sqlalchemy import update

from ..storage.db import begin_write
from ..storage.models import ReadinessProbe, utcnow

log = logging.getLogger(__name__)

CACHE_SECONDS = 2.0
MIB = 1024 * 1024


class Readiness:
    def __init__(self, sessions, data_dir, min_free_space):
        self.sessions = sessions
        self.data_dir = data_dir
        self.min_free_bytes = int(min_free_space * MIB)
        self._lock = threading.Lock()
        self._last = None  # (when, ready, checks)

    def check(self):
        """(ready, {check: "ok" or what is wrong})."""
        with self._lock:
            if self._last is None or time.monotonic() - self._last[0] >= CACHE_SECONDS:
                checks = {"database_write": self._database_write(), "free_space": self._free_space()}
                ready = all(value == "ok" for value in checks.values())
                if not ready and (self._last is None or self._last[1]):
                    log.warning(
                        "not ready: %s", "; ".join("%s: %s" % item for item in checks.items() if item[1] != "ok")
                    )
                self._last = (time.monotonic(), ready, checks)
            return self._last[1], dict(self._last[2])

    def _database_write(self):
        try:
            with self.sessions() as db:
                begin_write(db)
                if not db.execute(
                    update(ReadinessProbe).where(ReadinessProbe.id == 1).values(checked_at=utcnow())
                ).rowcount:
                    db.add(ReadinessProbe(id=1, checked_at=utcnow()))
                db.commit()
        except Exception as exc:  # whatever the database says is the answer
            # The answer is unauthenticated: the database's own words (host, user, path) go to the log only.
            log.warning("readiness: a write transaction fails: %s", str(exc).splitlines()[0][:200])
            return "a write transaction fails (%s); the server log says why" % type(exc).__name__
        return "ok"

    def _free_space(self):
        if not self.min_free_bytes:
            return "ok"
        try:
            status = os.statvfs(self.data_dir)
        except OSError as exc:
            return "cannot tell the free space of the data directory: %s" % exc.strerror
        free = status.f_bavail * status.f_frsize
        if free < self.min_free_bytes:
            return "%d MiB free in the data directory's file system; at least %d MiB needed" % (
                free // MIB,
                self.min_free_bytes // MIB,
            )
        return "ok"
