# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gunicorn worker the server runs: an event loop reads whole requests under deadlines, threads run the app
(or the loop itself, for the app's short requests).

A thread-per-connection worker (gunicorn's gthread) gives a connection a thread from the TLS handshake
on: a few clients that send one byte and stop hold every thread of every worker. Here one asyncio loop
per worker process accepts the connections, does the TLS handshake and reads the request line, the
headers and the body, each phase under its own deadline. Only a complete request reaches one of the
worker's `threads` threads, which run the WSGI application; the loop writes the answer (under a
deadline too) and closes the connection. A stalled or slow client costs a socket and a few hundred
bytes, not a thread.

- Deadlines (Deadlines): TLS handshake, request head, request body, sending the answer. A client that
  misses one is disconnected (408 when it had started a request).
- Connections per worker are bounded (max_connections, within RLIMIT_NOFILE): at the bound, the
  connection that has been reading its request for the longest is dropped for the new one, so a flood
  of stalled connections cannot lock out a client that sends its request at once.
- One request at a time per worker, with spares: a worker starts a request in one of its threads when
  it runs none, and a further one, up to `threads` at once, only when every request it runs has run for
  SPARE_AFTER (a key generation, a wait for the write lock), so that a long request does not hold up
  the others. Two requests at once in one interpreter cost more CPU each than one after the other
  (bench/README.md, "One request at a time per worker"). A worker accepts connections while it could
  start a request, so that a new connection waits in the listen queue for the first free worker. Its
  listeners stay registered with the loop while it is busy until a connection comes meanwhile: one after
  the other, requests then cost no epoll changes.
- Requests the app says are short (its `on_loop(environ)`: the enrollment protocols on a local database, see
  runtime/wsgi.py) run on the loop instead: 0.2-0.35 ms less CPU per enrollment than in a thread
  (bench/README.md, "Enrollments on the loop"). Such a request holds up the loop, so it has no spare: the worker's
  other connections wait until it ends (their deadlines run on), and new ones go to the other workers meanwhile.
  One that is about to do long work (an RSA key generation, a MAC of many iterations, a legacy scrypt password, a
  new CRL) leaves the loop for a thread before it has changed anything (runtime/on_loop.py).
- TLS: each connection gets the SSLContext gunicorn's `ssl_context` setting returns at that moment
  (ServerContexts: the client CA bundle as the database has it now), fetched on the loop when the
  database is SQLite, else in a helper thread so that a slow database never stalls the loop
  (_ContextFeed); after the handshake the peer's certificate and the chain the handshake verified go
  into the environ (TLS_ENVIRON_KEY, read by protocols/wire.py).
- Signals as gunicorn's workers: SIGTERM stops gracefully (requests in the threads finish within the
  graceful timeout; connections still reading get a moment), SIGINT/SIGQUIT at once (after the request on the
  loop, if one runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import queue
import resource
import signal
import socket
import ssl
import sys
import threading
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gunicorn import sock as gunicorn_sock
from gunicorn.workers.base import Worker

from . import http1, on_loop
from .tls import TLS_ENVIRON_KEY, TlsInfo

# How long a new connection waits for the current TLS context (a database read, and a new SSLContext when
# the client CA bundle changed) before it takes the last one: only a database that does not answer is slower.
CONTEXT_WAIT = 5.0
# What connections still reading their request get when the worker stops.
STOP_LINGER = 2.0
# How long a closed connection's unread input is drained, so that the answer is not lost to a reset.
CLOSE_LINGER = 2.0
_RESERVED_FDS = 64  # listeners, the database, logs, pipes
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux
# When a worker takes another request beside those it runs (see the module doc): an enrollment takes a few
# milliseconds of CPU, a key generation or a password hash of a person's password tens to thousands.
SPARE_AFTER = 0.05
ACCESS_FORMAT = '%s "%s" %s %d %.1fms "%s"'

log = logging.getLogger(__name__)


@dataclass
class Deadlines:
    """Seconds a client has for each phase, and the connections one worker holds at most."""

    handshake: float = 10.0
    head: float = 10.0
    body: float = 30.0
    send: float = 30.0
    max_connections: int = 4096
    max_body: int = 128 * 1024


class _ContextFeed:
    """The SSLContext for each new connection, computed after the connection was accepted (a truststore committed
    just before must count).

    on_loop (the database is SQLite): computed on the loop, at once. The check reads a local file (one row, about
    11 us) and the context is rebuilt only after a change, while a helper thread's round trip cost 0.16-0.24 ms of CPU
    per connection (bench/README.md, "One request at a time per worker"). A read SQLite makes wait (its busy
    handler, rare for a reader in WAL mode) holds up the loop as it would the request threads.
    Otherwise (a database over the network, which may not answer) in a helper thread: a connection waits for the
    next computation that starts after it asked; every connection that asks meanwhile shares that one. A
    computation that takes longer than CONTEXT_WAIT leaves the connection with the last context.
    """

    def __init__(self, loop, compute, on_loop=False):
        self.loop = loop
        self.compute = compute
        self.on_loop = on_loop
        self.executor = None if on_loop else ThreadPoolExecutor(1, thread_name_prefix="tls-context")
        self.last = compute()
        self._running = None
        self._next = None

    def _start(self):
        future = asyncio.wrap_future(self.executor.submit(self.compute), loop=self.loop)
        self._running = future
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future):
        if not future.cancelled() and future.exception() is None:
            self.last = future.result()
        elif not future.cancelled():
            log.warning("cannot build the TLS context; connections keep the last one: %s", future.exception())
        self._running = None
        waiting, self._next = self._next, None
        if waiting is not None:
            self._start().add_done_callback(lambda _done: waiting.done() or waiting.set_result(self.last))

    async def get(self):
        if self.on_loop:
            try:
                self.last = self.compute()
            except Exception as exc:  # as _finished: the last context stays
                log.warning("cannot build the TLS context; connections keep the last one: %s", exc)
            return self.last
        if self._running is None:
            future = self._start()
        else:
            if self._next is None:
                self._next = self.loop.create_future()
            future = self._next
        # Slow or failed: _finished keeps the last context that could be built.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(future), CONTEXT_WAIT)
        return self.last

    def close(self):
        if self.executor is not None:
            self.executor.shutdown(wait=False)


class _Connection(asyncio.Protocol):
    """One client connection, from accept to close; TLS runs here over memory BIOs.

    Doing TLS here rather than through asyncio's SSL transport keeps the TLS alert of a failed handshake
    (an unknown client certificate: the client is told why, not just disconnected), puts the handshake
    under this connection's deadline, and costs less per request.
    """

    def __init__(self, worker, client, server, tls_context):
        self.worker = worker
        self.client = client
        self.server = server
        self.scheme = "https" if tls_context is not None else "http"
        self.tls_context = tls_context
        self.sslobj = None
        self.incoming = self.outgoing = None
        self.transport = None
        self.phase = "handshake"  # handshake | head | body | app | send | closed
        self.buffer = bytearray()
        self.head = None
        self.chunked = None
        self.tls = None
        self.timer = None
        self.task = None
        self.received = False  # any request byte arrived
        self.input_done = False  # the request was read to its end
        self._deadline(worker.deadlines.handshake, "handshake")

    # --- deadlines -------------------------------------------------------------------------------

    def _deadline(self, seconds, phase):
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.worker.loop.call_later(seconds, self._expired, phase)

    def _expired(self, phase):
        self.timer = None
        if self.phase != phase:
            return
        if phase in ("head", "body") and self.received:
            self.input_done = True  # no lingering for a client this slow
            self.fail(408, "the request did not arrive in time")
        else:
            self.abort()

    # --- asyncio.Protocol -----------------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        if self.tls_context is None:
            self._begin_head()
            return
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sslobj = self.tls_context.wrap_bio(self.incoming, self.outgoing, server_side=True)

    def data_received(self, data):
        if self.sslobj is None:
            self._plaintext(data)
            return
        self.incoming.write(data)
        if self.phase == "handshake" and not self._handshake():
            return
        chunks = []
        while True:
            try:
                chunk = self.sslobj.read(65536)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLError, OSError):  # close_notify, a bad record: the request will not come
                chunk = b""
            if not chunk:
                self._flush_tls()
                self.eof_received()
                return
            chunks.append(chunk)
        self._flush_tls()  # a TLS 1.3 KeyUpdate answer, if any
        if chunks:
            self._plaintext(b"".join(chunks))

    def _handshake(self):
        """Advance the handshake; True once it is done and application data may follow."""
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_tls()
            return False
        except (ssl.SSLError, OSError) as exc:
            # Send the alert OpenSSL wrote (unknown CA, bad certificate...), then close.
            self._flush_tls()
            self.phase = "send"
            self.transport.close()
            self.worker.log.debug("TLS handshake with %s failed: %s", self.client[0], exc)
            return False
        if not self._flush_tls():
            self._quick_ack()
        self.tls = TlsInfo(self.sslobj)
        self._begin_head()
        return True

    def _quick_ack(self):
        """Acknowledge what arrived now, not when the delayed-ACK timer fires (40 ms). A TLS 1.3 handshake ends
        with the client's Finished, and without tickets (runtime/tls.py) the server has nothing to send after it
        that the ACK could ride on: a client with Nagle's algorithm holds its request until the ACK comes
        (openssl cmp over HTTPS took 116 ms instead of 26)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None and _TCP_QUICKACK is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)

    def _flush_tls(self):
        """Send what OpenSSL wrote; True when there was something."""
        data = self.outgoing.read()
        if data and not self.transport.is_closing():
            self.transport.write(data)
        return bool(data)

    def _write(self, data):
        if self.sslobj is None:
            self.transport.write(data)
            return
        try:
            self.sslobj.write(data)
        except (ssl.SSLError, OSError):
            self.abort()
            return
        self._flush_tls()

    def _close(self):
        if self.sslobj is not None and self.tls is not None:
            with contextlib.suppress(ssl.SSLError, OSError):
                self.sslobj.unwrap()  # our close_notify; the client's is not waited for
            self._flush_tls()
        self.transport.close()

    def eof_received(self):
        if self.phase in ("handshake", "head", "body"):
            self.abort()
            return False
        return True  # a client that half-closed after its request still gets the answer

    def connection_lost(self, exc):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.phase = "closed"
        self.worker.forget(self)

    # --- the request --------------------------------------------------------------------------------

    def _begin_head(self):
        self.phase = "head"
        self._deadline(self.worker.deadlines.head, "head")

    def _plaintext(self, data):
        if self.phase == "head":
            self.received = True
            start = len(self.buffer)
            self.buffer += data
            end = http1.head_end(self.buffer, start)
            if end < 0:
                if len(self.buffer) > http1.MAX_HEAD:
                    self.fail(431, "the request head exceeds %d bytes" % http1.MAX_HEAD)
                return
            try:
                self.head = http1.parse_head(self.buffer[:end])
            except http1.HttpError as exc:
                self.fail(exc.status, exc.message)
                return
            rest = bytes(self.buffer[end:])
            self.buffer = bytearray()
            self._start_body(rest)
        elif self.phase == "body":
            self._body_data(data)
        # Anything after the request (pipelining is not served) or while closing is dropped.

    def _start_body(self, rest):
        head = self.head
        limit = self.worker.deadlines.max_body
        if head.chunked:
            self.chunked = http1.ChunkedBody(limit)
        elif not head.content_length or head.content_length > limit:
            # No body, or one the application refuses by its Content-Length without reading it.
            self.input_done = not head.content_length
            self._dispatch(b"")
            return
        if head.expect_continue and not rest:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.phase = "body"
        self._deadline(self.worker.deadlines.body, "body")
        if rest:
            self._body_data(rest)

    def _body_data(self, data):
        if self.chunked is not None:
            try:
                finished = self.chunked.feed(data)
            except http1.HttpError as exc:
                self.fail(exc.status, exc.message)
                return
            if finished:
                self.input_done = not self.chunked.over_limit
                self._dispatch(bytes(self.chunked.body))
            return
        self.buffer += data
        if len(self.buffer) >= self.head.content_length:
            self.input_done = True
            self._dispatch(bytes(self.buffer[: self.head.content_length]))

    def _dispatch(self, body):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.phase = "app"
        self.buffer = bytearray()
        self.transport.pause_reading()
        extra = {TLS_ENVIRON_KEY: self.tls} if self.tls is not None else None
        environ = http1.environ(self.head, body, self.client, self.server, self.scheme, extra)
        self.worker.dispatch(self, environ)

    # --- the answer -----------------------------------------------------------------------------------

    def send(self, data):
        """Write a complete answer and close; from the loop."""
        if self.phase == "closed" or self.transport is None or self.transport.is_closing():
            return
        self.phase = "send"
        self._write(data)
        self._deadline(self.worker.deadlines.send, "send")
        if self.input_done:
            self._close()
        else:
            self._linger()

    def fail(self, status, message):
        version = self.head.version if self.head is not None else "HTTP/1.1"
        self.worker.access(self, "%d" % status, 0)
        self.send(http1.error_response(version, status, message))

    def _linger(self):
        """Close after the client has had the answer, though it may still be sending: reading on
        for CLOSE_LINGER (dropping what comes) keeps the kernel from answering that input with a reset
        that could destroy the answer before the client read it."""
        self.transport.resume_reading()
        if self.sslobj is None:
            self.transport.write_eof()
        self.worker.loop.call_later(CLOSE_LINGER, self._close)

    def abort(self):
        if self.transport is not None:
            self.transport.abort()
        elif self.task is not None:
            self.task.cancel()


class DeadlineWorker(Worker):
    """gunicorn worker: asyncio for connections, `threads` threads for the WSGI app (see the module doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadlines = getattr(self.app, "deadlines", None) or Deadlines()
        self.on_loop = getattr(self.app, "on_loop", None) or _never
        self.loop = None
        self.threads = max(1, self.cfg.threads)
        self.jobs = queue.SimpleQueue()
        self.waiting = deque()  # (connection, environ, loop time) of requests read, not started
        self.running = {}  # connection: loop time its request (a connection has one) started (thread or loop)
        self.spare_check = None  # the timer that reconsiders the spares after SPARE_AFTER
        self.reading = OrderedDict()  # connections still reading their request, oldest first
        self.connections = set()
        self.accepting = False  # whether a new connection would be taken now
        self.listening = False  # whether the loop watches the listeners
        self.contexts = None
        self.quick_exit = False
        self.wakeup = None

    # --- process set-up ---------------------------------------------------------------------------

    def init_process(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._file_limit()
        super().init_process()

    def _file_limit(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = self.deadlines.max_connections + _RESERVED_FDS
        if soft < wanted and (hard == resource.RLIM_INFINITY or hard > soft):
            new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                soft = new
        if soft < wanted:
            self.deadlines.max_connections = max(16, soft - _RESERVED_FDS)
            self.log.warning(
                "the file descriptor limit %d allows %d connections per worker", soft, self.deadlines.max_connections
            )

    def init_signals(self):
        for signum in self.SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        self.loop.add_signal_handler(signal.SIGTERM, self._stop, False)
        self.loop.add_signal_handler(signal.SIGINT, self._stop, True)
        self.loop.add_signal_handler(signal.SIGQUIT, self._stop, True)
        self.loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        self.loop.add_signal_handler(signal.SIGABRT, self._abort)
        self.loop.add_signal_handler(signal.SIGWINCH, lambda: None)

    def _stop(self, quick):
        if quick:
            self.quick_exit = True
            self.cfg.worker_int(self)
        self.alive = False
        if self.wakeup is not None:
            self.wakeup.set()

    def _abort(self):
        self.alive = False
        self.cfg.worker_abort(self)
        sys.exit(1)

    # --- the loop ------------------------------------------------------------------------------------

    def run(self):
        for number in range(self.threads):
            threading.Thread(target=self._thread, name="app-%d" % number, daemon=True).start()
        if self.cfg.is_ssl:
            server_contexts = getattr(self.app, "contexts", None)  # wsgi.py's ServerContexts, when it runs us
            self.contexts = _ContextFeed(
                self.loop,
                lambda: gunicorn_sock.ssl_context(self.cfg),
                on_loop=server_contexts is not None and server_contexts.reads_locally,
            )
        for listener in self.sockets:
            listener.setblocking(False)
        self._update_accepting()
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self._stop_accepting()
            for _number in range(self.threads):
                self.jobs.put(None)
            if self.contexts is not None:
                self.contexts.close()
            for listener in self.sockets:
                with contextlib.suppress(OSError):
                    listener.close()
            self.loop.close()

    async def _serve(self):
        self.wakeup = asyncio.Event()
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), 1.0)
        self._stop_accepting()
        if self.quick_exit:
            return
        # Graceful: the requests in the threads finish; connections still reading get STOP_LINGER.
        deadline = self.loop.time() + self.cfg.graceful_timeout
        for connection in list(self.reading):
            if not connection.received:
                connection.abort()
            elif connection.phase in ("head", "body"):
                connection._deadline(STOP_LINGER, connection.phase)
        while self._busy() and self.loop.time() < deadline and not self.quick_exit:
            self.notify()
            await asyncio.sleep(0.1)
        for connection in list(self.connections):
            connection.abort()
        await asyncio.sleep(0)

    def _busy(self):
        """Whether a request is still being read, run or sent (a connection that only waits for the
        client's TLS close_notify or the end of a linger is not)."""
        return bool(self.running or self.waiting) or any(
            connection.phase in ("handshake", "head", "body", "app")
            or (connection.transport is not None and connection.transport.get_write_buffer_size() > 0)
            for connection in self.connections
        )

    def _listen(self, enabled):
        if enabled == self.listening or self.loop.is_closed():
            return
        for listener in self.sockets:
            if enabled:
                self.loop.add_reader(listener.fileno(), self._accept, listener)
            else:
                self.loop.remove_reader(listener.fileno())
        self.listening = enabled

    def _update_accepting(self):
        # A busy worker leaves its listeners watched: _accept stops watching them when a connection comes
        # meanwhile. Removing and adding them around every request cost about 8 % of a worker's CPU.
        self.accepting = self.alive and not self.waiting and self._thread_free()
        if self.accepting:
            self._listen(True)

    def _stop_accepting(self):
        self.accepting = False
        self._listen(False)

    def _thread_free(self):
        """Whether a request may start now: when none runs, or when fewer than `threads` do and the latest
        has run for SPARE_AFTER (then all have); otherwise a timer asks again when that could change."""
        if not self.running:
            return True
        if len(self.running) >= self.threads:
            return False
        ran = self.loop.time() - max(self.running.values())
        if ran >= SPARE_AFTER:
            return True
        if self.spare_check is not None:
            self.spare_check.cancel()
        self.spare_check = self.loop.call_later(SPARE_AFTER - ran, self._start_requests)
        return False

    def _accept(self, listener):
        # One connection per readiness of the listener (it stays readable while more wait): queued connections
        # then spread over the workers free to take them instead of all going to the first one that wakes.
        if not self.accepting:
            self._listen(False)  # the connection waits in the listen queue for a free worker, or for this one
            return
        try:
            client_sock, client = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors: drop the oldest reader; the connection stays queued meanwhile.
                self.log.warning("cannot accept a connection: %s", exc)
                self._evict()
                return
            if exc.errno == errno.ECONNABORTED:
                return
            raise
        client_sock.setblocking(False)
        if len(self.connections) >= self.deadlines.max_connections and not self._evict():
            client_sock.close()
            return
        self._open(client_sock, client, listener.getsockname())

    def _evict(self):
        """Drop the connection that has been reading its request the longest; False when there is none."""
        for connection in self.reading:
            connection.abort()
            self.reading.pop(connection, None)
            self.connections.discard(connection)
            return True
        return False

    def _open(self, client_sock, client, server):
        connection = _Connection(self, client, server, self.contexts.last if self.contexts else None)
        self.connections.add(connection)
        self.reading[connection] = None
        connection.task = self.loop.create_task(self._connect(connection, client_sock))
        connection.task.add_done_callback(functools.partial(self._handshake_done, connection, client_sock))

    async def _connect(self, connection, client_sock):
        if connection.tls_context is not None:
            connection.tls_context = await self.contexts.get()
        await self.loop.connect_accepted_socket(lambda: connection, client_sock)

    def _handshake_done(self, connection, client_sock, task):
        connection.task = None
        if connection.transport is not None:
            return
        # No answer to give: a handshake that failed or timed out, or a connection dropped for another
        # (perhaps before the task ran at all). Closing the socket again after asyncio did is harmless.
        client_sock.close()
        self.forget(connection)
        if not task.cancelled() and task.exception() is not None:
            self.log.debug("connection from %s ended before its request: %r", connection.client[0], task.exception())

    def forget(self, connection):
        self.reading.pop(connection, None)
        self.connections.discard(connection)

    # --- the application's threads ----------------------------------------------------------------------

    def dispatch(self, connection, environ):
        self.reading.pop(connection, None)
        self.waiting.append((connection, environ, self.loop.time()))
        self._start_requests()

    def _start_requests(self):
        while self.waiting and self._thread_free():
            connection, environ, received = self.waiting.popleft()
            self.running[connection] = self.loop.time()
            if self.on_loop(environ):
                self.loop.call_soon(self._run_on_loop, connection, environ, received)
            else:
                self.jobs.put((connection, environ, received))
        self._update_accepting()

    def _run_on_loop(self, connection, environ, received):
        try:
            with on_loop.running():
                status, data = self._call_app(environ)
        except on_loop.LeaveLoop:  # long work ahead, nothing changed yet: a thread runs it from the start
            environ["wsgi.input"].seek(0)
            self.jobs.put((connection, environ, received))
            return
        except BaseException:  # as in a thread: the connection gets its answer, the worker its slot; then it ends
            self._answered(connection, "500", _internal_error(environ), received)
            raise
        self._answered(connection, status, data, received)

    def _thread(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            connection, environ, received = job
            try:
                status, data = self._call_app(environ)
            except BaseException:  # even then the connection gets its answer and the worker its thread back
                status, data = "500", _internal_error(environ)
            with contextlib.suppress(RuntimeError):  # the loop is closed: the worker is gone
                self.loop.call_soon_threadsafe(self._answered, connection, status, data, received)

    def _call_app(self, environ):
        """(status, answer bytes) of the application for one request; 500 when it fails."""
        response = []

        def start_response(status, headers, exc_info=None):
            if exc_info and response:
                raise exc_info[1].with_traceback(exc_info[2])
            response[:] = [status, headers]
            return chunks.append  # the WSGI write() callable

        chunks = []
        try:
            result = self.wsgi(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
            if not response:
                raise RuntimeError("the application returned without calling start_response")
            status, headers = response
            body = b"".join(chunks)
            if environ["REQUEST_METHOD"] == "HEAD":
                # No body, and the length a GET would have (the application's, when it says).
                length = next((v for k, v in headers if k.lower() == "content-length" and v.isdigit()), len(body))
                return status, http1.response_head(environ["SERVER_PROTOCOL"], status, headers, int(length))
            return status, http1.response_head(environ["SERVER_PROTOCOL"], status, headers, len(body)) + body
        except Exception:
            self.log.exception("Error handling request %s", environ.get("RAW_URI", "")[:200])
            return "500", _internal_error(environ)

    def _answered(self, connection, status, data, received):
        self.running.pop(connection, None)
        self._start_requests()
        self.nr += 1
        self.access(connection, status, len(data), self.loop.time() - received)
        connection.send(data)

    def access(self, connection, status, length, seconds=0.0):
        """One access log line (gunicorn's accesslog), with the attacker-controlled parts bounded."""
        if not self.cfg.accesslog:
            return
        logger = self.log.access_log
        if not logger.isEnabledFor(logging.INFO):
            return
        head = connection.head
        request_line = "%s %s %s" % (head.method, head.target, head.version) if head is not None else "-"
        agent = next((value for name, value in head.headers if name == "user-agent"), "-") if head else "-"
        args = (
            connection.client[0],
            _bounded(request_line, 300),
            str(status).split(" ", 1)[0],
            length,
            seconds * 1000.0,
            _bounded(agent, 100),
        )
        # As logger.info() without its search of the stack for the caller (no access log format shows it): a
        # fifth of the access log's cost.
        logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, ACCESS_FORMAT, args, None))


def _never(_environ):
    return False


def _internal_error(environ):
    return http1.error_response(environ["SERVER_PROTOCOL"], 500, "internal server error")


def _bounded(text, limit):
    if len(text) <= limit and text.isascii() and text.isprintable() and "\\" not in text:
        return text  # nearly always: nothing to escape
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else "%s...(%d characters)" % (text[:limit], len(text))
