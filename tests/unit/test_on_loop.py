# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Long work leaves a worker's loop before it starts (server/runtime/on_loop.py), and a worker spends a bounded
number of MAC iterations a second on requests not yet authenticated (services/auth_limits.py Budget, Gate.mac_wait).
tests/unit/test_cmp_ahead.py sends the CMP requests that do so through the app; test_worker.py has the worker's
side."""

from __future__ import annotations

import base64
import hashlib
from types import SimpleNamespace

import pytest
from trustpoint_server.runtime import on_loop
from trustpoint_server.services import devices, keygen
from trustpoint_server.services.auth_limits import AuthLimits, Budget


def test_long_work_leaves_the_loop_and_nowhere_else():
    on_loop.long_work_ahead()  # a thread, a test, the CLI: nothing happens
    with on_loop.running(), pytest.raises(on_loop.LeaveLoop):
        on_loop.long_work_ahead()
    on_loop.long_work_ahead()  # the flag ends with the request
    assert not issubclass(on_loop.LeaveLoop, Exception)  # the app's `except Exception` handlers let it through


def test_an_rsa_key_leaves_the_loop_an_ec_key_does_not():
    with on_loop.running():
        assert keygen.generate_key("ecdsa-p256").curve.name == "secp256r1"
        with pytest.raises(on_loop.LeaveLoop):
            keygen.generate_key("rsa-2048")
    assert keygen.generate_key("rsa-2048").key_size == 2048


def test_a_legacy_scrypt_password_leaves_the_loop():
    salt = b"s" * 16
    digest = hashlib.scrypt(b"password", salt=salt, dklen=32, **devices.LEGACY_SCRYPT)
    device = SimpleNamespace(
        password_hash="scrypt$%s$%s" % (base64.b64encode(salt).decode(), base64.b64encode(digest).decode()),
        secret_retry_until=None,
    )
    with on_loop.running(), pytest.raises(on_loop.LeaveLoop):
        devices.check_password(device, "password")
    assert devices.check_password(device, "password")
    with on_loop.running():  # a server-generated password's keyed hash stays on the loop, and so does a wrong user
        assert not devices.check_password(None, "password")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_mac_budget_refills_by_the_second_and_lets_a_large_count_through_when_full():
    clock = Clock()
    gate = AuthLimits(None, 0, 0, mac_budget=1000).gate("192.0.2.1")
    gate.limits.mac_iterations = Budget(1000, clock=clock, period=1.0)
    assert gate.mac_wait(600) == 0 and gate.mac_wait(400) == 0
    assert gate.mac_wait(500) == pytest.approx(0.5)  # empty: half a second until 500 are there, nothing spent
    clock.now += 0.5
    assert gate.mac_wait(500) == 0
    clock.now += 10  # a second's worth at most
    assert gate.mac_wait(5000) == 0  # more than a second's worth: through when full, and it empties the bucket
    assert gate.mac_wait(1) == pytest.approx(0.001)


def test_failures_are_still_counted_one_by_one_per_minute():
    clock = Clock()
    budget = Budget(2, clock=clock)
    budget.spend("a")
    budget.spend("a")
    assert budget.wait("a") == pytest.approx(30.0) and budget.wait("b") == 0


def test_no_budget_means_no_bound():
    gate = AuthLimits(None, 0, 0, mac_budget=0).gate("192.0.2.1")
    assert all(gate.mac_wait(10**6) == 0 for _attempt in range(100))


def test_threads_taking_mac_iterations_at_once_do_not_both_get_the_last_tokens():
    """mac_wait checked the bucket and spent from it under two locks, so threads checking at once could all pass
    and overdraw it (a window too short to hit reliably here); take() decides and spends under one, and grants
    what the bucket holds, whatever the threads' order."""
    import threading

    budget = Budget(1000, clock=lambda: 0.0, period=1.0)  # time standing still: no refill
    barrier = threading.Barrier(8)
    granted = []

    def ask():
        barrier.wait()
        granted.append(budget.take(None, 400) == 0)

    threads = [threading.Thread(target=ask) for _index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 2  # 2 x 400 of 1,000
