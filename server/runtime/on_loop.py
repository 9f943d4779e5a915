# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Requests that run on a worker's event loop (runtime/worker.py), and how one that turns out long leaves it.

The enrollment protocols' requests run on the loop when the database is local (runtime/wsgi.py on_loop()): a few
milliseconds of CPU, without a thread's hand-over. A few take much longer, and the loop would serve none of the
worker's other connections meanwhile: an RSA key the server generates (CMP central key generation, EST serverkeygen:
tens of milliseconds to seconds), a MAC of many iterations (a CMP client chooses the count, before it is
authenticated), a legacy scrypt EST password (76 ms), a CRL that a CMP genm has issued anew. Such a request calls
long_work_ahead() before that work and before it has changed anything; on the loop that raises LeaveLoop, and the
worker runs the request again from its start in a thread.
"""

from __future__ import annotations

import contextlib
import threading

_state = threading.local()


class LeaveLoop(BaseException):
    """The request on the loop is about to do long work: the worker starts it again in a thread. A BaseException, so
    that the app's error handlers (except Exception) let it through; the app's context managers still end (its
    database session rolls back)."""


@contextlib.contextmanager
def running():
    """The worker runs a request on its loop within this."""
    _state.on_loop = True
    try:
        yield
    finally:
        _state.on_loop = False


def long_work_ahead():
    """Call before work that holds the CPU for long, and before the request changed anything: on a worker's loop the
    request leaves it (LeaveLoop); in a thread, a test or the CLI nothing happens."""
    if getattr(_state, "on_loop", False):
        raise LeaveLoop()
