# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""`trustpoint-server`: initialise a data directory, run the service."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys

from sqlalchemy import select

from ..app import Settings, create_app
from ..storage import migrate
from ..storage.db import database_url, make_engine, session_factory
from ..storage.models import ApiToken
from ..web.api import token_hash
from . import tls
from .vault import Vault

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 (a file name)
DEFAULT_LISTEN = "127.0.0.1:8443"


def _write_private(path, data):
    """Create a file readable only by its owner; never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(data)


def init(args):
    settings = Settings.from_environment(args.data_dir, database_url=args.database_url)
    os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)  # also when it existed: it holds the vault key
    if Vault.create_key_file(settings.data_dir):
        print("created the vault key %s" % os.path.join(settings.data_dir, "vault.key"))
    engine = make_engine(database_url(settings.data_dir, settings.database_url))
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
    engine.dispose()
    for line in tls.ensure_server_certificate(settings.data_dir, Vault.load(settings.data_dir), args.tls_san or ()):
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


def migrate_command(args):
    settings = Settings.from_environment(args.data_dir, database_url=args.database_url)
    engine = make_engine(database_url(settings.data_dir, settings.database_url))
    try:
        before, after = migrate.upgrade(engine)
    finally:
        engine.dispose()
    _report_migration((before, after))
    if before == after:
        print("the database schema is up to date (revision %s)" % after)
    return 0


def _check_initialised(settings, tls_files=()):
    for path in (os.path.join(settings.data_dir, "vault.key"), *tls_files):
        if not os.path.exists(path):
            raise SystemExit(
                "%s is missing: run `trustpoint-server init --data-dir %s` first" % (path, settings.data_dir)
            )
    engine = make_engine(database_url(settings.data_dir, settings.database_url))
    try:
        migrate.check(engine)
    except migrate.SchemaError as exc:
        raise SystemExit(str(exc)) from exc
    finally:
        engine.dispose()


def run(args):
    from .wsgi import serve

    settings = Settings.from_environment(
        args.data_dir,
        database_url=args.database_url,
        cmp_max_clock_skew=args.cmp_max_clock_skew,
        public_url=args.public_url,
        est_default_domain=args.est_default_domain,
    )
    listen = args.listen or ([] if args.listen_plain else [DEFAULT_LISTEN])
    listen_plain = args.listen_plain or []
    both = sorted(set(listen) & set(listen_plain))
    if both:
        raise ValueError("--listen and --listen-plain name the same address: %s" % ", ".join(both))
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    tls_cert, tls_key = (args.tls_cert, args.tls_key) if args.tls_cert else tls.server_files(settings.data_dir)
    if listen_plain:
        settings.plain_port = int(listen_plain[0].rsplit(":", 1)[1])
    _check_initialised(settings, (tls_cert, tls_key) if listen else ())
    create_app(settings)  # fail here, with a message, rather than in every worker
    if not settings.public_url:
        logging.getLogger(__name__).warning(
            "no --public-url: issued certificates name their CRL distribution point after the host each "
            "request named, which the requesting device chooses; set --public-url in production"
        )
    return serve(
        settings,
        listen,
        listen_plain,
        tls_cert=tls_cert,
        tls_key=tls_key,
        workers=args.workers,
        threads=args.threads,
        log_level=args.log_level,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="trustpoint-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="data directory (default: $TRUSTPOINT_DATA_DIR)")
    common.add_argument(
        "--database-url",
        help="SQLAlchemy URL (default: SQLite in the data directory; $TRUSTPOINT_DATABASE_URL)",
    )

    p_init = sub.add_parser(
        "init", parents=[common], help="create the database, vault key, admin token and TLS certificate"
    )
    p_init.add_argument(
        "--tls-san",
        action="append",
        metavar="NAME_OR_IP",
        help="a DNS name or IP address clients reach the server at, besides localhost, 127.0.0.1, ::1 and "
        "the host name; repeat for several (a certificate lacking one is reissued)",
    )
    p_init.set_defaults(func=init)

    p_migrate = sub.add_parser(
        "migrate", parents=[common], help="bring the database schema up to date (after installing a new version)"
    )
    p_migrate.set_defaults(func=migrate_command)

    p_run = sub.add_parser("run", parents=[common], help="serve CMP and the REST API")
    p_run.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="address to serve HTTPS on; repeat for several (default %s unless --listen-plain is given)"
        % DEFAULT_LISTEN,
    )
    p_run.add_argument(
        "--listen-plain",
        action="append",
        metavar="HOST:PORT",
        help="address to serve plain HTTP on, for CMP, CRLs and /healthz only; repeat for several",
    )
    p_run.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="PEM certificate chain to serve instead of the one `init` issued (DATA/%s)" % tls.CERT_FILE,
    )
    p_run.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    # None: wsgi.serve() picks the defaults (without importing gunicorn for the other commands).
    p_run.add_argument(
        "--workers", type=int, help="worker processes per listener kind (default: one per CPU, at most 8)"
    )
    p_run.add_argument(
        "--threads", type=int, help="threads per worker, the requests one worker serves at once (default 2)"
    )
    p_run.add_argument(
        "--cmp-max-clock-skew",
        type=int,
        metavar="SECONDS",
        help="reject CMP messages whose messageTime is further off (default 600, 0: off)",
    )
    p_run.add_argument(
        "--public-url",
        help="base URL devices reach the server at, for the CRL distribution point of issued certificates "
        "(default: the host each request named, at the plain-HTTP listener's port when there is one; "
        "$TRUSTPOINT_PUBLIC_URL)",
    )
    p_run.add_argument(
        "--est-default-domain",
        metavar="DOMAIN",
        help="domain served at /.well-known/est/<operation> without a label ($TRUSTPOINT_EST_DEFAULT_DOMAIN)",
    )
    p_run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p_run.set_defaults(func=run)

    args = parser.parse_args(argv)
    # The database, its journal and every file the service writes hold secrets or their hashes.
    os.umask(0o077)
    logging.basicConfig(
        level=getattr(logging, getattr(args, "log_level", "info").upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except migrate.SchemaError as exc:
        raise SystemExit("trustpoint-server: %s" % exc) from exc
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
