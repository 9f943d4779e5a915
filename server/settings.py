# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every setting of the service, in one place: the configuration file, the environment, the command line.

A setting is a field of Settings declared with setting(). Its name is its key in the configuration file
(TOML, given by --config FILE or $TRUSTPOINT_CONFIG), TRUSTPOINT_<NAME> in the environment and
--<name-with-dashes> on the command line of the commands it names. The command line wins over the
environment, the environment over the file, the file over the default. A new setting is one field
here: the commands, the file and the environment take it from there (docs/server.md lists it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from dataclasses import dataclass
from typing import Optional, Tuple
from urllib.parse import urlsplit

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

log = logging.getLogger(__name__)

INIT, MIGRATE, OPERATOR, RUN, SETTINGS = "init", "migrate", "operator", "run", "settings"
COMMANDS = (INIT, MIGRATE, OPERATOR, RUN, SETTINGS)
CONFIG_ENV = "TRUSTPOINT_CONFIG"
ENV_PREFIX = "TRUSTPOINT_"
LOG_LEVELS = ("debug", "info", "warning", "error")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names where it came from and what is wrong."""


def setting(default=None, *, kind=str, help, commands=(RUN, SETTINGS), metavar=None, choices=None):
    """A field that is a setting. kind: str, int, bool or list (of strings, a tuple once loaded)."""
    # Returned into the body of the Settings dataclass, where field() belongs.
    # pylint: disable-next=invalid-field-call
    return dataclasses.field(
        default=tuple(default or ()) if kind is list else default,
        metadata={"kind": kind, "help": help, "commands": commands, "metavar": metavar, "choices": choices},
    )


@dataclass
class Settings:
    data_dir: Optional[str] = setting(
        help="data directory: vault key, SQLite database, admin token, TLS files", commands=COMMANDS, metavar="DIR"
    )
    database_url: Optional[str] = setting(
        help="SQLAlchemy URL of the database (default: SQLite in the data directory)", commands=COMMANDS, metavar="URL"
    )
    tls_san: Tuple[str, ...] = setting(
        kind=list,
        commands=(INIT, SETTINGS),
        metavar="NAME_OR_IP",
        help="a DNS name or IP address clients reach the server at, besides localhost, 127.0.0.1, ::1 and the "
        "host name; repeat for several (a certificate lacking one is reissued)",
    )
    listen: Tuple[str, ...] = setting(
        kind=list,
        metavar="HOST:PORT",
        help="address to serve HTTPS on; repeat for several (default 127.0.0.1:8443 unless listen_plain is set)",
    )
    listen_plain: Tuple[str, ...] = setting(
        kind=list,
        metavar="HOST:PORT",
        help="address to serve plain HTTP on, for CMP, CRLs and /healthz only; repeat for several",
    )
    tls_cert: Optional[str] = setting(
        metavar="FILE", help="PEM certificate chain to serve instead of the one `init` issued (DATA/tls-cert.pem)"
    )
    tls_key: Optional[str] = setting(metavar="FILE", help="the private key of tls_cert (PEM)")
    workers: Optional[int] = setting(
        kind=int, metavar="N", help="worker processes per listener kind (default: one per CPU, at most 8)"
    )
    threads: Optional[int] = setting(
        kind=int, metavar="N", help="threads per worker, the requests one worker serves at once (default 2)"
    )
    # Largest accepted difference between a CMP messageTime and the server's clock (0: not checked).
    cmp_max_clock_skew: int = setting(
        600, kind=int, metavar="SECONDS", help="reject CMP messages whose messageTime is further off (0: off)"
    )
    # The MAC work a CMP request may cost before it is authenticated (docs/server.md, "CMP policy").
    cmp_max_mac_iterations: int = setting(
        1000000, kind=int, metavar="N", help="the highest PBMAC1 iteration count a CMP request may ask for"
    )
    cmp_mac_budget: int = setting(
        2000000,
        kind=int,
        metavar="N",
        help="MAC iterations (PBM, PBMAC1) per second a worker spends on CMP requests not yet authenticated; "
        "beyond it they are refused with systemUnavail (0: no budget)",
    )
    # Base URL of the server as devices and relying parties reach it, for the CRL distribution point
    # of issued certificates; without it the URL of the request that caused the issuance is used.
    public_url: Optional[str] = setting(
        metavar="URL",
        help="base URL devices reach the server at, for the CRL distribution point of issued certificates "
        "(default: the host each request named, at the plain-HTTP listener's port when there is one)",
    )
    # The domain EST serves at the label-less /.well-known/est/<operation> (RFC 7030 3.2.2), for clients
    # that cannot name one.
    est_default_domain: Optional[str] = setting(
        metavar="DOMAIN", help="domain served at /.well-known/est/<operation> without a label"
    )
    mdns_interface: Tuple[str, ...] = setting(
        kind=list,
        metavar="ADDRESS_OR_NAME",
        help="advertise AOKI (_aoki._tcp) over mDNS on this interface (an IPv4 address of this host or an interface "
        "name such as eth0) so that devices find the server by themselves; repeat for several. The HTTPS port is "
        "that of the listen address on it",
    )
    mdns_instance: Optional[str] = setting(
        metavar="NAME",
        help="the mDNS service instance name, unique on the network (default: AOKI Owner Service <host>)",
    )
    agent_wheels: Optional[str] = setting(
        metavar="DIR",
        help="directory of the trustpoint-agent wheels (and their dependencies) served at /agent/ "
        "(default: DATA/agent-wheels)",
    )
    log_level: str = setting("info", choices=LOG_LEVELS, help="log level")
    # Not a setting: the port of the plain-HTTP listener, if any, where CRL distribution points point.
    plain_port: Optional[int] = None
    # Not settings either (`run` sets them): the certificate chain the HTTPS listeners present (AOKI's
    # tls-truststore, the agent's token pin it) and the IPv4 addresses mDNS advertises on.
    tls_cert_file: Optional[str] = None
    mdns_addresses: Tuple[str, ...] = ()

    @classmethod
    def load(cls, given=None, environ=None, config_file=None):
        """Settings from the command line's values (given: name -> value, None for not given), the
        environment and the configuration file (config_file, else $TRUSTPOINT_CONFIG)."""
        environ = os.environ if environ is None else environ
        path = config_file or environ.get(CONFIG_ENV)
        values = read_file(path) if path else {}
        for field in fields():
            name = ENV_PREFIX + field.name.upper()
            if environ.get(name, "") != "":
                values[field.name] = convert(field, environ[name], "$%s" % name, from_text=True)
        values.update({name: value for name, value in (given or {}).items() if value is not None})
        if not values.get("data_dir"):
            raise SettingsError(
                "no data directory: pass --data-dir, set TRUSTPOINT_DATA_DIR or data_dir in the configuration file"
            )
        values = {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}
        return cls(**values)


def fields():
    """The settings (fields declared with setting()), in the order above."""
    return [field for field in dataclasses.fields(Settings) if "kind" in field.metadata]


def option(field):
    return "--" + field.name.replace("_", "-")


def convert(field, value, where, from_text=False):
    """value as the setting's kind, or SettingsError naming where it came from."""
    kind = field.metadata["kind"]
    if kind is list:
        if from_text:  # the environment: separated by commas or white space
            value = value.replace(",", " ").split()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise SettingsError("%s: %s must be a list of strings" % (where, field.name))
        return value
    if kind is int:
        if from_text:
            try:
                value = int(value)
            except ValueError:
                raise SettingsError("%s: %s must be an integer, not %r" % (where, field.name, value)) from None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SettingsError("%s: %s must be a whole number >= 0, not %r" % (where, field.name, value))
        return value
    if kind is bool:
        if from_text and value.lower() in _TRUE + _FALSE:
            value = value.lower() in _TRUE
        if not isinstance(value, bool):
            raise SettingsError("%s: %s must be true or false, not %r" % (where, field.name, value))
        return value
    if not isinstance(value, str):
        raise SettingsError("%s: %s must be a string, not %r" % (where, field.name, value))
    choices = field.metadata["choices"]
    if choices and value not in choices:
        raise SettingsError("%s: %s must be one of %s, not %r" % (where, field.name, ", ".join(choices), value))
    return value


def masked_url(url):
    """url with its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":%s@" % parts.password, ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def read_file(path):
    """The settings a TOML configuration file sets (name -> value), checked."""
    try:
        with open(path, "rb") as handle:
            status = os.fstat(handle.fileno())
            data = tomllib.load(handle)
    except OSError as exc:
        raise SettingsError("cannot read the configuration file %s: %s" % (path, exc.strerror)) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError("the configuration file %s is not valid TOML: %s" % (path, exc)) from None
    known = {field.name: field for field in fields()}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SettingsError(
            "%s: unknown setting%s %s (known: %s)"
            % (path, "s" if len(unknown) > 1 else "", ", ".join(unknown), ", ".join(known))
        )
    values = {name: convert(known[name], value, path) for name, value in data.items()}
    if values.get("database_url") and urlsplit(values["database_url"]).password and status.st_mode & stat.S_IROTH:
        log.warning("%s holds a database password and every user can read it: chmod o-r %s", path, path)
    return values
