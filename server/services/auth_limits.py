# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Budgets for failed authentications and for MAC work: what a client without credentials can make the server spend.

Checking a guessed secret costs CPU (a PBM MAC at the iteration cap ~25 ms, a PBMAC1 one at the default cap
~250 ms); these rules bound it.

- **Per source address and per device**, `budget` failed authentications per minute each (token buckets
  in each worker process's memory; IPv6 sources by /64). A source over its budget is refused before any
  authentication work: CMP systemUnavail, EST and API 429 with Retry-After. A device over its budget is
  refused like a wrong secret, so the answer does not tell whether the device exists.
- **MAC iterations per worker**: a CMP client chooses its MAC's iteration count, and the server derives the key
  before it knows whether the secret is right. Each worker process spends at most `cmp_mac_budget` iterations
  a second on it (a Budget of one bucket); a request beyond that is refused with systemUnavail before any
  derivation.
- **Per device, durably**: after `lockout` failed attempts in a row against its one-time secret (CMP
  shared secret, EST password) the secret is locked (Device.secret_locked_at): it is refused, however
  right, until an operator unlocks it (`POST /api/v1/devices/<id>/unlock`, trustpoint.pki.device
  `unlock`) or issues a new one. The API shows the count and the lock.

Failures against a device are written by a background thread of the process, off the request's path:
whether a name or reference belongs to a device costs no time difference an attacker could measure, and
a flood of failures is one write per batch. A lock therefore takes effect a moment after the attempt that
reached it; the budgets bound what gets through meanwhile.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import math
import queue
import threading
import time

from sqlalchemy import and_, or_, update

from ..storage.db import begin_write
from ..storage.models import Device, utcnow

log = logging.getLogger(__name__)

# Sources and devices remembered per process at most; the fullest buckets are forgotten first.
MAX_TRACKED = 65536


def source_key(address):
    """What a budget counts a client address as: the IPv4 address, or the /64 of an IPv6 address (one
    host usually has a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return str(address)[:64]
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network("%s/64" % ip, strict=False))
    return str(ip)


class Budget:
    """Token buckets of `capacity` each, refilled over `period` seconds, keyed (by source, device, ...): failures per
    minute, MAC iterations per second. 0 turns them off."""

    def __init__(self, capacity, clock=time.monotonic, period=60.0):
        self.capacity = float(capacity)
        self.rate = capacity / period
        self.clock = clock
        self._buckets = collections.OrderedDict()  # key -> (tokens, when)
        self._lock = threading.Lock()

    def _tokens(self, key, now):
        tokens, when = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - when) * self.rate)

    def wait(self, key, amount=1):
        """Seconds until key may spend amount; 0 when it may now. An amount above the capacity may be spent from a
        full bucket (it empties it), so that it is slowed down, never refused for good."""
        if not self.capacity:
            return 0.0
        with self._lock:
            return self._shortfall(self._tokens(key, self.clock()), amount)

    def take(self, key, amount=1):
        """Spend amount now if key may (0), else the seconds until it may: wait() and spend() under one lock, for a
        cost paid before the work (MAC iterations), where two threads must not both see the same tokens."""
        if not self.capacity:
            return 0.0
        with self._lock:
            now = self.clock()
            tokens = self._tokens(key, now)
            wait = self._shortfall(tokens, amount)
            if not wait:
                self._store(key, tokens - amount, now)
            return wait

    def spend(self, key, amount=1):
        if not self.capacity:
            return
        with self._lock:
            now = self.clock()
            self._store(key, self._tokens(key, now) - amount, now)

    def _shortfall(self, tokens, amount):
        """The seconds until tokens cover amount (at most the capacity: see wait()), 0 when they do."""
        needed = min(amount, self.capacity)
        return 0.0 if tokens >= needed else (needed - tokens) / self.rate

    def _store(self, key, tokens, now):
        """Under the lock: key's bucket as of now; the least recently used go beyond MAX_TRACKED."""
        self._buckets[key] = (max(0.0, tokens), now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > MAX_TRACKED:
            self._buckets.popitem(last=False)


class FailureLog:
    """Counts failed attempts against devices' secrets in the database, from a background thread."""

    def __init__(self, sessions, lockout):
        self.sessions = sessions
        self.lockout = lockout
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    def record(self, device_id):
        with self._lock:
            self._pending += 1
            if self._thread is None:  # started on first use: never before gunicorn forks its workers
                self._thread = threading.Thread(target=self._run, name="auth-failures", daemon=True)
                self._thread.start()
        self._queue.put(device_id)

    def wait_idle(self, timeout=10.0):
        """Wait until every recorded failure is written (tests, shutdown); True when it is."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def _run(self):
        while True:
            counts = collections.Counter([self._queue.get()])
            while True:
                try:
                    counts[self._queue.get_nowait()] += 1
                except queue.Empty:
                    break
            try:
                self._write(counts)
            except Exception:  # the database is unavailable: the budgets still hold meanwhile
                log.exception("cannot record %d failed authentication(s)", sum(counts.values()))
            with self._idle:
                self._pending -= sum(counts.values())
                self._idle.notify_all()

    def _write(self, counts):
        table = Device.__table__.c
        has_secret = or_(table.secret_encrypted.isnot(None), table.password_hash.isnot(None))
        with self.sessions() as db:
            begin_write(db)
            locked = []
            for device_id, count in counts.items():
                db.execute(
                    update(Device)
                    .where(table.id == device_id, has_secret)
                    .values(failed_authentications=table.failed_authentications + count)
                )
                if (
                    self.lockout
                    and db.execute(
                        update(Device)
                        .where(
                            and_(
                                table.id == device_id,
                                table.secret_locked_at.is_(None),
                                table.failed_authentications >= self.lockout,
                                has_secret,
                            )
                        )
                        .values(secret_locked_at=utcnow())
                    ).rowcount
                ):
                    locked.append(device_id)
            db.commit()
        for device_id in locked:
            log.warning(
                "device %d: its one-time secret is locked after %d failed authentications; unlock it "
                "(POST /api/v1/devices/%d/unlock) or issue a new one",
                device_id,
                self.lockout,
                device_id,
            )


class AuthLimits:
    """The budgets and the lockout of one worker process (Services.auth_limits)."""

    def __init__(self, sessions, budget, lockout, mac_budget=0):
        self.sources = Budget(budget)
        self.devices = Budget(budget)
        self.mac_iterations = Budget(mac_budget, period=1.0)  # one bucket, the worker's
        self.failures = FailureLog(sessions, lockout)
        self.lockout = lockout

    def gate(self, address):
        return Gate(self, source_key(address))


class Gate:
    """The limits as one request (from one source) sees them."""

    def __init__(self, limits, source):
        self.limits = limits
        self.source = source
        self.recorded = False

    def refusal(self):
        """(text, seconds to wait) when this source is over its budget: its authentication is not to be
        looked at; None: go on."""
        wait = math.ceil(self.limits.sources.wait(self.source))
        if not wait:
            return None
        return "too many failed authentications from this address; retry in %d s" % wait, wait

    def device_refused(self, device):
        """True when device's secret must not be checked now: locked, or over its budget."""
        if device.secret_locked_at is not None:
            log.info("device %d: refused, its secret is locked (%s)", device.id, self.source)
            return True
        if self.limits.devices.wait(device.id):
            log.info("device %d: refused, over its budget of failed authentications (%s)", device.id, self.source)
            return True
        return False

    def mac_wait(self, iterations):
        """0 when a MAC of this many iterations may be computed now (its cost is spent from the worker's budget),
        else the seconds to wait."""
        return self.limits.mac_iterations.take(None, iterations)

    def failed(self, device=None):
        """Count a failed authentication of this request (once), and against device's secret if given."""
        if self.recorded:
            return
        self.recorded = True
        self.limits.sources.spend(self.source)
        if device is not None:
            self.limits.devices.spend(device.id)
            self.limits.failures.record(device.id)


# --- what operators see and do ---------------------------------------------------------------------------


def lock_json(device):
    return {
        "failed_authentications": device.failed_authentications or 0,
        "secret_locked": device.secret_locked_at is not None,
        "secret_locked_at": device.secret_locked_at.strftime("%Y-%m-%dT%H:%M:%SZ") if device.secret_locked_at else None,
    }


def unlock(device):
    """Let the device's secret be tried again (the caller commits)."""
    device.failed_authentications = 0
    device.secret_locked_at = None
