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

from trustpoint_core.keys import KEY_TYPES

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

log = logging.getLogger(__name__)

INIT, MIGRATE, OPERATOR, RUN, SETTINGS, ROTATE = "init", "migrate", "operator", "run", "settings", "rotate-vault-key"
COMMANDS = (INIT, MIGRATE, OPERATOR, RUN, SETTINGS, ROTATE)
CONFIG_ENV = "TRUSTPOINT_CONFIG"
ENV_PREFIX = "TRUSTPOINT_"
LOG_LEVELS = ("debug", "info", "warning", "error")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names where it came from and what is wrong."""


def setting(default=None, *, kind=str, help, commands=(RUN, SETTINGS), metavar=None, choices=None, minimum=0):
    """A field that is a setting. kind: str, int, bool or list (of strings, a tuple once loaded); an int is
    at least minimum."""
    # Returned into the body of the Settings dataclass, where field() belongs.
    # pylint: disable-next=invalid-field-call
    return dataclasses.field(
        default=tuple(default or ()) if kind is list else default,
        metadata={
            "kind": kind,
            "help": help,
            "commands": commands,
            "metavar": metavar,
            "choices": choices,
            "minimum": minimum,
        },
    )


@dataclass
class Settings:
    data_dir: Optional[str] = setting(
        help="data directory: vault key, SQLite database, admin token, TLS files", commands=COMMANDS, metavar="DIR"
    )
    database_url: Optional[str] = setting(
        help="SQLAlchemy URL of the database (default: SQLite in the data directory)", commands=COMMANDS, metavar="URL"
    )
    # How SQLite reads its file (storage/db.py); PostgreSQL sizes its own memory on the database server.
    sqlite_mmap_size: int = setting(
        0,
        kind=int,
        metavar="MIB",
        help="read this much of the SQLite database file through a memory map instead of read calls, in MiB "
        "(0: none, SQLite's default; SQLite maps at most 2 GiB)",
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
        help="address to serve plain HTTP on, for CMP, CRLs, /healthz and /readyz only; repeat for several",
    )
    tls_cert: Optional[str] = setting(
        metavar="FILE", help="PEM certificate chain to serve instead of the one `init` issued (DATA/tls-cert.pem)"
    )
    tls_key: Optional[str] = setting(metavar="FILE", help="the private key of tls_cert (PEM)")
    workers: Optional[int] = setting(
        kind=int, metavar="N", help="worker processes per listener kind (default: one per CPU, at most 8)"
    )
    threads: Optional[int] = setting(
        kind=int,
        metavar="N",
        help="threads per worker, the requests one worker runs at once at most: "
        "beyond the first only beside requests running for 50 ms (default 2)",
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
    # Base URL of the server as devices and relying parties reach it, for the CRL distribution point of
    # issued certificates; without it run derives one from the addresses it listens on (crl_base_url).
    public_url: Optional[str] = setting(
        metavar="URL",
        help="base URL devices reach the server at, for the CRL distribution point of issued certificates "
        "(default: the first listen_plain address, else the first listen address; never a request's Host)",
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
    # Deadlines of a client's connection and the connections a worker holds (runtime/worker.py).
    handshake_timeout: int = setting(
        10, kind=int, minimum=1, metavar="SECONDS", help="a client's TLS handshake must end within this time"
    )
    header_timeout: int = setting(
        10, kind=int, minimum=1, metavar="SECONDS", help="a request's line and headers must arrive within this time"
    )
    body_timeout: int = setting(
        30,
        kind=int,
        minimum=1,
        metavar="SECONDS",
        help="a request's body must arrive within this time, and the client take the answer within it again",
    )
    max_connections: int = setting(
        4096,
        kind=int,
        minimum=1,
        metavar="N",
        help="connections one worker process holds at most; at the bound the one reading its request the "
        "longest is dropped (within the file descriptor limit)",
    )
    # Budgets of failed authentications and the lockout of a device's secret (services/auth_limits.py).
    auth_failure_budget: int = setting(
        10,
        kind=int,
        metavar="N",
        help="failed authentications per minute allowed per source address and per device before further "
        "attempts are refused for a while (0: no budget)",
    )
    auth_lockout: int = setting(
        20,
        kind=int,
        metavar="N",
        help="failed attempts in a row that lock a device's one-time secret until an operator unlocks it (0: never)",
    )
    # What /readyz asks of the data directory's file system (services/health.py).
    min_free_space: int = setting(
        64,
        kind=int,
        metavar="MIB",
        help="free space the data directory needs for /readyz to answer ready (0: not checked)",
    )
    # Where the vault key is when not in the data directory (runtime/vault.py also takes it from
    # $TRUSTPOINT_VAULT_KEY or the systemd credential trustpoint-vault-key).
    vault_key_file: Optional[str] = setting(
        metavar="FILE",
        commands=COMMANDS,
        help="the vault key, outside the data directory (default: DATA/vault.key; $TRUSTPOINT_VAULT_KEY or the "
        "systemd credential trustpoint-vault-key may hold it instead)",
    )
    new_vault_key_file: Optional[str] = setting(
        metavar="FILE",
        commands=(ROTATE,),
        help="the new vault key (created unless it exists); required when the key comes from the environment or "
        "systemd; default for a key file: replace it, keeping the old one as <file>.retired-<time>",
    )
    confirm_window_minutes: int = setting(
        10,
        kind=int,
        minimum=1,
        metavar="MINUTES",
        help="how long a CMP certificate awaits its certConf before it is revoked",
    )
    secret_retry_minutes: int = setting(
        30,
        kind=int,
        metavar="MINUTES",
        help="how long a used one-time secret or password still onboards the device again while the credential it "
        "obtained is unused, for a device whose answer was lost (0: never)",
    )
    renewal_grace_hours: int = setting(
        168,
        kind=int,
        metavar="HOURS",
        help="how long a renewed certificate still renews (nothing else) while its successor is unused",
    )
    max_certificates_per_day: int = setting(
        100, kind=int, metavar="N", help="certificates one device may obtain in 24 hours (0: no limit)"
    )
    serverkeygen_key_types: Tuple[str, ...] = setting(
        ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072"),
        kind=list,
        metavar="KEY_TYPE",
        help="a key type EST serverkeygen generates; repeat for several (RSA-4096 costs about 0.6 s of CPU each)",
    )
    log_level: str = setting("info", choices=LOG_LEVELS, help="log level")
    # Not settings: what run derives from listen_plain / listen for CRL distribution points without public_url,
    # and the plain-HTTP listener's port, for the CMP URLs the help pages show.
    listen_url: Optional[str] = None
    plain_port: Optional[int] = None
    # Not settings either (`run` sets them): the certificate chain the HTTPS listeners present (AOKI's
    # tls-truststore, the agent's token pin it) and the IPv4 addresses mDNS advertises on.
    tls_cert_file: Optional[str] = None
    mdns_addresses: Tuple[str, ...] = ()

    def __post_init__(self):
        unknown = sorted(set(self.serverkeygen_key_types) - set(KEY_TYPES))
        if unknown:
            raise SettingsError(
                "serverkeygen_key_types: unknown key type(s) %s; known: %s" % (", ".join(unknown), ", ".join(KEY_TYPES))
            )

    @property
    def crl_base_url(self):
        """Base URL of the CRL distribution points: public_url, else the listener's address, else None."""
        return self.public_url or self.listen_url

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
        known = {field.name: field for field in fields()}
        values.update(
            {
                name: convert(known[name], value, option(known[name])) if name in known else value
                for name, value in (given or {}).items()
                if value is not None
            }
        )
        if not values.get("data_dir"):
            raise SettingsError(
                "no data directory: pass --data-dir, set TRUSTPOINT_DATA_DIR or data_dir in the configuration file"
            )
        values = {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}
        # A relative path is relative to where the command started, once: Flask's send_file resolves one against
        # the code's directory (a quickstart's `--data-dir ./tp-data` served no agent wheel).
        for field in fields():
            if field.metadata["metavar"] in ("FILE", "DIR") and values.get(field.name):
                values[field.name] = os.path.abspath(values[field.name])
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
        minimum = field.metadata["minimum"]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SettingsError("%s: %s must be a whole number >= %d, not %r" % (where, field.name, minimum, value))
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
