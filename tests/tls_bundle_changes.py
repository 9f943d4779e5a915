# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every change of the TLS client CA bundle moves its generation and the next handshake's context has it (issue 16).

run_bundle_changes() drives each kind of change through the services, then through plain SQL on a connection of
its own (what another server instance, another version or an operator does), and checks the database's
generation and ServerContexts.current() after each. tests/unit/test_tls_bundle.py runs it on SQLite,
tests/integration/test_postgresql.py on PostgreSQL.
"""

from __future__ import annotations

import os

from cryptography import x509 as cx509
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from trustpoint_core import keys
from trustpoint_core import x509 as tp_x509
from trustpoint_server.runtime import tls
from trustpoint_server.services import crl, pki, trust
from trustpoint_server.storage.db import begin_write
from trustpoint_server.storage.models import Domain


def ca_pem(name):
    """A new CA's certificate (PEM) whose common name is name."""
    key = keys.generate_private_key("ecdsa-p256")
    return tp_x509.certificates_to_pem(tp_x509.self_signed_ca(tp_x509.common_name(name), key, 30))


def common_names(ders):
    return {
        attribute.value
        for der in ders
        for attribute in cx509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    }


def names(context):
    """The common names of the CA certificates a context verifies clients with."""
    return common_names(context.get_ca_certs(binary_form=True))


def ca_names(domain):
    return common_names(ca.certificate_der for ca in domain.cas)


def add_truststore(app, name, pem, usage="tls"):
    """A truststore created through the service, committed."""
    with app.extensions["trustpoint"].sessions() as db:
        trust.create_truststore(db, name, usage, pem)
        db.commit()


def server_contexts(app):
    """ServerContexts of the app's data directory and database, as a worker makes them."""
    services = app.extensions["trustpoint"]
    contexts = tls.ServerContexts(*tls.server_files(services.settings.data_dir))
    contexts.use_database(services.engine)
    return contexts


class Checker:
    """Runs one change at a time and checks what the generation and the next context make of it."""

    def __init__(self, app):
        self.engine = app.extensions["trustpoint"].engine
        self.contexts = server_contexts(app)
        self.context = self.contexts.current()
        self.generation = tls.bundle_generation(self.engine)
        assert self.generation is not None
        self.seen = []

    def change(self, what, change, present=(), absent=(), moves=True, rebuilt=True):
        change()
        generation = tls.bundle_generation(self.engine)
        assert (generation != self.generation) == moves, "%s: generation %s -> %s" % (what, self.generation, generation)
        context = self.contexts.current()
        assert (context is not self.context) == rebuilt, "%s: a new context: %s" % (what, context is not self.context)
        assert self.contexts.current() is context, "%s: the next handshake builds yet another context" % what
        trusted = names(context)
        assert set(present) <= trusted, "%s: %s missing from %s" % (what, set(present) - trusted, trusted)
        assert not set(absent) & trusted, "%s: %s still trusted" % (what, set(absent) & trusted)
        self.context, self.generation = context, generation
        self.seen.append(what)


def run_bundle_changes(app, other_connection_sql):
    """Drive every kind of change; other_connection_sql(statement, parameters) runs SQL (qmark
    parameters) on a connection of its own and commits. Returns the changes checked, by name."""
    services = app.extensions["trustpoint"]
    check = Checker(app)
    tag = os.urandom(4).hex()
    first, second, third = ("%s-%s" % (label, tag) for label in ("first", "second", "third"))

    def session():
        return services.sessions()

    def create_domain(name):
        with session() as db:
            pki.create_domain(db, services.vault, name)
            db.commit()
        with session() as db:
            return ca_names(db.scalar(select(Domain).where(Domain.name == name)))

    domain_cas = set()
    check.change("domain created", lambda: domain_cas.update(create_domain("plant-" + tag)))
    assert len(domain_cas) == 2 and domain_cas <= names(check.context)

    check.change("truststore created", lambda: add_truststore(app, "tls-" + tag, ca_pem(first)), [first])

    def patch(fields):
        with session() as db:
            truststore = trust.get_truststore(db, "tls-" + tag)
            begin_write(db)
            trust.update_truststore(truststore, fields)
            db.commit()

    check.change("truststore certificates PATCHed", lambda: patch({"certificates": ca_pem(second)}), [second], [first])
    check.change("truststore usage PATCHed to devownerid", lambda: patch({"usage": "devownerid"}), absent=[second])
    check.change("truststore usage PATCHed to idevid", lambda: patch({"usage": "idevid"}), [second])

    def delete_truststore():
        with session() as db:
            truststore = trust.get_truststore(db, "tls-" + tag)
            begin_write(db)
            trust.delete_truststore(db, truststore)
            db.commit()

    check.change("truststore deleted", delete_truststore, absent=[second])

    # Changes that leave the bundle as it is: a devownerid truststore moves the generation (a truststore row) but
    # builds no new context; a CRL (columns of certificate_authority outside the bundle) does not even move it.
    check.change(
        "devownerid truststore created",
        lambda: add_truststore(app, "owner-" + tag, ca_pem(third), "devownerid"),
        absent=[third],
        rebuilt=False,
    )

    def issue_crl():
        with session() as db:
            domain = db.scalar(select(Domain).where(Domain.name == "plant-" + tag))
            before = domain.ca("issuing").crl_number
            crl.current_crl(db, services.vault, domain.ca("issuing"), services.settings)
            db.commit()
            assert domain.ca("issuing").crl_number == before + 1

    check.change("CRL issued", issue_crl, moves=False, rebuilt=False)

    def delete_domain():
        with session() as db:
            domain = db.scalar(select(Domain).where(Domain.name == "plant-" + tag))
            begin_write(db)
            pki.delete_domain(db, domain)
            db.commit()

    check.change("domain deleted", delete_domain, absent=domain_cas)

    # Another instance, another version or an operator: plain SQL on another connection.
    other = ca_pem("other-" + tag)
    check.change(
        "truststore row inserted by another connection",
        lambda: other_connection_sql(
            "INSERT INTO truststore (name, usage, certificates_pem, created_at) "
            "VALUES (?, 'tls', ?, CURRENT_TIMESTAMP)",
            ("raw-" + tag, other),
        ),
        ["other-" + tag],
    )
    check.change(
        "truststore certificates updated by another connection",
        lambda: other_connection_sql(
            "UPDATE truststore SET certificates_pem = ? WHERE name = ?", (ca_pem("again-" + tag), "raw-" + tag)
        ),
        ["again-" + tag],
        ["other-" + tag],
    )
    check.change(
        "truststore row deleted by another connection",
        lambda: other_connection_sql("DELETE FROM truststore WHERE name = ?", ("raw-" + tag,)),
        absent=["again-" + tag],
    )
    cas_b = set()
    check.change("second domain created", lambda: cas_b.update(create_domain("plant-b-" + tag)))
    assert len(cas_b) == 2 and cas_b <= names(check.context)
    # The domain's CAs go with it through the foreign key's ON DELETE CASCADE, not the ORM's cascade.
    check.change(
        "domain row deleted by another connection (CAs cascade)",
        lambda: other_connection_sql("DELETE FROM domain WHERE name = ?", ("plant-b-" + tag,)),
        absent=cas_b,
    )
    with session() as db:
        assert db.scalar(select(Domain).where(Domain.name == "plant-b-" + tag)) is None
    return check.seen
