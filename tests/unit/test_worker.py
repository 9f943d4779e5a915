# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""DeadlineWorker starts one request at a time and a spare thread's only beside requests that have run for
SPARE_AFTER; _ContextFeed hands each connection a TLS context computed after it asked (server/runtime/worker.py;
tests/integration/test_stalled_clients.py and test_tls.py run them in a real server)."""

from __future__ import annotations

import asyncio
import collections
import io
import itertools
import logging
import queue
import socket
import threading
from types import SimpleNamespace

import pytest
from trustpoint_server.runtime import on_loop, worker
from trustpoint_server.runtime.worker import SPARE_AFTER, DeadlineWorker, _ContextFeed


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
    instance.waiting = collections.deque()
    instance.running = {}
    instance.spare_check = None
    instance.reading = {}
    instance.accepting = False
    instance.listening = False
    instance.alive = True
    instance.sockets = []
    instance.on_loop = worker._never
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


def test_a_request_the_app_calls_short_runs_on_the_loop_and_the_next_waits_for_it(bare_worker):
    ran_in = []

    def app(environ, start_response):
        ran_in.append((environ["PATH_INFO"], threading.current_thread()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"answer"]

    bare_worker.wsgi = app
    bare_worker.on_loop = lambda environ: environ["PATH_INFO"].startswith("/.well-known/")
    bare_worker.cfg = SimpleNamespace(accesslog=None)
    bare_worker.nr = 0
    sent = []

    class Connection:  # what _answered uses of worker._Connection
        send = sent.append

    short = Connection()
    bare_worker.dispatch(
        short, {"REQUEST_METHOD": "POST", "PATH_INFO": "/.well-known/cmp", "SERVER_PROTOCOL": "HTTP/1.1"}
    )
    bare_worker.dispatch("page", {"PATH_INFO": "/devices"})
    assert started(bare_worker) == []  # no thread for the first; the second waits for it, as for a thread's
    assert bare_worker.running.keys() == {short}
    bare_worker.loop.call_soon(bare_worker.loop.stop)
    bare_worker.loop.run_forever()
    assert ran_in == [("/.well-known/cmp", threading.current_thread())]  # the loop's thread
    assert len(sent) == 1 and sent[0].startswith(b"HTTP/1.1 200 OK\r\n") and sent[0].endswith(b"\r\n\r\nanswer")
    assert bare_worker.nr == 1 and short not in bare_worker.running
    assert started(bare_worker) == ["page"]  # the app did not call it short: a thread's


def test_a_request_with_long_work_ahead_leaves_the_loop_for_a_thread(bare_worker):
    """The app asks to leave the loop (an RSA key generation ahead): the request goes to a thread, its body from
    the first byte, and the loop answers nothing for it."""
    bodies = []

    def app(environ, start_response):
        bodies.append(environ["wsgi.input"].read())
        on_loop.long_work_ahead()  # raises on the loop only
        start_response("200 OK", [])
        return [b""]

    bare_worker.wsgi = app
    bare_worker.on_loop = lambda environ: True
    bare_worker.cfg = SimpleNamespace(accesslog=None)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/.well-known/est/serverkeygen", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.input": io.BytesIO(b"the request")}  # fmt: skip
    bare_worker.dispatch("keygen", environ)
    bare_worker.loop.call_soon(bare_worker.loop.stop)
    bare_worker.loop.run_forever()
    [(connection, handed_over, _received)] = [bare_worker.jobs.get_nowait()]
    assert (connection, handed_over) == ("keygen", environ) and "keygen" in bare_worker.running  # a thread's now
    assert bare_worker._call_app(handed_over)[0] == "200 OK"  # what the thread does: the request runs to its end
    assert bodies == [b"the request", b"the request"]


def test_a_busy_worker_stops_watching_its_listener_only_when_a_connection_comes(bare_worker):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    bare_worker.sockets = [listener]
    bare_worker.threads = 1
    try:
        bare_worker._update_accepting()
        assert bare_worker.accepting and bare_worker.listening
        bare_worker.dispatch("a", {})
        assert started(bare_worker) == ["a"]
        assert not bare_worker.accepting and bare_worker.listening  # no epoll change for a request alone
        client = socket.create_connection(listener.getsockname())
        bare_worker._accept(listener)  # what the loop calls: the connection stays in the listen queue
        assert not bare_worker.listening and listener.accept()  # (the test takes it)
        bare_worker.running.pop("a")
        bare_worker._start_requests()
        assert bare_worker.accepting and bare_worker.listening
        bare_worker._stop_accepting()
        assert not bare_worker.listening
        client.close()
    finally:
        listener.close()


def test_the_access_log_line_escapes_what_a_client_sent(bare_worker):
    records = []
    logger = logging.Logger("test-access-log", logging.INFO)  # gunicorn's access_log, without its handlers
    logger.handle = records.append
    bare_worker.log = SimpleNamespace(access_log=logger)
    bare_worker.cfg = SimpleNamespace(accesslog="-")
    head = SimpleNamespace(
        method="GET", target="/a\\x0a\x1b[31m", version="HTTP/1.1", headers=[("user-agent", "c" * 150)]
    )
    bare_worker.access(SimpleNamespace(head=head, client=("192.0.2.1", 4321)), "404 NOT FOUND", 12, 0.0021)
    (record,) = records
    assert record.getMessage() == (
        '192.0.2.1 "GET /a\\\\x0a\\x1b[31m HTTP/1.1" 404 12 2.1ms "%s...(150 characters)"' % ("c" * 100)
    )
    head.target, head.headers = "/.well-known/cmp", []
    bare_worker.access(SimpleNamespace(head=head, client=("192.0.2.1", 4321)), "200 OK", 7, 0.0)
    assert records[1].getMessage() == '192.0.2.1 "GET /.well-known/cmp HTTP/1.1" 200 7 0.0ms "-"'


class Computations:
    """A context computation: each call returns the next number; slow: each waits for release."""

    def __init__(self, slow=False):
        self.numbers = itertools.count()
        self.release = threading.Event()
        if not slow:
            self.release.set()
        self.fail = False

    def __call__(self):
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("no database")
        return next(self.numbers)


def test_on_the_loop_each_connection_gets_a_context_computed_for_it():
    loop = asyncio.new_event_loop()
    compute = Computations()
    feed = _ContextFeed(loop, compute, on_loop=True)
    assert feed.executor is None
    assert [loop.run_until_complete(feed.get()) for _number in range(3)] == [1, 2, 3]
    compute.fail = True
    assert loop.run_until_complete(feed.get()) == 3  # the last one stays
    feed.close()
    loop.close()


def test_from_the_helper_thread_a_connection_gets_a_computation_started_after_it_asked(monkeypatch):
    loop = asyncio.new_event_loop()
    compute = Computations()
    feed = _ContextFeed(loop, compute)
    assert feed.last == 0
    assert loop.run_until_complete(feed.get()) == 1

    async def three_at_once():
        return await asyncio.gather(feed.get(), feed.get(), feed.get())

    # The first starts a computation; the two that ask while it runs share the next one.
    assert loop.run_until_complete(three_at_once()) == [2, 3, 3]
    # A computation slower than CONTEXT_WAIT: the connection gets the last context.
    monkeypatch.setattr(worker, "CONTEXT_WAIT", 0.05)
    compute.release.clear()
    assert loop.run_until_complete(feed.get()) == 3
    compute.release.set()
    feed.close()
    loop.close()
