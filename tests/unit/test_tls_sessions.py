# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The server resumes no TLS session (runtime/tls.py server_context): a client that offers the session of its last
connection gets a full handshake, which verifies its certificate again and gives the request the verified chain (a
resumed one gave the certificate with an empty chain). Handshakes in memory, as the worker does them."""

from __future__ import annotations

import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from trustpoint_server.runtime import tls

NOW = datetime.datetime.now(datetime.timezone.utc)


def certificate(name, issuer_key=None, issuer=None, ca=False, dns=None):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def pem(value):
    if isinstance(value, x509.Certificate):
        return value.public_bytes(serialization.Encoding.PEM)
    return value.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    """(server context with a client CA, client context with a certificate under an intermediate)"""
    path = tmp_path_factory.mktemp("tls-sessions")
    root_key, root = certificate("Client Root", ca=True)
    sub_key, sub = certificate("Client Sub CA", root_key, root, ca=True)
    client_key, client = certificate("device", sub_key, sub)
    server_key, server = certificate("localhost", dns="localhost")
    (path / "server.pem").write_bytes(pem(server))
    (path / "server.key").write_bytes(pem(server_key))
    (path / "client.pem").write_bytes(pem(client) + pem(sub))
    (path / "client.key").write_bytes(pem(client_key))
    server_context = tls.server_context(
        path / "server.pem", path / "server.key", ((root.public_bytes(serialization.Encoding.DER),), ())
    )
    client_context = ssl.create_default_context(cafile=str(path / "server.pem"))
    client_context.load_cert_chain(path / "client.pem", path / "client.key")
    return server_context, client_context


def connect(server_context, client_context, session=None):
    """A handshake and a byte each way through memory BIOs: (client SSLObject, the server's TlsInfo)."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    client = client_context.wrap_bio(client_in, client_out, server_hostname="localhost", session=session)
    for _round in range(10):
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    client.write(b"q")
    server_in.write(client_out.read())
    assert server.read(1) == b"q"
    server.write(b"a")  # TLS 1.3: tickets, if any, go with the server's first data
    client_in.write(server_out.read())
    assert client.read(1) == b"a"
    return client, tls.TlsInfo(server)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_a_client_offering_its_last_session_gets_a_full_handshake_with_the_verified_chain(contexts, version):
    server_context, client_context = contexts
    client_context.maximum_version = version
    first, first_info = connect(server_context, client_context)
    again, info = connect(server_context, client_context, session=first.session)
    assert first.version() == again.version() == version.name.replace("v1_", "v1.")
    assert not again.session_reused
    assert info.peer_certificate == first_info.peer_certificate is not None
    assert len(info.verified_chain) == 3  # leaf, intermediate, root
