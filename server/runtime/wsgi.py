# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Serve the app with gunicorn, a production WSGI server: HTTPS, and optionally plain HTTP for CMP.

Each worker process is a DeadlineWorker (worker.py): an event loop reads requests under deadlines and
only complete requests reach the worker's threads, so stalled clients hold no thread.

gunicorn applies TLS to every address one arbiter binds, so each kind of listener gets its own
arbiter (and workers). With both, `run` forks one child per arbiter and supervises them: SIGTERM,
SIGINT, SIGQUIT, SIGHUP and SIGUSR1 are passed on, and when one arbiter ends the other is stopped.
A child also gets SIGTERM when `run` itself dies (PR_SET_PDEATHSIG), so no arbiter outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import ssl
import sys
import time

from gunicorn.app.base import BaseApplication

from ..app import MAX_REQUEST_BYTES, create_app
from ..protocols.ahead import for_protocols
from .tls import ServerContexts
from .worker import Deadlines, DeadlineWorker

log = logging.getLogger(__name__)

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
GRACEFUL_TIMEOUT = 10
_PR_SET_PDEATHSIG = 1
# Default worker processes: one per CPU this process may run on, at most MAX_DEFAULT_WORKERS (SQLite
# takes one write at a time, and each worker holds its own copy of the app). See bench/README.md.
MAX_DEFAULT_WORKERS = 8
DEFAULT_THREADS = 2


def default_workers():
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_WORKERS))


class _Server(BaseApplication):
    def __init__(self, settings, options, plain_http=False, contexts=None):
        self.settings = settings
        self.options = options
        self.plain_http = plain_http
        self.contexts = contexts
        # What DeadlineWorker reads from its app.
        self.deadlines = Deadlines(
            handshake=settings.handshake_timeout,
            head=settings.header_timeout,
            body=settings.body_timeout,
            send=settings.body_timeout,
            max_connections=settings.max_connections,
            max_body=MAX_REQUEST_BYTES,
        )
        self.local_database = False  # set in the worker (load())
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            if key in self.cfg.settings:  # settings newer than the installed gunicorn are left out
                self.cfg.set(key, value)

    def load(self):
        # Each worker builds its own app, engine and connection pool after the fork.
        app = create_app(self.settings, plain_http=self.plain_http)
        self.local_database = app.extensions["trustpoint"].engine.dialect.name == "sqlite"
        if self.contexts is not None:
            # The client CA bundle comes from the worker's own connection pool.
            self.contexts.use_database(app.extensions["trustpoint"].engine)
        # What exists now lives as long as the worker: over 100,000 objects, most of them the ASN.1
        # schemas of pyasn1-alt-modules. Every full (generation 2) collection walked them all, a pause
        # of 40-100 ms in the middle of some request. Frozen, the collector no longer looks at them.
        gc.collect()
        gc.freeze()
        return app

    def on_loop(self, environ):
        """What DeadlineWorker asks: whether a complete request runs on the worker's loop rather than in one of its
        threads. The enrollment protocols' requests do when the database is local (SQLite): a few milliseconds of CPU
        that a thread's hand-over would add a tenth to. With PostgreSQL they wait on the network, and a thread lets the
        loop go on meanwhile. One that turns out long moves to a thread before that work (runtime/on_loop.py says
        which); a write that waits for another process's holds the loop (writes take turns anyway), new connections
        go to the other workers."""
        return self.local_database and for_protocols(environ)

    def __str__(self):
        return "%s on %s" % ("http" if self.plain_http else "https", ", ".join(self.options["bind"]))


def _options(listen, workers, threads, log_level, name):
    return {
        "bind": list(listen),
        "workers": workers,
        "threads": threads,
        # Answers close their connection (keep-alive would let a CMP client's delayed ACK stall certConf
        # by ~40 ms per message, see the reference notes); a worker accepts only while a thread is free.
        "worker_class": DeadlineWorker,
        "loglevel": log_level,
        "accesslog": "-",
        "errorlog": "-",
        "proc_name": name,
        "timeout": 60,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        # gunicorn 25+ opens a control socket at one path per user (~/.gunicorn/gunicorn.ctl): every server
        # the user runs (two with --listen-plain) would take it from the one before. Nothing here uses it.
        "control_socket_disable": True,
    }


def serve(
    settings,
    listen=(),
    listen_plain=(),
    tls_cert=None,
    tls_key=None,
    workers=None,
    threads=None,
    log_level="info",
    companions=(),
):
    """Serve HTTPS on every address of listen (with tls_cert/tls_key), plain HTTP on listen_plain.

    workers and threads apply to each of the two; None: default_workers() and DEFAULT_THREADS.
    companions: more processes to supervise beside the arbiters (objects with run(), such as the mDNS
    advertiser): each runs in its own child and gets the same signals.
    """
    workers = default_workers() if workers is None else workers
    threads = DEFAULT_THREADS if threads is None else threads
    servers = []
    if listen:
        try:
            contexts = ServerContexts(tls_cert, tls_key)  # a bad certificate or key fails here, before any fork
        except (OSError, ssl.SSLError) as exc:
            raise SystemExit("cannot serve HTTPS with %s and %s: %s" % (tls_cert, tls_key, exc)) from exc
        options = _options(listen, workers, threads, log_level, "trustpoint-server-https")
        # gunicorn turns TLS on when certfile is set; the hook hands each connection ServerContexts' context.
        options.update(certfile=tls_cert, keyfile=tls_key, ssl_context=contexts.gunicorn_hook())
        servers.append(_Server(settings, options, contexts=contexts))
    if listen_plain:
        options = _options(listen_plain, workers, threads, log_level, "trustpoint-server-http")
        servers.append(_Server(settings, options, plain_http=True))
    if not servers:
        raise ValueError("nothing to listen on")
    servers.extend(companions)
    if len(servers) == 1:
        servers[0].run()
        return 0
    return _supervise(servers)


def _die_with_parent(parent):
    """Have the kernel send SIGTERM to this process when its parent dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def _run_child(server, parent):
    """The forked child: run one gunicorn arbiter, never return."""
    code = 1
    try:
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        _die_with_parent(parent)
        server.run()
        code = 0
    except SystemExit as exc:  # gunicorn's arbiter ends with sys.exit()
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        log.exception("%s failed", server)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _exit_code(status):
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _supervise(servers):
    """Run each server's arbiter in a child process until a stop signal or until one of them ends."""
    children = {}
    stop_requested = []  # when the first stop signal came

    def forward(signum, _frame):
        if signum in STOP_SIGNALS and not stop_requested:
            stop_requested.append(time.monotonic())
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    # Signals wait until the handlers are in place and every child is forked; the children unblock them.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    parent = os.getpid()
    for server in servers:
        pid = os.fork()
        if pid == 0:
            _run_child(server, parent)
        children[pid] = server
        log.info("serving %s (gunicorn arbiter pid %d)", server, pid)
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)

    exit_code, killed = 0, False
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            # gunicorn stops its workers within its graceful timeout; an arbiter still there after it is stuck.
            if stop_requested and not killed and time.monotonic() > stop_requested[0] + GRACEFUL_TIMEOUT + 5:
                for child, server in children.items():
                    log.error("%s (pid %d) did not stop; killing it", server, child)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                killed = True
            time.sleep(0.1)
            continue
        server = children.pop(pid, None)
        if server is not None and not stop_requested:
            exit_code = _exit_code(status) or 1
            log.error("%s ended (exit code %d); stopping the rest", server, _exit_code(status))
            forward(signal.SIGTERM, None)
    return exit_code
