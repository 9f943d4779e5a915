# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The enrollment's writes are SQLAlchemy Core statements beside the ORM (issue 16): the rows they leave are the
rules' (supersede, revoke, the CA's CRL dropped, the one-time secret's retry window), and the session's objects
show the rows as written, so that the API, the pages, certConf, EST and AOKI, which read them afterwards, see no
stale state and no flush writes an old value back."""

from __future__ import annotations

import datetime

import pytest
from cryptography.x509 import load_der_x509_crl
from sqlalchemy import select
from trustpoint_core import x509
from trustpoint_server.runtime import on_loop
from trustpoint_server.services import certificates, crl, devices, enrolling, identity, pki
from trustpoint_server.storage.db import begin_write, session_factory
from trustpoint_server.storage.models import (
    CertificateAuthority,
    Device,
    DevIdRegistration,
    IssuedCertificate,
    Truststore,
    utcnow,
)


@pytest.fixture
def engine(db):
    return db.get_bind()


def stored(engine, table, row_id):
    """The row as another connection reads it after the commit: what the database holds."""
    with engine.connect() as connection:
        return connection.execute(select(table).where(table.c.id == row_id)).one()._asdict()


def assert_shows_the_row(engine, obj):
    """Every column of the session's object equals the committed row."""
    table = type(obj).__table__
    row = stored(engine, table, obj.id)
    shown = {column.key: getattr(obj, column.key) for column in table.columns}
    assert shown == row


def issue_credential(db, vault, settings, device):
    record = certificates.issue(db, vault, settings, device, "domain_credential", key_type="ecdsa-p256")[0]
    db.commit()
    return record


def test_a_new_domain_credential_supersedes_the_old_and_drops_the_cas_crl(engine, db, vault, device, settings):
    first = issue_credential(db, vault, settings, device)
    issuing = device.domain.ca("issuing")
    before = crl.current_crl(db, vault, issuing, settings)
    assert first.serial_number not in {format(c.serial_number, "x") for c in load_der_x509_crl(before)}
    second = issue_credential(db, vault, settings, device)
    # The session's objects show what the statements wrote, without a refresh, and nothing is left to flush.
    assert not db.dirty and not db.new
    assert first.status == "revoked" and first.revocation_reason == "superseded" and first.revoked_at is not None
    assert second.status == "active" and device.credential is second and device.status == "onboarded"
    assert issuing.crl_der is None
    for obj in (first, second, device, issuing):
        assert_shows_the_row(engine, obj)
    # The next CRL is issued anew and lists the superseded credential.
    after = crl.current_crl(db, vault, issuing, settings)
    assert after != before
    assert int(first.serial_number, 16) in {c.serial_number for c in load_der_x509_crl(after)}


def test_a_failure_before_the_commit_leaves_nothing(engine, db, vault, device, settings):
    first = issue_credential(db, vault, settings, device)
    prepared = certificates.prepare(db, vault, settings, device, "domain_credential", first_key(first))
    begin_write(db)
    record = certificates.record(db, prepared, settings)
    record_id = record.id
    # Written inside the transaction, so that the rollback has something to undo.
    inside = db.connection()
    status = inside.execute(select(IssuedCertificate.status).where(IssuedCertificate.id == first.id)).scalar()
    assert status == "revoked"
    assert inside.execute(select(Device.credential_id).where(Device.id == device.id)).scalar() == record_id
    db.rollback()
    assert stored(engine, IssuedCertificate.__table__, first.id)["status"] == "active"
    with engine.connect() as connection:
        assert connection.execute(select(IssuedCertificate.id).where(IssuedCertificate.id == record_id)).first() is None
    assert stored(engine, Device.__table__, device.id)["credential_id"] == first.id


def first_key(record):
    """The public key of record's certificate: a request for the same key again."""
    return x509.load_certificate(record.certificate_der).public_key()


def test_the_secrets_retry_window_starts_at_its_first_use(engine, db, vault, device, settings):
    """by_secret: the retry window the first use opened stays, even when the session read the device before a
    concurrent request opened it; the session then shows the window the row holds."""
    first = issue_credential(db, vault, settings, device)  # an operator's issue spends the secret ...
    assert device.secret_encrypted is None and device.secret_retry_until is None
    devices.issue_secret(vault, device)  # ... so give the device a new one, as an operator would
    db.commit()
    window_end = utcnow().replace(microsecond=0) + datetime.timedelta(minutes=3)
    # Another worker's enrollment opened the window meanwhile; this session still shows none.
    with session_factory(engine)() as other:
        other.get(Device, device.id).secret_retry_until = window_end
        other.commit()
    assert device.secret_retry_until is None
    prepared = certificates.prepare(db, vault, settings, device, "domain_credential", first_key(first))
    begin_write(db)
    record = pki.record_certificate(db, prepared.signer, device, prepared.certificate, "domain_credential", "active")
    devices.activate(db, device, record, settings, by_secret=True)
    db.commit()
    assert device.secret_retry_until == window_end and device.secret_encrypted is not None
    assert_shows_the_row(engine, device)
    assert devices.secret_usable(device)


def test_a_plain_device_gets_a_plain_record_and_the_sessions_objects_still_show_it(engine, db, vault, device, settings):
    """The enrollment protocols' plain device (services/enrolling.py) gets a plain record, not an ORM object adopted
    by the session (issue 16); the session's own object of the device, loaded beside it, shows the onboarding and
    loads the new credential when asked, and the old credential shows its revocation."""
    first = issue_credential(db, vault, settings, device)
    devices.issue_secret(vault, device)
    db.commit()
    plain = enrolling.device(db, device.id)
    prepared = certificates.prepare(db, vault, settings, device, "domain_credential", first_key(first))
    begin_write(db)
    record = pki.record_certificate(db, prepared.signer, plain, prepared.certificate, "domain_credential", "active")
    assert isinstance(record, enrolling.EnrollingCertificate)
    assert db.identity_map.get((IssuedCertificate, (record.id,), None)) is None
    devices.activate(db, plain, record, settings, by_secret=True)
    db.commit()
    assert plain.credential is record and plain.credential_id == record.id and plain.status == "onboarded"
    assert device.credential_id == record.id and device.status == "onboarded"
    assert device.credential.id == record.id and device.credential.serial_number == record.serial_number
    assert first.status == "revoked" and first.revocation_reason == "superseded"
    for obj in (first, device, device.credential):
        assert_shows_the_row(engine, obj)
    assert {key: getattr(record, key) for key in stored(engine, IssuedCertificate.__table__, record.id)} == stored(
        engine, IssuedCertificate.__table__, record.id
    )


def test_a_credential_used_spends_the_secret_it_was_obtained_with(engine, db, vault, device, settings):
    devices.issue_secret(vault, device)
    db.commit()
    prepared = certificates.prepare(
        db, vault, settings, device, "domain_credential", first_key(issue_credential(db, vault, settings, device))
    )
    devices.issue_secret(vault, device)
    db.commit()
    begin_write(db)
    record = pki.record_certificate(db, prepared.signer, device, prepared.certificate, "domain_credential", "active")
    devices.activate(db, device, record, settings, by_secret=True)
    db.commit()
    assert device.secret_retry_until is not None and devices.secret_usable(device)
    begin_write(db)
    certificates.mark_used(record)
    db.commit()
    assert record.first_used_at is not None and device.secret_encrypted is None and device.secret_retry_until is None
    assert devices.device_secret(vault, device) is None
    for obj in (record, device):
        assert_shows_the_row(engine, obj)


def test_a_renewal_revokes_the_lost_renewals_and_supersedes_what_it_renews(engine, db, vault, device, settings):
    def renew(replaces):
        return certificates.issue(db, vault, settings, device, "tls_client", key_type="ecdsa-p256", replaces=replaces)

    original = certificates.issue(db, vault, settings, device, "tls_client", key_type="ecdsa-p256")[0]
    db.commit()
    lost = renew(original)[0]
    db.commit()
    issuing = db.get(CertificateAuthority, lost.ca_id)
    crl.current_crl(db, vault, issuing, settings)
    assert issuing.crl_der is not None
    kept = renew(original)[0]
    db.commit()
    assert lost.status == "revoked" and lost.revocation_reason == "superseded"
    assert original.status == "active" and original.superseded_at is not None and kept.status == "active"
    assert issuing.crl_der is None
    for obj in (original, lost, kept, issuing):
        assert_shows_the_row(engine, obj)


def test_a_binding_made_meanwhile_is_seen_under_the_write_lock(engine, db, vault, settings):
    """identity.bound_meanwhile reads the device's registration again (one SELECT): a binding another worker made
    after this session read the device refuses this request's binding, and the session shows the row's."""
    domain = pki.create_domain(db, vault, "d2")
    db.commit()
    truststore = Truststore(name="makers", usage="idevid", certificates_pem="")
    db.add(truststore)
    db.flush()
    mine, theirs = (
        DevIdRegistration(name=name, domain_id=domain.id, truststore_id=truststore.id, pattern="SN-.*")
        for name in ("mine", "theirs")
    )
    db.add_all([mine, theirs])
    unbound, _secrets = devices.create_device(db, vault, "plc-2", domain, "cmp_idevid", serial_number="SN-1")
    db.commit()
    assert identity.bound_meanwhile(db, unbound, mine) is None
    with session_factory(engine)() as other:
        other.get(Device, unbound.id).devid_registration_id = theirs.id
        other.commit()
    assert unbound.devid_registration_id is None
    begin_write(db)
    assert identity.bound_meanwhile(db, unbound, mine) == "theirs"
    assert unbound.devid_registration is theirs
    db.rollback()


def test_the_first_use_is_recorded_once(engine, db, vault, device, settings):
    """mark_used keeps the first use a concurrent request recorded, though this session read the credential before."""
    record = issue_credential(db, vault, settings, device)
    earlier = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    with engine.begin() as connection:  # another request, committed after this session read the record
        connection.execute(
            IssuedCertificate.__table__.update().where(IssuedCertificate.id == record.id).values(first_used_at=earlier)
        )
    assert record.first_used_at is None
    begin_write(db)
    certificates.mark_used(record)
    db.commit()
    assert stored(engine, IssuedCertificate.__table__, record.id)["first_used_at"].replace(
        tzinfo=None
    ) == earlier.replace(tzinfo=None)


def test_revoke_ids_revokes_the_live_ones_among_ids(engine, db, vault, device, settings):
    """One statement of IDS_PER_STATEMENT parameters whatever the number of ids (a short list repeats its last):
    the live certificates among them are revoked once each, and the session's objects show it."""
    records = [
        certificates.issue(db, vault, settings, device, "tls_client", key_type="ecdsa-p256")[0] for _n in range(3)
    ]
    db.commit()
    begin_write(db)
    ids = [record.id for record in records[:2]] + [10**9]
    assert sorted(pki.revoke_ids(db, "superseded", ids)) == sorted(ids[:2])
    assert pki.revoke_ids(db, "superseded", ids) == []  # revoked already: no longer live
    assert pki.revoke_ids(db, "superseded", []) == []
    db.commit()
    assert [record.status for record in records] == ["revoked", "revoked", "active"]
    for record in records:
        assert_shows_the_row(engine, record)


def test_a_credential_changed_meanwhile_is_seen_under_the_write_lock(engine, db, vault, device, settings):
    """refresh_secret reads the device's secret and credential again: the enrollment's plain row shows the row's
    credential, and the session's Device object, loaded before with its old credential, loads the new one."""
    first = issue_credential(db, vault, settings, device)
    assert device.credential is first
    row = enrolling.device(db, device.id)
    with session_factory(engine)() as other:  # another request, committed after this session read the device
        second = issue_credential(other, vault, settings, other.get(Device, device.id))
        second_id = second.id
    assert device.credential is first
    begin_write(db)
    devices.refresh_secret(db, row)
    assert row.credential_id == row.credential.id == second_id
    assert device.credential_id == second_id
    assert device.credential.id == second_id
    db.rollback()


def test_a_crl_to_issue_anew_leaves_the_workers_loop_before_it_writes(db, vault, device, settings):
    """On a worker's loop (a CMP genm crlStatusList) a CRL due anew moves the request to a thread before the write
    lock and the new number (runtime/on_loop.py); the CRL that is still current is served on the loop."""
    issuing = device.domain.ca("issuing")
    number = issuing.crl_number
    with on_loop.running(), pytest.raises(on_loop.LeaveLoop):
        crl.current_crl(db, vault, issuing, settings)
    assert issuing.crl_number == number and issuing.crl_der is None and not db.dirty
    current = crl.current_crl(db, vault, issuing, settings)  # as the thread runs it
    assert issuing.crl_number == number + 1
    with on_loop.running():
        assert crl.current_crl(db, vault, issuing, settings) == current
