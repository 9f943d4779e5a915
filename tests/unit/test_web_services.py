# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The services behind the web pages, on a real (SQLite) database: one-time-password downloads, operators'
sign-in delays, certificates an operator issues."""

from __future__ import annotations

import datetime
import io
import tarfile
import zipfile

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key, pkcs12
from trustpoint_server.errors import ApiError
from trustpoint_server.services import certificates, devices, downloads, operators
from trustpoint_server.storage.models import CredentialDownload, IssuedCertificate, utcnow


def test_an_otp_unlocks_once_and_the_download_works_once(db, vault, device, settings):
    order, otp = downloads.create_download(db, device, "domain_credential", created_by="t")
    db.commit()
    assert order.state == "pending" and downloads.normalise_otp(otp) is not None
    # Nothing is signed, and no key exists, before the download.
    assert db.query(IssuedCertificate).count() == 0
    _order, token = downloads.unlock(db, " " + otp.lower().replace("-", " ") + " ")
    with pytest.raises(downloads.DownloadRefused, match="not valid"):
        downloads.unlock(db, otp)
    name, content_type, body = downloads.download(db, vault, settings, token, "a long password", "pkcs12")
    assert name == "trustpoint-plc-1-domain_credential.p12" and content_type == "application/x-pkcs12"
    key, certificate, chain = pkcs12.load_key_and_certificates(body, b"a long password")
    assert certificate.subject.rfc4514_string() == "CN=plc-1" and len(chain) == 2 and key is not None
    db.refresh(device)
    assert device.status == "onboarded" and device.secret_encrypted is None
    with pytest.raises(downloads.DownloadRefused, match="used up or expired") as refused:
        downloads.download(db, vault, settings, token, "a long password", "pkcs12")
    assert refused.value.status == 410
    # The row holds no key material and no usable token.
    row = db.get(CredentialDownload, order.id)
    assert row.state == "downloaded" and row.token_sha256 is None and row.certificate.status == "active"


def test_three_wrong_otps_void_the_order(db, device):
    _order, otp = downloads.create_download(db, device, "tls_client", created_by="t")
    db.commit()
    wrong = otp[:6] + ("A" if otp[6] != "A" else "B") + otp[7:]
    for message in ("2 attempts left", "1 attempt left", "void"):
        with pytest.raises(downloads.DownloadRefused, match=message):
            downloads.unlock(db, wrong)
    with pytest.raises(downloads.DownloadRefused, match="not valid"):
        downloads.unlock(db, otp)


@pytest.mark.parametrize("text", ["", "x" * 200, "ABCDE-FGHJK", "ABCDE-FGHJK-MNPQR-STVW1", None, 12])
def test_malformed_otps_are_refused_without_a_lookup(db, text):
    assert downloads.normalise_otp(text) is None
    with pytest.raises(downloads.DownloadRefused, match="not valid"):
        downloads.unlock(db, text)


def test_otps_and_tokens_expire(db, vault, device, settings):
    _order, otp = downloads.create_download(db, device, "tls_client", created_by="t")
    db.commit()
    later = utcnow() + downloads.OTP_VALIDITY + datetime.timedelta(seconds=1)
    with pytest.raises(downloads.DownloadRefused, match="not valid"):
        downloads.unlock(db, otp, now=later)
    order, otp = downloads.create_download(db, device, "tls_client", created_by="t")
    db.commit()
    _order, token = downloads.unlock(db, otp)
    late = utcnow() + downloads.TOKEN_VALIDITY + datetime.timedelta(seconds=1)
    with pytest.raises(downloads.DownloadRefused, match="expired"):
        downloads.download(db, vault, settings, token, "a long password", "pkcs12", now=late)
    assert downloads.state_of(db.get(CredentialDownload, order.id), late) == "expired"


def test_a_refused_password_or_format_keeps_the_token(db, vault, device, settings):
    _order, otp = downloads.create_download(db, device, "tls_client", created_by="t")
    db.commit()
    _order, token = downloads.unlock(db, otp)
    with pytest.raises(downloads.DownloadRefused, match="8 to 1024"):
        downloads.download(db, vault, settings, token, "short", "pkcs12")
    with pytest.raises(downloads.DownloadRefused, match="choose a format"):
        downloads.download(db, vault, settings, token, "a long password", "pfx")
    assert db.query(IssuedCertificate).count() == 0
    name, _type, body = downloads.download(db, vault, settings, token, "a long password", "pem_zip")
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        files = {info.filename: archive.read(info) for info in archive.infolist()}
    base = name[: -len(".zip")]
    assert sorted(files) == [
        "%s/%s" % (base, f) for f in ("certificate.pem", "certificate_chain.pem", "private_key.pem")
    ]
    assert b"ENCRYPTED PRIVATE KEY" in files[base + "/private_key.pem"]
    load_pem_private_key(files[base + "/private_key.pem"], b"a long password")


def test_pem_tar_gz(db, vault, device, settings):
    _order, otp = downloads.create_download(db, device, "tls_server", "rsa-2048", None, ["DNS:plc-1"], created_by="t")
    db.commit()
    _order, token = downloads.unlock(db, otp)
    name, content_type, body = downloads.download(db, vault, settings, token, "a long password", "pem_tar_gz")
    assert name.endswith(".tar.gz") and content_type == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        members = {m.name.rsplit("/", 1)[1]: m for m in archive.getmembers()}
        assert sorted(members) == ["certificate.pem", "certificate_chain.pem", "private_key.pem"]
        assert members["private_key.pem"].mode == 0o600
        key = load_pem_private_key(archive.extractfile(members["private_key.pem"]).read(), b"a long password")
    assert key.key_size == 2048


@pytest.mark.parametrize(
    ("profile", "fields", "message"),
    [
        # The names policy (services/names.py) decides now, as the issuance will.
        ("tls_server", {"subject_alt_names": ["DNS:other.example"]}, "may not have DNS:other.example"),
        ("tls_client", {"subject": "/CN=plc-2"}, "may not have CN:plc-2"),
        ("opc_ua", {"subject_alt_names": ["DNS:plc-1"]}, "needs a subject alternative name of type Uniform"),
        ("nope", {}, "profile must be one of"),
        ("tls_client", {"key_type": "dsa-1024"}, "key_type must be one of"),
        ("tls_client", {"subject_alt_names": ["FTP:x"]}, "must be DNS:"),
        ("tls_client", {"subject": "/XX=1"}, "cannot parse subject"),
    ],
)
def test_an_order_is_checked_when_it_is_made(db, device, profile, fields, message):
    with pytest.raises(ApiError, match=message):
        downloads.create_download(
            db, device, profile, fields.get("key_type"), fields.get("subject"), fields.get("subject_alt_names")
        )
    db.rollback()
    assert db.query(CredentialDownload).count() == 0


def test_devices_without_onboarding_get_application_certificates_only(db, vault, device, settings):
    none, secret = devices.create_device(db, vault, "sensor-1", device.domain, "none")
    db.commit()
    assert secret == {} and none.status == "no_onboarding"
    assert certificates.operator_profiles(none) == ["tls_client", "tls_server", "opc_ua"]
    with pytest.raises(ApiError, match="no domain credential"):
        certificates.issue(db, vault, settings, none, "domain_credential", key_type="ecdsa-p256")
    db.rollback()
    record, _certificate, key = certificates.issue(db, vault, settings, none, "tls_client", key_type="ecdsa-p256")
    db.commit()
    assert record.status == "active" and key is not None
    db.refresh(none)
    assert none.status == "no_onboarding" and none.credential is None


def test_a_renewal_supersedes_the_certificate_it_replaces(db, vault, device, settings):
    def issue(profile="tls_client", **fields):
        return certificates.issue(db, vault, settings, device, profile, key_type="ecdsa-p256", **fields)[0]

    first = issue()
    db.commit()
    second = issue(replaces=first)
    db.commit()
    db.refresh(first)
    # Superseded, not revoked at once: the answer may have been lost, and the renewal sent again.
    assert first.status == "active" and first.superseded_at is not None and second.status == "active"
    third = issue(replaces=first)
    db.commit()
    db.refresh(second)
    assert second.status == "revoked" and second.revocation_reason == "superseded" and third.status == "active"
    # The grace period over, the sweep revokes it.
    later = utcnow() + datetime.timedelta(hours=settings.renewal_grace_hours, seconds=1)
    assert certificates.sweep(db, settings, now=later, force=True)
    db.refresh(first)
    assert first.status == "revoked" and first.revocation_reason == "superseded"
    with pytest.raises(ApiError, match="only an active certificate is renewed"):
        issue(replaces=first)
    db.rollback()
    with pytest.raises(ApiError, match="a renewal keeps the profile"):
        issue("tls_server", subject_alt_names=["DNS:plc-1"], replaces=third)


def test_operator_sign_in_delays_after_failures_and_a_new_password_lifts_them(db):
    operator = operators.create_operator(db, "alice", "a good long password")
    db.commit()
    token = operator.session_token
    assert operators.authenticate(db, "alice", "a good long password").username == "alice"
    for _attempt in range(operators.FAILURES_BEFORE_DELAY):
        with pytest.raises(operators.SignInRefused, match="wrong name or password"):
            operators.authenticate(db, "alice", "not it")
    # From now on even the right password waits, and the check does not run.
    with pytest.raises(operators.SignInRefused, match="too many failed sign-ins"):
        operators.authenticate(db, "alice", "a good long password")
    later = utcnow() + operators.FIRST_DELAY + datetime.timedelta(seconds=1)
    assert operators.authenticate(db, "alice", "a good long password", now=later).failed_sign_ins == 0
    for _attempt in range(operators.FAILURES_BEFORE_DELAY + 3):
        try:
            operators.authenticate(db, "alice", "not it", now=later)
        except operators.SignInRefused:
            pass
    db.refresh(operator)
    assert operator.blocked_until - later <= operators.MAX_DELAY
    operators.set_password(db, operator, "another long password")
    db.commit()
    assert operators.authenticate(db, "alice", "another long password").username == "alice"
    assert operator.session_token != token
    assert operators.from_session_id(db, "%d:%s" % (operator.id, token)) is None
    assert operators.from_session_id(db, operators.session_id(operator)).username == "alice"


def test_unknown_operators_and_bad_inputs(db):
    with pytest.raises(operators.SignInRefused, match="wrong name or password"):
        operators.authenticate(db, "nobody", "whatever password")
    with pytest.raises(ApiError, match="12 to 1024"):
        operators.create_operator(db, "bob", "short")
    with pytest.raises(ApiError, match="operator name"):
        operators.create_operator(db, "bad name", "a good long password")
    operators.create_operator(db, "bob", "a good long password")
    db.commit()
    with pytest.raises(ApiError, match="already exists"):
        operators.create_operator(db, "bob", "a good long password")
    assert operators.from_session_id(db, "x:y") is None and operators.from_session_id(db, None) is None
    # An argon2id hash, never the password.
    assert operators.get_operator(db, "bob").password_hash.startswith("$argon2id$")


def test_deleting_a_device_deletes_its_downloads(db, vault, device, settings):
    _order, otp = downloads.create_download(db, device, "tls_client", created_by="t")
    db.commit()
    _order, token = downloads.unlock(db, otp)
    downloads.download(db, vault, settings, token, "a long password", "pkcs12")
    downloads.create_download(db, device, "tls_client", created_by="t")
    db.commit()
    assert db.query(CredentialDownload).count() == 2
    devices.delete_device(db, device)
    db.commit()
    assert db.query(CredentialDownload).count() == 0
    # The certificate it downloaded stays on record, revoked with the device.
    (record,) = db.query(IssuedCertificate).all()
    assert record.status == "revoked" and record.device_id is None
