# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""mDNS / DNS-SD advertisement of AOKI (python-zeroconf): `_aoki._tcp` on the interfaces `run` names.

Upstream advertises `_aoki._tcp` without TXT records; devices that ignore TXT still work. The TXT
records here let a device connect without guessing:

    ver=1.0                                          the aoki-init version
    path=/aoki/init/                                 the init path (TLS client authentication)
    cmppath=/.well-known/cmp/p/.aoki/initialization  AOKI over CMP
    tlsfp=sha256:<hex>                               SHA-256 of the TLS certificate the server presents

mDNS is unauthenticated: the TXT records help a device find the server, they prove nothing. The device
trusts the server only after it has checked the signed aoki-init answer.

The advertiser runs in its own process beside the gunicorn arbiters (runtime/wsgi.py supervises it),
withdraws the service (goodbye packets) when it is stopped, and writes its state to DATA/mdns-status.json,
which the API reports (GET /api/v1/aoki).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import threading

from trustpoint_core import aoki, x509

from .tls import served_chain

log = logging.getLogger(__name__)

STATUS_FILE = "mdns-status.json"
# How often the advertiser looks whether the TLS certificate (its TXT fingerprint) changed.
RECHECK_SECONDS = 30
# A DNS-SD instance name is one DNS label: at most 63 bytes.
MAX_INSTANCE = 63
_WILDCARDS = ("", "0.0.0.0", "*")  # noqa: S104 (listen addresses that cover every interface)


def default_instance():
    return ("AOKI Owner Service %s" % socket.gethostname())[:MAX_INSTANCE]


def resolve_interfaces(names):
    """The IPv4 addresses of the interfaces named (an IPv4 address, or an interface name such as eth0).

    Raises ValueError for a name that is neither, or an interface without an IPv4 address.
    """
    import ifaddr  # zeroconf's own dependency

    adapters = {adapter.nice_name: adapter for adapter in ifaddr.get_adapters()}
    local = {ip.ip for adapter in adapters.values() for ip in adapter.ips if isinstance(ip.ip, str)}
    addresses = []
    for name in names:
        try:
            address = str(ipaddress.IPv4Address(name))
        except ValueError:
            adapter = adapters.get(name)
            if adapter is None:
                raise ValueError(
                    "--mdns-interface %r is neither an IPv4 address nor an interface of this host (%s)"
                    % (name, ", ".join(sorted(adapters)))
                ) from None
            found = [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]
            if not found:
                raise ValueError("--mdns-interface %s has no IPv4 address" % name) from None
            addresses.extend(found)
            continue
        if address not in local:
            raise ValueError("--mdns-interface %s is not an address of this host" % address)
        addresses.append(address)
    return list(dict.fromkeys(addresses))


def advertised_port(addresses, listen):
    """The HTTPS port devices reach on every mDNS address: of the --listen entry on that address (or on
    0.0.0.0). Raises ValueError when an address has none, or when they differ."""
    ports = set()
    for address in addresses:
        matching = [
            int(port)
            for host, _sep, port in (entry.rpartition(":") for entry in listen)
            if host.strip("[]") == address or host in _WILDCARDS
        ]
        if not matching:
            raise ValueError(
                "--mdns-interface %s: no --listen address serves HTTPS there; add --listen %s:PORT" % (address, address)
            )
        ports.add(matching[0])
    if len(ports) > 1:
        raise ValueError("the mDNS addresses are served on different HTTPS ports (%s); use one" % sorted(ports))
    return ports.pop()


def txt_records(cert_file):
    chain = served_chain(cert_file)
    records = {
        aoki.TXT_VERSION: aoki.VERSION,
        aoki.TXT_INIT_PATH: aoki.INIT_PATH,
        aoki.TXT_CMP_PATH: aoki.CMP_PATH,
    }
    if chain:
        records[aoki.TXT_TLS_FINGERPRINT] = "sha256:" + x509.fingerprint(chain[0])
    return records


def _write_status(data_dir, status):
    path = os.path.join(data_dir, STATUS_FILE)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "w") as handle:
        json.dump(status, handle)
    os.replace(tmp, path)


def status(settings):
    """What GET /api/v1/aoki says of mDNS: enabled, and the advertiser's state as it last wrote it."""
    if not settings.mdns_addresses:
        return {"enabled": False}
    try:
        with open(os.path.join(settings.data_dir, STATUS_FILE)) as handle:
            current = json.load(handle)
    except (OSError, ValueError):
        current = {"state": "starting"}
    pid = current.get("pid")
    if current.get("state") == "advertising" and pid and not _alive(pid):
        current["state"] = "stopped"
    return dict(current, enabled=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Advertiser:
    """Advertises `_aoki._tcp` at addresses (port, instance name, TXT of cert_file) until SIGTERM/SIGINT."""

    def __init__(self, data_dir, addresses, port, instance, cert_file):
        self.data_dir = data_dir
        self.addresses = list(addresses)
        self.port = port
        self.instance = instance
        self.cert_file = cert_file
        self._txt = None
        self._stop = threading.Event()

    def __str__(self):
        return "mDNS advertiser of %r on %s" % (self.instance, ", ".join(self.addresses))

    def _info(self, txt):
        from zeroconf import ServiceInfo

        host = socket.gethostname().split(".")[0] or "trustpoint"
        return ServiceInfo(
            aoki.SERVICE_TYPE,
            "%s.%s" % (self.instance, aoki.SERVICE_TYPE),
            addresses=[socket.inet_aton(address) for address in self.addresses],
            port=self.port,
            properties=txt,
            server="%s.local." % host,
        )

    def _status(self, state, info=None, error=None):
        current = {
            "state": state,
            "instance": info.name[: -len(aoki.SERVICE_TYPE) - 1] if info is not None else self.instance,
            "service_type": aoki.SERVICE_TYPE,
            "addresses": self.addresses,
            "port": self.port,
            "txt": {k.decode() if isinstance(k, bytes) else k: v for k, v in (self._txt or {}).items()},
            "pid": os.getpid(),
        }
        if error:
            current["error"] = error
        try:
            _write_status(self.data_dir, current)
        except OSError as exc:
            log.warning("cannot write %s: %s", STATUS_FILE, exc)

    def stop(self, *_args):
        self._stop.set()

    def run(self):
        """Advertise until stopped; register again after a failure. Returns after withdrawing."""
        from zeroconf import IPVersion, Zeroconf

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, self.stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        self._txt = txt_records(self.cert_file)
        self._status("starting")
        while not self._stop.is_set():
            zeroconf = info = None
            try:
                zeroconf = Zeroconf(interfaces=self.addresses, ip_version=IPVersion.V4Only)
                info = self._info(self._txt)
                zeroconf.register_service(info, allow_name_change=True)
                log.info("advertising %s on %s port %d: %s", info.name, ", ".join(self.addresses), self.port, self._txt)
                self._status("advertising", info)
                while not self._stop.wait(RECHECK_SECONDS):
                    txt = txt_records(self.cert_file)
                    if txt != self._txt:  # a new TLS certificate: a new fingerprint
                        self._txt = txt
                        info = self._info(txt)
                        zeroconf.update_service(info)
                        log.info("updated the TXT records of %s: %s", info.name, txt)
                        self._status("advertising", info)
            except Exception as exc:  # an interface went away, a socket error: try again later
                log.exception("mDNS advertisement failed; trying again in %d s", RECHECK_SECONDS)
                self._status("failed", info, error=str(exc)[:300])
                self._stop.wait(RECHECK_SECONDS)
            finally:
                if zeroconf is not None:
                    with contextlib.suppress(Exception):
                        if info is not None:
                            zeroconf.unregister_service(info)  # goodbye packets: devices forget us at once
                    zeroconf.close()
        self._status("withdrawn")
        log.info("withdrew the mDNS advertisement %r", self.instance)
