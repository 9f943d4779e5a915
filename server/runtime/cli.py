# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""`trustpoint-server`: initialise a data directory, run the service, rotate the vault key."""

from __future__ import annotations

import argparse
import errno
import getpass
import ipaddress
import json
import logging
import os
import secrets
import socket
import sys

from sqlalchemy import select
from trustpoint_core import x509
from trustpoint_core.errors import InvalidInput, bounded

from .. import settings as config
from ..app import create_app
from ..errors import ApiError
from ..services import operators
from ..settings import Settings, SettingsError
from ..storage import migrate
from ..storage.db import engine_for, session_factory
from ..storage.models import ApiToken, Operator
from ..web.api import token_hash
from . import rotation, tls
from .vault import Vault, VaultError, create_key_file, encrypted_files, key_source, missing_key_advice

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 (a file name)
OPERATOR_PASSWORD_FILE = "operator-password"  # noqa: S105 (a file name)
FIRST_OPERATOR = "admin"
DEFAULT_LISTEN = "127.0.0.1:8443"
MAX_LOG_MESSAGE = 2048


class BoundedRecords(logging.Filter):
    """Cut every log message at MAX_LOG_MESSAGE characters: many quote what a client sent, and no client
    may fill the log with it."""

    def filter(self, record):
        message = record.getMessage()
        if len(message) > MAX_LOG_MESSAGE:
            record.msg, record.args = bounded(message, MAX_LOG_MESSAGE), None
        return True


def _write_private(path, data):
    """Create a file readable only by its owner; never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(data)


def init(settings):
    os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)  # also when it existed: it may hold the vault key
    source = key_source(settings.data_dir, settings.vault_key_file)
    missing = source.kind == "file" and not os.path.exists(source.path)
    if missing and encrypted_files(settings.data_dir):  # moved, mistyped: a new key there could decrypt nothing
        advice = missing_key_advice(settings.data_dir, source.path)
        raise VaultError("the vault key %s is missing; %s" % (source, advice))
    if source.kind == "file" and create_key_file(source.path):
        print("created the vault key %s" % source.path)
    vault = Vault.load(settings.data_dir, settings.vault_key_file)
    engine = engine_for(settings)
    _report_migration(migrate.upgrade(engine))
    token_path = os.path.join(settings.data_dir, ADMIN_TOKEN_FILE)
    with session_factory(engine)() as db:
        if db.scalar(select(ApiToken).where(ApiToken.name == "admin")) is None:
            token = "tp_" + secrets.token_urlsafe(32)
            db.add(ApiToken(name="admin", token_sha256=token_hash(token)))
            if os.path.exists(token_path):
                os.unlink(token_path)
            _write_private(token_path, token + "\n")
            db.commit()
            print("created the admin API token in %s" % token_path)
        elif not os.path.exists(token_path):
            print(
                "the database already has an admin token; its file is not in this data directory",
                file=sys.stderr,
            )
        if db.scalar(select(Operator.id).limit(1)) is None:
            password = operators.new_password()
            operators.create_operator(db, FIRST_OPERATOR, password)
            password_path = os.path.join(settings.data_dir, OPERATOR_PASSWORD_FILE)
            if os.path.exists(password_path):
                os.unlink(password_path)
            _write_private(password_path, password + "\n")
            db.commit()
            print(
                "created the operator %s for the web pages; the password is in %s (change it with "
                "`trustpoint-server operator password %s`)" % (FIRST_OPERATOR, password_path, FIRST_OPERATOR)
            )
    engine.dispose()
    for line in tls.ensure_server_certificate(settings.data_dir, vault, settings.tls_san):
        print(line)
    print(
        "data directory %s is ready; clients trust its TLS certificate through %s"
        % (settings.data_dir, os.path.join(settings.data_dir, tls.CA_FILE))
    )
    return 0


def _report_migration(revisions):
    before, after = revisions
    if before is None:
        print("created the database schema (revision %s)" % after)
    elif before != after:
        print("migrated the database schema from revision %s to %s" % (before, after))


def migrate_command(settings):
    engine = engine_for(settings)
    try:
        before, after = migrate.upgrade(engine)
    finally:
        engine.dispose()
    _report_migration((before, after))
    if before == after:
        print("the database schema is up to date (revision %s)" % after)
    return 0


def _read_password(args):
    """The operator password of --password-file, --password-stdin, a prompt, or a generated one (None)."""
    if args.password_file:
        with open(args.password_file) as handle:
            return handle.readline().rstrip("\r\n")
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if args.generate or not sys.stdin.isatty():
        return None
    first = getpass.getpass("password for %s: " % args.name)
    if first != getpass.getpass("the same password again: "):
        raise SystemExit("the two passwords differ; nothing changed")
    return first


def operator_command(settings, args):
    """Operator accounts of the web pages: create, password, delete, list."""
    if args.action != "list" and not args.name:
        raise ValueError("operator %s needs the operator's name" % args.action)
    _check_initialised(settings)
    engine = engine_for(settings)
    try:
        with session_factory(engine)() as db:
            if args.action == "list":
                for operator in db.scalars(select(Operator).order_by(Operator.username)):
                    last = (
                        operator.last_sign_in_at.strftime("%Y-%m-%dT%H:%M:%SZ") if operator.last_sign_in_at else "never"
                    )
                    print("%s\tlast sign-in %s" % (operator.username, last))
                return 0
            if args.action == "delete":
                operators.delete_operator(db, operators.get_operator(db, args.name))
                db.commit()
                print("deleted the operator %s" % args.name)
                return 0
            password = _read_password(args)
            shown = password is None
            password = password if password is not None else operators.new_password()
            if args.action == "create":
                operators.create_operator(db, args.name, password)
            else:
                operators.set_password(db, operators.get_operator(db, args.name), password)
            db.commit()
            verb = "created the operator" if args.action == "create" else "set a new password for"
            print("%s %s%s" % (verb, args.name, "; password: %s" % password if shown else ""))
            return 0
    except ApiError as exc:
        raise SystemExit("trustpoint-server operator %s: %s" % (args.action, exc.message)) from exc
    finally:
        engine.dispose()


def _check_initialised(settings, tls_files=()):
    Vault.load(settings.data_dir, settings.vault_key_file)
    for path in tls_files:
        if not os.path.exists(path):
            raise SystemExit(
                "%s is missing: run `trustpoint-server init --data-dir %s` first" % (path, settings.data_dir)
            )
    engine = engine_for(settings)
    try:
        migrate.check(engine)
    except migrate.SchemaError as exc:
        raise SystemExit(str(exc)) from exc
    finally:
        engine.dispose()


def check_addresses_free(addresses):
    """Raise ValueError naming an address another process listens on, before any server starts (gunicorn
    would only retry and then say "Can't connect")."""
    for address in addresses:
        host, _sep, port = address.rpartition(":")
        host = host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except (OSError, ValueError) as exc:
            raise ValueError("cannot listen on %s: %s" % (address, exc)) from exc
        family, kind, proto, _name, sockaddr = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ValueError(
                        "address %s is in use: another process (another trustpoint-server?) listens there; stop it "
                        "or choose another address (--listen, --listen-plain, or listen and listen_plain in the "
                        "configuration)" % address
                    ) from exc
                raise ValueError("cannot listen on %s: %s" % (address, exc.strerror or exc)) from exc


def listen_url(listen, listen_plain, tls_cert=None):
    """Base URL of the first listener, for CRL distribution points without --public-url: plain HTTP first (CRLs
    are signed; fetching them over TLS would need them first). A wildcard address (0.0.0.0, ::) names no host:
    then the first name of the served TLS certificate that is not loopback, else the machine's host name. Never
    what a request's Host header says."""
    for scheme, addresses in (("http", listen_plain), ("https", listen)):
        for address in addresses:
            host, _sep, port = address.rpartition(":")
            host = host.strip("[]")
            if host in ("", "0.0.0.0", "::"):  # noqa: S104 (reading a configured address, not binding)
                host = _certificate_host(tls_cert) or socket.gethostname()
            if ":" in host:
                host = "[%s]" % host
            return "%s://%s:%s" % (scheme, host, port)
    return None


def _certificate_host(tls_cert):
    """The first DNS name or IP address of the TLS certificate that is not loopback, or None."""
    if tls_cert is None:
        return None
    try:
        with open(tls_cert, "rb") as handle:
            names = x509.subject_alt_names(x509.load_certificates(handle.read())[0])
    except (OSError, InvalidInput, IndexError):  # unreadable: run fails on it later with a message
        return None
    for name in names:
        value = str(name.value)
        try:
            if ipaddress.ip_address(value).is_loopback:
                continue
        except ValueError:
            if value == "localhost" or value.startswith("*"):
                continue
        return value
    return None


def run(settings):
    from .wsgi import serve

    listen = list(settings.listen) or ([] if settings.listen_plain else [DEFAULT_LISTEN])
    listen_plain = list(settings.listen_plain)
    both = sorted(set(listen) & set(listen_plain))
    if both:
        raise ValueError("listen and listen_plain name the same address: %s" % ", ".join(both))
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ValueError("tls_cert and tls_key (--tls-cert, --tls-key) go together")
    tls_cert, tls_key = (
        (settings.tls_cert, settings.tls_key) if settings.tls_cert else tls.server_files(settings.data_dir)
    )
    if listen:
        settings.tls_cert_file = os.path.abspath(tls_cert)
    companions = []
    if settings.mdns_interface:
        from . import mdns

        if not listen:
            raise ValueError("mdns_interface (--mdns-interface) advertises the HTTPS listener: add --listen")
        settings.mdns_addresses = tuple(mdns.resolve_interfaces(settings.mdns_interface))
        settings.mdns_instance = settings.mdns_instance or mdns.default_instance()
        if len(settings.mdns_instance.encode()) > mdns.MAX_INSTANCE:
            raise ValueError("mdns_instance (--mdns-instance) must be at most %d bytes" % mdns.MAX_INSTANCE)
        port = mdns.advertised_port(settings.mdns_addresses, listen)
        companions.append(
            mdns.Advertiser(
                settings.data_dir, settings.mdns_addresses, port, settings.mdns_instance, settings.tls_cert_file
            )
        )
    elif settings.mdns_instance:
        raise ValueError("mdns_instance names the advertisement of mdns_interface; add --mdns-interface")
    _check_initialised(settings, (tls_cert, tls_key) if listen else ())
    check_addresses_free(listen + listen_plain)
    settings.listen_url = listen_url(listen, listen_plain, tls_cert if listen else None)
    if listen_plain:
        settings.plain_port = int(listen_plain[0].rsplit(":", 1)[1])
    create_app(settings)  # fail here, with a message, rather than in every worker
    if not settings.public_url:
        logging.getLogger(__name__).warning(
            "no public_url (--public-url): issued certificates name their CRL distribution point at %s/crl/<ca>, "
            "after the address the server listens on; set public_url to the URL relying parties reach",
            settings.listen_url,
        )
    return serve(
        settings,
        listen,
        listen_plain,
        tls_cert=tls_cert,
        tls_key=tls_key,
        workers=settings.workers,
        threads=settings.threads,
        log_level=settings.log_level,
        companions=companions,
    )


def show_settings(settings):
    """Print the settings in effect as a configuration file; a database password is masked."""
    for field in config.fields():
        value = getattr(settings, field.name)
        if value is None:
            continue
        if field.name == "database_url":
            value = config.masked_url(value)
        print("%s = %s" % (field.name, json.dumps(list(value) if isinstance(value, tuple) else value)))
    return 0


def rotate_vault_key(settings):
    _check_initialised(settings)
    for line in rotation.rotate(settings, settings.new_vault_key_file):
        print(line)
    return 0


COMMANDS = {
    config.INIT: (init, "create the database, vault key, admin token, first operator (admin) and TLS certificate"),
    config.MIGRATE: (migrate_command, "bring the database schema up to date (after installing a new version)"),
    config.OPERATOR: (
        operator_command,
        "manage the operator accounts of the web pages: create, password, delete, list. A password comes from "
        "--password-file, --password-stdin or a prompt; with --generate (or without a terminal) a new one is "
        "generated and printed once",
    ),
    config.RUN: (run, "serve CMP, EST, the REST API and the web pages"),
    config.SETTINGS: (show_settings, "check the settings and print those in effect (the database password masked)"),
    config.ROTATE: (
        rotate_vault_key,
        "encrypt every stored secret (CA keys, device secrets, DevOwnerID keys, the TLS CA key) under a new vault "
        "key; stop the service first",
    ),
}


def _add_setting(parser, field):
    """--<name> for one setting; None when not given, so that the environment and the file apply."""
    meta = field.metadata
    text = "%s ($%s%s" % (meta["help"], config.ENV_PREFIX, field.name.upper())
    if field.default not in (None, ()):
        default = field.default
        text += "; default %s" % (",".join(default) if isinstance(default, tuple) else default)
    text = text.replace("%", "%%") + ")"
    if meta["kind"] is bool:
        parser.add_argument(config.option(field), action=argparse.BooleanOptionalAction, default=None, help=text)
        return
    kind = {int: int, list: str, str: str}[meta["kind"]]
    parser.add_argument(
        config.option(field),
        type=kind,
        action="append" if meta["kind"] is list else "store",
        metavar=meta["metavar"],
        choices=meta["choices"],
        help=text,
    )


def gen_test_certs(args):
    from . import testcerts

    manifest = testcerts.generate(args.directory, args.devices, args.key_type, args.owner_key_type)
    print(
        "wrote an IDevID CA with %d IDevID(s) (%s ... %s), an owner CA and a DevOwnerID naming them to %s"
        % (
            len(manifest["devices"]),
            manifest["devices"][0]["serial_number"],
            manifest["devices"][-1]["serial_number"],
            args.directory,
        )
    )
    return 0


def _add_aoki(sub):
    """`aoki gen-test-certs`: a tool that needs no settings (no data directory)."""
    p_aoki = sub.add_parser("aoki", help="AOKI zero-touch onboarding tools")
    aoki_sub = p_aoki.add_subparsers(dest="aoki_command", required=True)
    p_gen = aoki_sub.add_parser(
        "gen-test-certs",
        help="write a test PKI for AOKI: an IDevID CA with N IDevIDs, an owner CA and a DevOwnerID naming them",
    )
    p_gen.add_argument("directory", metavar="DIR", help="where to write them (created; must not hold a set already)")
    p_gen.add_argument("--devices", type=int, default=1, metavar="N", help="how many IDevIDs (default 1)")
    p_gen.add_argument("--key-type", default="ecdsa-p256", help="of the CAs and IDevIDs (default ecdsa-p256)")
    p_gen.add_argument("--owner-key-type", help="of the owner CA and the DevOwnerID (default: --key-type; or ed25519)")


def parser():
    top = argparse.ArgumentParser(
        prog="trustpoint-server",
        description=__doc__,
        epilog="Every option is also a setting of the configuration file (--config, $%s) and an environment "
        "variable; docs/server.md lists them." % config.CONFIG_ENV,
    )
    sub = top.add_subparsers(dest="command", required=True)
    for name, (_func, text) in COMMANDS.items():
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument(
            "--config", metavar="FILE", help="configuration file (TOML) with settings ($%s)" % config.CONFIG_ENV
        )
        for field in config.fields():
            if name in field.metadata["commands"]:
                _add_setting(command, field)
        if name == config.OPERATOR:
            _operator_arguments(command)
    _add_aoki(sub)
    return top


def _operator_arguments(command):
    command.add_argument("action", choices=("create", "password", "delete", "list"))
    command.add_argument("name", nargs="?", help="the operator's name (not for list)")
    source = command.add_mutually_exclusive_group()
    source.add_argument("--password-file", metavar="FILE", help="read the password from the first line of FILE")
    source.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    source.add_argument("--generate", action="store_true", help="generate a password and print it")


def main(argv=None):
    top = parser()
    args = top.parse_args(argv)
    if args.command == "aoki":
        os.umask(0o077)  # the test set holds private keys
        try:
            return gen_test_certs(args)
        except ValueError as exc:
            top.error(str(exc))
    try:
        settings = Settings.load(
            {field.name: getattr(args, field.name, None) for field in config.fields()}, config_file=args.config
        )
    except SettingsError as exc:
        top.exit(2, "trustpoint-server: %s\n" % exc)
    # The database, its journal and every file the service writes hold secrets or their hashes.
    os.umask(0o077)
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(BoundedRecords())
    try:
        function = COMMANDS[args.command][0]
        # operator also takes its own arguments (an action, a name, where the password comes from)
        return function(settings, args) if args.command == config.OPERATOR else function(settings)
    except (migrate.SchemaError, VaultError) as exc:
        raise SystemExit("trustpoint-server: %s" % exc) from exc
    except ValueError as exc:
        top.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
