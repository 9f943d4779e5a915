# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""DeadlineWorker starts one request at a time and a spare thread's only beside requests that have run for
SPARE_AFTER (server/runtime/worker.py; tests/integration/test_stalled_clients.py runs it for real)."""

from __future__ import annotations

import asyncio
import queue

import pytest
from trustpoint_server.runtime import worker
from trustpoint_server.runtime.worker import SPARE_AFTER, DeadlineWorker


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def bare_worker(monkeypatch):
    """A DeadlineWorker without gunicorn's set-up or threads: what it hands its threads stays in .jobs."""
    loop = asyncio.new_event_loop()
    clock = Clock()
    monkeypatch.setattr(loop, "time", clock)
    instance = object.__new__(DeadlineWorker)
    instance.loop = loop
    instance.threads = 2
    instance.jobs = queue.SimpleQueue()
    instance.waiting = worker.deque()
    instance.running = {}
    instance.spare_check = None
    instance.reading = {}
    instance.accepting = False
    instance.alive = True
    instance.sockets = []
    instance.clock = clock
    yield instance
    loop.close()


def started(instance):
    found = []
    while not instance.jobs.empty():
        found.append(instance.jobs.get()[0])
    return found


def test_one_request_at_a_time_at_ordinary_load(bare_worker):
    bare_worker.dispatch("a", {})
    bare_worker.dispatch("b", {})
    assert started(bare_worker) == ["a"]
    assert not bare_worker.accepting  # the listen queue keeps the next ones for a free worker
    bare_worker.clock.now += SPARE_AFTER / 2
    bare_worker._start_requests()
    assert started(bare_worker) == []
    bare_worker.running.pop("a")  # as _answered does, before it starts the next
    bare_worker._start_requests()
    assert started(bare_worker) == ["b"]
    bare_worker.running.pop("b")
    bare_worker._start_requests()
    assert bare_worker.accepting


def test_a_spare_thread_takes_a_request_beside_a_long_one(bare_worker):
    bare_worker.dispatch("long", {})
    assert started(bare_worker) == ["long"]
    assert bare_worker.spare_check is not None  # it asks again when the request has run SPARE_AFTER
    assert bare_worker.spare_check.when() == pytest.approx(bare_worker.clock.now + SPARE_AFTER)
    bare_worker.clock.now += SPARE_AFTER * 1.01
    bare_worker._start_requests()  # what the timer calls
    assert bare_worker.accepting
    bare_worker.dispatch("next", {})
    assert started(bare_worker) == ["next"]
    # Both threads busy: nothing more, however long they run.
    bare_worker.dispatch("third", {})
    bare_worker.clock.now += 10
    bare_worker._start_requests()
    assert started(bare_worker) == []
    assert not bare_worker.accepting
    bare_worker.running.pop("long")
    bare_worker._start_requests()
    # "next" has run 10 s: the freed thread takes "third" at once.
    assert started(bare_worker) == ["third"]


def test_one_thread_never_takes_a_second_request(bare_worker):
    bare_worker.threads = 1
    bare_worker.dispatch("a", {})
    bare_worker.dispatch("b", {})
    bare_worker.clock.now += 60
    bare_worker._start_requests()
    assert started(bare_worker) == ["a"]
    assert bare_worker.spare_check is None
