# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""TLS: the server's own certificate, the context every connection gets, the client's certificate.

`trustpoint-server init` makes a TLS CA for the data directory and a server certificate under it:

    DATA/tls-ca.pem          the trust anchor clients need (self-signed CA certificate)
    DATA/tls-ca-key.vault    the CA's private key, encrypted with the vault (see runtime/vault.py)
    DATA/tls-cert.pem        the server certificate, then the CA certificate
    DATA/tls-key.pem         the server's private key (0600)

The CA key is only needed when `init` issues a server certificate, so it stays encrypted like the
domain CA keys; the server key must be readable by OpenSSL at every start, so it is a 0600 file.

Client authentication is optional: the server asks for a certificate and verifies one that is
presented against every domain's root and issuing CA and every truststore of usage idevid or tls.
ServerContexts rebuilds the context when that bundle (or the certificate file) changes, so domains
and truststores added through the API are trusted by the next handshake. A certificate that does not
verify (unknown issuer, expired, wrong purpose) fails the handshake: the client sees a TLS alert,
never an HTTP answer. Revocation is not checked in the handshake; handlers check their records.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import socket
import ssl
import threading

from cryptography import x509 as cx509
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from trustpoint_core import keys, x509
from trustpoint_core.errors import InvalidInput
from trustpoint_core.profiles import get_profile

from ..storage.models import CertificateAuthority, Truststore
from .vault import VaultError

log = logging.getLogger(__name__)

CA_FILE = "tls-ca.pem"
CA_KEY_FILE = "tls-ca-key.vault"
CERT_FILE = "tls-cert.pem"
KEY_FILE = "tls-key.pem"
VAULT_PURPOSE = "tls-ca-key"

KEY_TYPE = "ecdsa-p256"
CA_DAYS = 3650
SERVER_DAYS = 397
# `init` issues a new server certificate when the current one expires within this many days.
RENEW_DAYS = 30
# TLS 1.2 suites: forward secrecy and AEAD only. TLS 1.3 suites are all AEAD; OpenSSL's defaults stay.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
# OpenSSL's X509_V_FLAG_PARTIAL_CHAIN (ssl.VERIFY_X509_PARTIAL_CHAIN is Python 3.10+): a truststore
# that holds an intermediate CA without its root still anchors a client certificate.
_PARTIAL_CHAIN = getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0x80000)
CLIENT_CA_USAGES = ("idevid", "tls")
# The WSGI environ key under which the worker hands a request its connection's TlsInfo.
TLS_ENVIRON_KEY = "trustpoint.tls"

_DNS_NAME = re.compile(
    r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


# --- the server certificate (init) ---------------------------------------------------------------


def parse_san(text):
    """A subject alternative name from the command line: an IP address, else a DNS name."""
    try:
        return cx509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not isinstance(text, str) or len(text) > 253 or not _DNS_NAME.fullmatch(text):
        raise ValueError("--tls-san %r is neither an IP address nor a DNS name" % text)
    return cx509.DNSName(text.lower())


def default_sans():
    """What every server certificate names: loopback and the machine's host name."""
    names = ["localhost", "127.0.0.1", "::1"]
    hostname = socket.gethostname()
    try:
        parse_san(hostname)
    except ValueError:
        log.warning("the host name %r is not a DNS name; the TLS certificate does not name it", hostname)
    else:
        names.append(hostname)
    return [parse_san(name) for name in names]


def write_atomically(path, data, mode):
    """Replace path with data (mode whatever the umask): on disk before the rename, never through a link."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fchmod(handle.fileno(), mode)
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _create_ca(vault, data_dir):
    key = keys.generate_private_key(KEY_TYPE)
    name = cx509.Name(
        [
            cx509.NameAttribute(NameOID.COMMON_NAME, ("%s TLS CA" % socket.gethostname())[:64]),
            cx509.NameAttribute(NameOID.ORGANIZATION_NAME, "Trustpoint"),
        ]
    )
    certificate = x509.self_signed_ca(name, key, CA_DAYS, path_length=0)
    write_atomically(
        os.path.join(data_dir, CA_KEY_FILE), vault.encrypt(keys.private_key_to_pem(key), VAULT_PURPOSE), 0o600
    )
    write_atomically(os.path.join(data_dir, CA_FILE), x509.certificates_to_pem(certificate).encode(), 0o600)
    return certificate, key


def _load_ca(vault, data_dir):
    """(certificate, key or None) of the data directory's TLS CA, or None when there is none."""
    cert_path, key_path = os.path.join(data_dir, CA_FILE), os.path.join(data_dir, CA_KEY_FILE)
    if not os.path.exists(cert_path):
        return None
    try:
        with open(cert_path, "rb") as handle:
            certificate = x509.load_certificate(handle.read())
    except InvalidInput as exc:
        raise ValueError("%s: %s" % (cert_path, exc)) from exc
    if not os.path.exists(key_path):
        return certificate, None
    try:
        with open(key_path, "rb") as handle:
            key = keys.load_private_key(vault.decrypt(handle.read(), VAULT_PURPOSE))
    except (InvalidInput, VaultError) as exc:
        raise ValueError("%s: %s" % (key_path, exc)) from exc
    return certificate, key


def _current_server_certificate(data_dir, ca_certificate):
    """The server certificate in the data directory when it is usable with its key under this CA."""
    try:
        with open(os.path.join(data_dir, CERT_FILE), "rb") as handle:
            certificate = x509.load_certificates(handle.read())[0]
        with open(os.path.join(data_dir, KEY_FILE), "rb") as handle:
            key = keys.load_private_key(handle.read())
    except (OSError, InvalidInput, IndexError) as exc:
        log.debug("no usable server certificate: %s", exc)
        return None
    if not keys.same_public_key(certificate.public_key(), key.public_key()):
        return None
    if not x509.is_issued_by(certificate, ca_certificate):
        return None
    return certificate


def _sans_of(certificate):
    try:
        return list(certificate.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value)
    except cx509.ExtensionNotFound:
        return []


def ensure_server_certificate(data_dir, vault, extra_sans=()):
    """Create the TLS CA and server certificate, or keep them; returns what it did, as sentences.

    The server certificate is kept unless it is missing, unusable, expires within RENEW_DAYS or lacks
    one of the wanted names (default_sans() plus extra_sans); a new one keeps the names the old one
    had and comes from the same CA.
    """
    done = []
    wanted = default_sans() + [parse_san(name) for name in extra_sans]
    ca = _load_ca(vault, data_dir)
    if ca is None:
        ca = _create_ca(vault, data_dir)
        done.append("created the TLS CA %s" % os.path.join(data_dir, CA_FILE))
    ca_certificate, ca_key = ca

    current = _current_server_certificate(data_dir, ca_certificate)
    names = _sans_of(current) if current is not None else []
    missing = [name for name in wanted if name not in names]
    if current is not None and not missing:
        days_left = (x509.not_after(current) - x509.now_utc()).days
        if days_left >= RENEW_DAYS:
            return done
        reason = "it expires in %d days" % days_left
    elif current is not None:
        reason = "it lacks %s" % ", ".join(str(name.value) for name in missing)
    else:
        reason = None
    if ca_key is None:
        raise ValueError(
            "cannot issue a TLS server certificate: %s is missing; remove %s to create a new TLS CA "
            "(clients must then trust the new one)"
            % (os.path.join(data_dir, CA_KEY_FILE), os.path.join(data_dir, CA_FILE))
        )
    key = keys.generate_private_key(KEY_TYPE)
    certificate = x509.issue_certificate(
        ca_certificate,
        ca_key,
        key.public_key(),
        x509.common_name(socket.gethostname()[:64] or "localhost"),
        get_profile("tls_server"),
        validity_days=SERVER_DAYS,
        subject_alt_names=names + missing,
    )
    write_atomically(os.path.join(data_dir, KEY_FILE), keys.private_key_to_pem(key), 0o600)
    write_atomically(
        os.path.join(data_dir, CERT_FILE), x509.certificates_to_pem([certificate, ca_certificate]).encode(), 0o600
    )
    done.append(
        "issued the TLS server certificate %s for %s%s"
        % (
            os.path.join(data_dir, CERT_FILE),
            ", ".join(str(name.value) for name in names + missing),
            " (%s)" % reason if reason else "",
        )
    )
    return done


def server_files(data_dir):
    """(certificate chain file, key file) that `init` writes."""
    return os.path.join(data_dir, CERT_FILE), os.path.join(data_dir, KEY_FILE)


# --- the context of every connection (run) -------------------------------------------------------


# The one query of every handshake (storage/triggers.py keeps the row); plain SQL for the driver, the same on
# SQLite and PostgreSQL.
GENERATION_SQL = "SELECT generation FROM tls_bundle_generation WHERE id = 1"
_DOMAIN_CAS = select(CertificateAuthority.__table__.c.certificate_der).order_by(CertificateAuthority.__table__.c.id)
_TRUSTSTORES = (
    select(Truststore.__table__.c.certificates_pem)
    .where(Truststore.__table__.c.usage.in_(CLIENT_CA_USAGES))
    .order_by(Truststore.__table__.c.id)
)


def bundle_generation(engine):
    """The number the database's triggers change with every change of the client CA bundle (storage/triggers.py);
    None when its row is gone (then only the bundle itself tells).

    It runs for every handshake, so it goes to the driver on a pooled connection: through SQLAlchemy's Connection
    (which adds a BEGIN on SQLite) it cost 85 us of CPU instead of 11 (bench/README.md, issue 16).
    """
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(GENERATION_SQL)
            row = cursor.fetchone()
        finally:
            cursor.close()
    finally:
        connection.close()  # back to the pool, which ends a transaction the driver began (PostgreSQL)
    return row[0] if row is not None else None


def client_ca_bundle(connection):
    """The CA certificates a client certificate may chain to: (domain CA DERs, truststore PEMs)."""
    domain_cas = tuple(row[0] for row in connection.execute(_DOMAIN_CAS))
    truststores = tuple(row[0] for row in connection.execute(_TRUSTSTORES))
    return domain_cas, truststores


# OpenSSL's SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF), a macro of SSL_CTX_ctrl.
_SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_CTRL_GET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF = 44, 45, 0


def _no_session_cache(context):
    """Turn off the server's session cache of context, so that no TLS 1.2 session ID (nor a TLS 1.3 stateful
    ticket) is resumed; True when it is off. Python's ssl module has no call for it (up to 3.13): this calls the
    OpenSSL that its _ssl module is linked with, on the SSL_CTX pointer a CPython SSLContext holds first, and only
    after that pointer gave back the context's own options."""
    import ctypes
    import platform

    if platform.python_implementation() != "CPython":
        return False
    try:
        library = ctypes.CDLL(getattr(ssl._ssl, "__file__", None))  # None: an _ssl built into the interpreter
        ctrl, get_options = library.SSL_CTX_ctrl, library.SSL_CTX_get_options
    except (OSError, AttributeError):
        return False
    ctrl.restype, ctrl.argtypes = ctypes.c_long, [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    # uint64_t since OpenSSL 3.0, unsigned long before (32 bits on 32-bit machines)
    get_options.restype = ctypes.c_uint64 if ssl.OPENSSL_VERSION_INFO >= (3,) else ctypes.c_ulong
    get_options.argtypes = [ctypes.c_void_p]
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or get_options(pointer) != context.options:
        return False
    ctrl(pointer, _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF, None)
    return ctrl(pointer, _SSL_CTRL_GET_SESS_CACHE_MODE, 0, None) == _SSL_SESS_CACHE_OFF


def server_context(cert_file, key_file, bundle=((), ())):
    """An SSLContext for the server side: TLS 1.2+, forward-secret AEAD suites, optional client certificates.

    Raises OSError or ssl.SSLError when the certificate or key cannot be used.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(CIPHERS)
    # No session resumption (TLS 1.3 tickets, TLS 1.2 tickets and session IDs): a resumed handshake verifies
    # nothing, so a request would carry the client's certificate without the chain it was verified with (an
    # IDevID's intermediates, protocols/wire.py client_chain()). Enrollment clients connect once or twice; the
    # tickets cost every handshake about 30 us of CPU besides.
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET
    if not _no_session_cache(context):
        log.warning(
            "TLS 1.2 session IDs may be resumed (Python's ssl module has no call for the cache and its library could "
            "not be reached): a client that resumes one sends no chain for its certificate"
        )
    context.load_cert_chain(cert_file, key_file)
    # Ask for a client certificate, do not require one; one that is sent must verify.
    context.verify_mode = ssl.CERT_OPTIONAL
    context.verify_flags |= _PARTIAL_CHAIN
    domain_cas, truststores = bundle
    if domain_cas:
        context.load_verify_locations(cadata=b"".join(domain_cas))
    for pem in truststores:
        try:
            context.load_verify_locations(cadata=pem)
        except (ssl.SSLError, ValueError) as exc:  # the API stores parsed PEM; never let one row break TLS
            log.warning("a truststore's certificates cannot be loaded for TLS client authentication: %s", exc)
    return context


def _file_stamp(path):
    try:
        status = os.stat(path)
    except OSError:
        return None  # loading it fails, and the last context stays
    return status.st_ino, status.st_size, status.st_mtime_ns


class ServerContexts:
    """The SSLContext for each new connection, rebuilt when the client CA bundle or the certificate changes.

    current() runs for every handshake: it reads the bundle's generation (one row, storage/triggers.py) and the
    certificate files' stat(), and returns the cached context while neither changed. The bundle itself is read
    only when the generation moved (or its row is gone). Every process (gunicorn worker) keeps its own; a change
    any of them, another server instance or any other writer commits is seen by the next handshake everywhere,
    without a restart. When the database cannot be read, the last context stays, and the next handshake reads
    again.
    """

    def __init__(self, cert_file, key_file):
        self.cert_file = cert_file
        self.key_file = key_file
        self._engine = None
        self._lock = threading.Lock()
        # (file stamps, generation, bundle) of the context
        self._state = None
        self._context = None
        self.current()  # an unusable certificate or key fails here, at startup

    def use_database(self, engine):
        """Take the client CA bundle from this database (an SQLAlchemy engine) from now on."""
        self._engine = engine

    @property
    def reads_locally(self):
        """Whether current() reads local files only (SQLite, or no database): quick, and never waiting for a peer."""
        return self._engine is None or self._engine.dialect.name == "sqlite"

    def _bundle(self):
        """(generation, bundle) as the database has them now; the last ones when it cannot be read."""
        last = self._state[1:] if self._state else (None, ((), ()))
        if self._engine is None:
            return None, ((), ())
        try:
            # The generation first: a bundle read after it is never older than the number it is kept with.
            generation = bundle_generation(self._engine)
            if generation is not None and generation == last[0]:
                return last
            with self._engine.connect() as connection:
                return generation, client_ca_bundle(connection)
        except Exception:  # any database failure: keep serving with the last bundle
            log.exception("cannot read the client CA bundle; TLS keeps the previous one")
            return last

    def _built_with(self, files, bundle):
        """Whether the context was built from these files and this bundle (the same object while the generation
        stands; an equal one after a change that did not touch it, e.g. a devownerid truststore)."""
        return self._state is not None and files == self._state[0] and bundle == self._state[2]

    def current(self):
        files = (_file_stamp(self.cert_file), _file_stamp(self.key_file))
        generation, bundle = self._bundle()
        if not self._built_with(files, bundle):
            with self._lock:
                if not self._built_with(files, bundle):
                    try:
                        context = server_context(self.cert_file, self.key_file, bundle)
                    except (OSError, ssl.SSLError) as exc:
                        if self._context is None:
                            raise
                        # e.g. `init` replaced the key and not yet the certificate: retry on the next connection
                        log.warning(
                            "cannot load %s with %s (%s); TLS keeps the previous one",
                            self.cert_file,
                            self.key_file,
                            exc,
                        )
                        return self._context
                    self._context, self._state = context, (files, generation, bundle)
                    log.debug(
                        "TLS context with %d domain CA(s) and %d truststore(s), bundle generation %s",
                        len(bundle[0]),
                        len(bundle[1]),
                        generation,
                    )
                    return context
        if generation != self._state[1]:
            # The bundle is unchanged (say a devownerid truststore changed): remember the generation, so that the
            # next handshakes read no bundle. Under the lock and only if no other thread rebuilt meanwhile.
            with self._lock:
                if self._built_with(files, bundle):
                    self._state = (files, generation, bundle)
        return self._context

    def gunicorn_hook(self):
        """gunicorn's `ssl_context` setting: gunicorn asks for the context of every new connection."""

        def ssl_context(_config, _default_ssl_context_factory):
            return self.current()

        return ssl_context


# --- what the server presents (AOKI's tls-truststore, the agent's pin, mDNS) -----------------------

_served = {}
_served_lock = threading.Lock()


def served_chain(cert_file):
    """The certificates of the PEM chain the server presents (leaf first), re-read when the file changes;
    [] when cert_file is None or unreadable."""
    if cert_file is None:
        return []
    stamp = _file_stamp(cert_file)
    with _served_lock:
        cached = _served.get(cert_file)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        with open(cert_file, "rb") as handle:
            chain = x509.load_certificates(handle.read())
    except (OSError, InvalidInput) as exc:
        log.warning("cannot read the TLS certificate chain %s: %s", cert_file, exc)
        return []
    with _served_lock:
        _served[cert_file] = (stamp, chain)
    return chain


# --- the client's certificate (worker, handlers) --------------------------------------------------


class TlsInfo:
    """What the handshake established: the client's certificate (DER or None) and the chain it was
    verified with (DER, the leaf first; empty without a client certificate)."""

    __slots__ = ("peer_certificate", "verified_chain")

    def __init__(self, ssl_object):
        self.peer_certificate = None
        self.verified_chain = ()
        try:
            der = ssl_object.getpeercert(binary_form=True)
        except (ValueError, ssl.SSLError):
            return
        if not der:
            return
        self.peer_certificate = der
        # Public since Python 3.13; the same method of the underlying _ssl object before.
        getter = getattr(ssl_object, "get_verified_chain", None) or getattr(
            getattr(ssl_object, "_sslobj", None), "get_verified_chain", None
        )
        if getter is not None:
            with contextlib.suppress(ValueError, ssl.SSLError):
                self.verified_chain = tuple(item.public_bytes(ssl._ssl.ENCODING_DER) for item in getter() or ())
