# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Finding owner services on the local network: DNS-SD `_aoki._tcp` over mDNS (python-zeroconf).

mDNS is unauthenticated: a candidate is only an address to ask. The TXT records (`path`, `tlsfp`, see
the server's runtime/mdns.py) save guessing; servers without them (upstream) get the defaults.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from trustpoint_core import aoki

from .onboarding import AgentError

log = logging.getLogger("trustpoint_agent")


class Candidate:
    """An advertised owner service: its base URL, init path, TLS fingerprint (or None) and instance name."""

    def __init__(self, name, address, port, txt):
        self.name = name
        self.url = "https://%s:%d" % (address, port)
        self.init_path = txt.get(aoki.TXT_INIT_PATH) or aoki.INIT_PATH
        if not self.init_path.startswith("/"):
            self.init_path = aoki.INIT_PATH
        fingerprint = txt.get(aoki.TXT_TLS_FINGERPRINT) or ""
        self.tls_fingerprint = fingerprint[len("sha256:") :].lower() if fingerprint.startswith("sha256:") else None

    def __repr__(self):
        return "%s (%s)" % (self.url, self.name)


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def discover(timeout=5.0, interfaces=None):
    """The owner services that answer within timeout seconds, in the order they were found.

    interfaces: IPv4 addresses of this device to browse on (default: all). Raises AgentError when mDNS cannot
    run this round (a socket error, python-zeroconf's event loop blocked on a loaded device): the caller tries
    again later.
    """
    from zeroconf import Error as ZeroconfError

    try:
        return _browse(timeout, interfaces)
    except (ZeroconfError, OSError) as exc:
        raise AgentError("mDNS discovery failed: %s" % (str(exc) or type(exc).__name__)) from exc


def _browse(timeout, interfaces):
    from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

    options = {"ip_version": IPVersion.V4Only}
    if interfaces:
        options["interfaces"] = list(interfaces)
    zeroconf = Zeroconf(**options)
    names = []
    lock = threading.Lock()

    def changed(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added:
            with lock:
                if name not in names:
                    names.append(name)

    candidates = []
    try:
        ServiceBrowser(zeroconf, aoki.SERVICE_TYPE, handlers=[changed])
        deadline = time.monotonic() + timeout
        # Wait the whole timeout: several servers may answer, and a device should see them all.
        while time.monotonic() < deadline:
            time.sleep(0.1)
        with lock:
            found = list(names)
        for name in found:
            info = zeroconf.get_service_info(aoki.SERVICE_TYPE, name, timeout=3000)
            if info is None or not info.port:
                log.info("mDNS: %s did not resolve", name)
                continue
            txt = {_text(k): _text(v) for k, v in (info.properties or {}).items() if v is not None}
            for raw in info.addresses:
                if len(raw) == 4:
                    candidates.append(Candidate(name, socket.inet_ntoa(raw), info.port, txt))
    finally:
        zeroconf.close()
    return candidates
