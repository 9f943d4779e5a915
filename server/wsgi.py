# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Serve the app with gunicorn, a production WSGI server."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from .app import create_app


class _Server(BaseApplication):
    def __init__(self, settings, options):
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # Each worker builds its own app, engine and connection pool after the fork.
        return create_app(self.settings)


def serve(settings, listen, workers=2, threads=4, log_level="info"):
    options = {
        "bind": list(listen),
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        # Answer and close: keep-alive would let a CMP client's delayed ACK stall certConf by
        # ~40 ms per message (see the reference notes), and idle devices would hold threads.
        "keepalive": 0,
        "loglevel": log_level,
        "accesslog": "-",
        "errorlog": "-",
        "proc_name": "trustpoint-server",
        "timeout": 60,
        "graceful_timeout": 10,
    }
    _Server(settings, options).run()
