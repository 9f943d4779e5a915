# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The operators' pages under /ui/: sign-in, domains, devices (their certificates, help commands and credential
downloads), truststores and DevID registrations. Every action calls the service the REST API calls."""

from __future__ import annotations

import datetime
import logging
import os

from flask import Blueprint, Response, current_app, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import func, select
from trustpoint_core import x509
from trustpoint_core.profiles import APPLICATION_PROFILES

from ...errors import ApiError
from ...runtime import tls
from ...services import certificates, devices, downloads, help, operators, pki, trust
from ...storage.db import begin_write, get_by_id, paginate
from ...storage.db import session as db_session
from ...storage.models import Domain, IssuedCertificate, utcnow
from . import ABSOLUTE_TIMEOUT, SIGN_IN_LIMIT, SignedIn, forms, limiter, protect_form

log = logging.getLogger(__name__)
bp = Blueprint("pages", __name__, url_prefix="/ui", template_folder="../templates", static_folder="../static")
PER_PAGE = 25


@bp.before_request
def _signed_in():
    protect_form()
    if request.endpoint in ("pages.sign_in", "pages.static"):
        return None
    started = session.get("signed_in_at")
    if current_user.is_authenticated and (
        not isinstance(started, (int, float)) or utcnow().timestamp() - started > ABSOLUTE_TIMEOUT.total_seconds()
    ):
        logout_user()
        session.clear()
    if not current_user.is_authenticated:
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("pages.sign_in", next=target))
    return None


def _vault():
    return current_app.extensions["trustpoint"].vault


def _page_number():
    value = request.args.get("page", "1")
    return int(value) if value.isdigit() and len(value) < 10 else 1


def _render(template, http_status=200, **context):
    return render_template(template, **context), http_status


def _pem_response(text, filename):
    return Response(
        text,
        200,
        content_type="application/x-pem-file",
        headers={"Content-Disposition": 'attachment; filename="%s"' % filename},
    )


def _form_page(form, title, submit, act, **extra):
    """A form page: GET shows it; POST runs act(db), the service call that returns the next page, and shows
    the form again with the service's refusal (the API's message) when it raises ApiError."""
    error = None
    if request.method == "POST":
        db = db_session()
        try:
            return act(db)
        except ApiError as exc:
            db.rollback()
            error = exc
    action = request.full_path.rstrip("?")
    return _render(
        "form.html", error.status if error else 200, form=form, error=error, title=title, action=action,
        submit=submit, **extra,
    )  # fmt: skip


def _confirm_page(title, text, submit, back, act):
    """A page that confirms a deletion: POST runs act(db) under the write lock and commits."""
    form = forms.ConfirmForm()
    error = None
    if request.method == "POST":
        db = db_session()
        begin_write(db)
        try:
            response = act(db)
            db.commit()
            return response
        except ApiError as exc:
            db.rollback()
            error = exc
    return _render(
        "confirm.html", error.status if error else 200, form=form, error=error, title=title, text=text,
        submit=submit, back=back,
    )  # fmt: skip


def _when(value):
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


@bp.app_template_filter("when")
def _when_filter(value):
    return _when(value)


@bp.app_template_filter("days_left")
def _days_left(value):
    """How long until value, for an expiry column."""
    if value is None:
        return ""
    days = (value - utcnow()).days
    return "expired" if value <= utcnow() else ("in %d day%s" % (days, "" if days == 1 else "s"))


@bp.app_template_global("expiring")
def _expiring(value, days=30):
    return value is not None and value - utcnow() < datetime.timedelta(days=days)


# --- sign-in -------------------------------------------------------------------------------------


def _safe_next(target):
    """A path on this site to continue at after signing in (never another site's URL)."""
    if isinstance(target, str) and target.startswith("/ui/") and "//" not in target and "\\" not in target:
        return target
    return url_for("pages.devices")


@bp.route("/sign-in", methods=["GET", "POST"])
@limiter.limit(SIGN_IN_LIMIT, methods=["POST"])
def sign_in():
    form = forms.SignInForm()
    error = None
    if request.method == "POST":
        try:
            operator = operators.authenticate(db_session(), form.username.data, form.password.data)
        except operators.SignInRefused as exc:
            log.info("sign-in refused for %r from %s: %s", (form.username.data or "")[:64], request.remote_addr, exc)
            error = exc.message
        else:
            session.clear()
            login_user(SignedIn(operator))
            session.permanent = True
            session["signed_in_at"] = utcnow().timestamp()
            log.info("operator %s signed in from %s", operator.username, request.remote_addr)
            return redirect(_safe_next(request.args.get("next")))
    return _render("sign_in.html", 401 if error else 200, form=form, error=error)


@bp.post("/sign-out")
def sign_out():
    db = db_session()
    begin_write(db)
    operators.end_sessions(current_user.operator)
    db.commit()
    logout_user()
    session.clear()
    return redirect(url_for("pages.sign_in"))


@bp.get("/")
def home():
    return redirect(url_for("pages.devices"))


@bp.get("/tls-ca.pem")
def tls_ca():
    """The server's TLS trust anchor (init's CA), for the devices."""
    path = os.path.join(current_app.extensions["trustpoint"].settings.data_dir, tls.CA_FILE)
    try:
        with open(path) as handle:
            return _pem_response(handle.read(), "tls-ca.pem")
    except FileNotFoundError:
        raise ApiError(
            404, "the server runs with a TLS certificate of its own (--tls-cert); its CA is the operator's"
        ) from None


# --- domains -------------------------------------------------------------------------------------


@bp.get("/domains")
def domains():
    search = request.args.get("search", "").strip()
    page = paginate(db_session(), pki.domains_query(search), _page_number(), PER_PAGE)
    return _render("domains.html", page=page, search=search, ca_expiry=_ca_expiry)


def _ca_expiry(domain):
    return x509.not_after(x509.load_certificate(domain.ca("issuing").certificate_der))


@bp.route("/domains/new", methods=["GET", "POST"])
def new_domain():
    form = forms.DomainForm()

    def create(db):
        days = form.validity_days.data or ""
        domain = pki.create_domain(
            db, _vault(), form.name.data, form.key_type.data, int(days) if days.strip().isdigit() else days
        )
        db.commit()
        log.info("operator %s created domain %s", current_user.username, domain.name)
        return redirect(url_for("pages.domain", name=domain.name))

    return _form_page(form, "New domain", "Create the domain", create)


@bp.get("/domains/<name>")
def domain(name):
    db = db_session()
    item = pki.get_domain(db, name)
    issuing, root = pki.ca_chain(item)
    registrations = db.scalars(trust.registrations_query(domain=item)).all()
    return _render(
        "domain.html",
        domain=item,
        issuing=issuing,
        root=root,
        registrations=registrations,
        summary=x509.summary,
        device_count=len(item.devices),
    )


@bp.get("/domains/<name>/ca-chain.pem")
def domain_chain(name):
    item = pki.get_domain(db_session(), name)
    return _pem_response(x509.certificates_to_pem(pki.ca_chain(item)), "%s-ca-chain.pem" % item.name)


@bp.route("/domains/<name>/delete", methods=["GET", "POST"])
def delete_domain(name):
    item = pki.get_domain(db_session(), name)

    def delete(db):
        pki.delete_domain(db, pki.get_domain(db, name))
        log.info("operator %s deleted domain %s", current_user.username, name)
        return redirect(url_for("pages.domains"))

    return _confirm_page(
        "Delete domain %s" % item.name,
        "The domain, its CAs and the records of its certificates are deleted. A domain with devices or DevID "
        "registrations cannot be deleted.",
        "Delete the domain",
        url_for("pages.domain", name=item.name),
        delete,
    )


# --- devices -------------------------------------------------------------------------------------


def _device(device_id):
    item = get_by_id(db_session(), devices.Device, device_id)
    if item is None:
        raise ApiError(404, "device %s does not exist" % device_id)
    return item


def _expiries(db, items):
    """{device id: notAfter of its domain credential, else of its earliest active certificate}."""
    ids = [d.id for d in items]
    rows = db.execute(
        select(IssuedCertificate.device_id, func.min(IssuedCertificate.not_after))
        .where(IssuedCertificate.device_id.in_(ids), IssuedCertificate.status == "active")
        .group_by(IssuedCertificate.device_id)
    ).all()
    earliest = dict(rows)
    return {d.id: (d.credential.not_after if d.credential is not None else earliest.get(d.id)) for d in items}


@bp.get("/devices", endpoint="devices")
def devices_list():
    db = db_session()
    args = request.args
    search = args.get("search", "").strip()
    domain_name = args.get("domain", "")
    status = args.get("status", "")
    domain_filter = db.scalar(select(Domain).where(Domain.name == domain_name)) if domain_name else None
    try:
        query = devices.devices_query(search, domain_filter, status or None)
    except ApiError:
        query, status = devices.devices_query(search, domain_filter), ""
    page = paginate(db, query, _page_number(), PER_PAGE)
    return _render(
        "devices.html",
        page=page,
        search=search,
        domain_name=domain_name,
        status=status,
        domains=db.scalars(pki.domains_query()).all(),
        statuses=devices.STATUSES,
        expiries=_expiries(db, page.items),
    )


@bp.route("/devices/new", methods=["GET", "POST"])
def new_device():
    form = forms.DeviceForm()
    form.domain.choices = [(d.name, d.name) for d in db_session().scalars(pki.domains_query())]

    def create(db):
        begin_write(db)
        domain = pki.get_domain(db, form.domain.data or "")
        item, secret = devices.create_device(
            db, _vault(), form.name.data, domain, form.onboarding_method.data, form.serial_number.data or None
        )
        db.commit()
        log.info("operator %s registered device %s (id %d)", current_user.username, item.name, item.id)
        return _help_page(item, next(iter(secret.values()), None), created=True)

    return _form_page(form, "New device", "Register the device", create)


@bp.get("/devices/<int:device_id>")
def device(device_id):
    db = db_session()
    item = _device(device_id)
    page = paginate(db, certificates.certificates_query(item), _page_number(), PER_PAGE)
    return _render(
        "device.html",
        device=item,
        page=page,
        downloads=downloads.downloads_of(db, item),
        download_state=downloads.state_of,
        revoke_form=forms.RevokeForm(),
        confirm=forms.ConfirmForm(),
        secret_kind=devices.SECRET_KINDS[item.onboarding_method],
    )


@bp.route("/devices/<int:device_id>/delete", methods=["GET", "POST"])
def delete_device(device_id):
    item = _device(device_id)

    def delete(db):
        devices.delete_device(db, devices.get_device(db, device_id))
        log.info("operator %s deleted device %s (id %d)", current_user.username, item.name, device_id)
        return redirect(url_for("pages.devices"))

    return _confirm_page(
        "Delete device %s" % item.name,
        "The device is deleted; its certificates stay on record, revoked (cessationOfOperation).",
        "Delete the device",
        url_for("pages.device", device_id=item.id),
        delete,
    )


def _urls():
    """Where the devices reach the server: ?server=host[:port] of the help page, else this page's host."""
    settings = current_app.extensions["trustpoint"].settings
    return help.urls_for(request.args.get("server", ""), request.host, settings.plain_port)


def _help_page(item, secret=None, created=False):
    urls, host = _urls()
    profile = request.args.get("profile", "tls_client")
    if profile not in APPLICATION_PROFILES:
        profile = "tls_client"
    return _render(
        "help.html",
        device=item,
        secret=secret,
        created=created,
        host=host,
        profile=profile,
        profiles=APPLICATION_PROFILES,
        onboarding=help.onboarding_sections(item, urls, secret, current_app.extensions["trustpoint"].settings),
        application=help.application_sections(item, urls, profile),
        confirm=forms.ConfirmForm(),
        secret_kind=devices.SECRET_KINDS[item.onboarding_method],
    )


@bp.route("/devices/<int:device_id>/help", methods=["GET", "POST"])
def device_help(device_id):
    """Help - issue new credentials. POST issues a fresh one-time secret and shows the commands with it."""
    item = _device(device_id)
    if request.method == "POST":
        db = db_session()
        begin_write(db)
        item = devices.get_device(db, device_id)
        secret = devices.issue_secret(_vault(), item)
        if not secret:
            db.rollback()
            raise ApiError(
                409, "device %s onboards with %s, which uses no secret" % (item.name, item.onboarding_method)
            )
        db.commit()
        log.info("operator %s issued a new one-time secret for device %s", current_user.username, item.name)
        return _help_page(item, next(iter(secret.values())))
    return _help_page(item)


@bp.route("/devices/<int:device_id>/certificates/new", methods=["GET", "POST"])
def new_certificate(device_id):
    """An application certificate (or domain credential) for the key of a CSR the device made."""
    item = _device(device_id)
    form = forms.CertificateRequestForm()
    form.profile.choices = [(p, p) for p in certificates.operator_profiles(item)]
    if request.method == "GET":
        form.profile.data = "tls_client"

    def issue(db):
        csr = form.csr.data or ""
        upload = request.files.get(form.csr_file.name)
        if upload is not None and upload.filename:
            csr = upload.read(64 * 1024).decode("utf-8", "replace")
        if not csr.strip():
            raise ApiError(400, "paste the certificate request (PEM) or choose its file")
        record, _certificate, _key = certificates.issue(
            db, _vault(), current_app.extensions["trustpoint"].settings, item, form.profile.data, csr=csr
        )
        db.commit()
        log.info(
            "operator %s issued %s %s to device %s", current_user.username, record.profile, record.serial_number,
            item.name,
        )  # fmt: skip
        return redirect(url_for("pages.certificate", device_id=item.id, serial=record.serial_number, issued=1))

    return _form_page(
        form, "Issue a certificate for %s from a request" % item.name, "Issue the certificate", issue,
        multipart=True, back=url_for("pages.device", device_id=item.id),
    )  # fmt: skip


@bp.get("/devices/<int:device_id>/certificates/<serial>")
def certificate(device_id, serial):
    item = _device(device_id)
    record = certificates.get_certificate(db_session(), item, serial)
    return _render(
        "certificate.html",
        device=item,
        record=record,
        info=certificates.certificate_json(record, current_app.extensions["trustpoint"].settings),
        revoke_form=forms.RevokeForm(),
        issued=request.args.get("issued") == "1",
    )


@bp.get("/devices/<int:device_id>/certificates/<serial>.pem")
def certificate_pem(device_id, serial):
    record = certificates.get_certificate(db_session(), _device(device_id), serial)
    certificate_pem = x509.certificates_to_pem([x509.load_certificate(record.certificate_der)])
    return _pem_response(certificate_pem, "%s-%s.pem" % (record.device_name, record.serial_number))


@bp.post("/devices/<int:device_id>/certificates/<serial>/revoke")
def revoke(device_id, serial):
    form = forms.RevokeForm()
    db = db_session()
    begin_write(db)
    item = devices.get_device(db, device_id)
    revoked = certificates.revoke_for_operator(db, item, serial, form.reason.data)
    db.commit()
    record = revoked[0]
    log.info(
        "operator %s revoked %s of device %s: %s%s",
        current_user.username,
        record.serial_number,
        item.name,
        form.reason.data,
        ", taking %s with it" % ", ".join(r.serial_number for r in revoked[1:]) if revoked[1:] else "",
    )
    return redirect(url_for("pages.certificate", device_id=item.id, serial=record.serial_number))


@bp.route("/devices/<int:device_id>/downloads/new", methods=["GET", "POST"])
def new_download(device_id):
    """Order a credential for download in the device's browser: shows the one-time password once."""
    item = _device(device_id)
    form = forms.DownloadOrderForm()
    form.profile.choices = [(p, p) for p in certificates.operator_profiles(item)]
    if request.method == "GET":
        form.key_type.data = item.domain.key_type
        form.profile.data = "domain_credential" if item.onboarding_method != "none" else "tls_client"

    def order(db):
        names = [line.strip() for line in (form.subject_alt_names.data or "").splitlines() if line.strip()]
        common_name = (form.common_name.data or "").strip()
        try:
            subject = x509.name_to_string(x509.common_name(common_name)) if common_name else None
        except ValueError as exc:
            raise ApiError(400, "common name: %s" % exc) from exc
        download, otp = downloads.create_download(
            db, item, form.profile.data, form.key_type.data, subject, names,
            created_by="operator:%s" % current_user.username,
        )  # fmt: skip
        db.commit()
        log.info("operator %s ordered a %s download for device %s", current_user.username, download.profile, item.name)
        return _render(
            "download_ordered.html", device=item, order=download, otp=otp,
            url=url_for("browser.enter_otp", _external=True), attempts=downloads.MAX_ATTEMPTS,
            minutes=int(downloads.TOKEN_VALIDITY.total_seconds() // 60),
            hours=int(downloads.OTP_VALIDITY.total_seconds() // 3600),
        )  # fmt: skip

    return _form_page(
        form, "Download a credential on %s's browser" % item.name, "Get a one-time password", order,
        back=url_for("pages.device", device_id=item.id),
        intro="The server generates the key when the device downloads it, protected with a password chosen "
        "there; it keeps no copy. You get a one-time password to type on the device.",
    )  # fmt: skip


@bp.post("/devices/<int:device_id>/downloads/<int:download_id>/cancel")
def cancel_download(device_id, download_id):
    db = db_session()
    begin_write(db)
    order = downloads.get_download(db, devices.get_device(db, device_id), download_id)
    downloads.cancel(order)
    db.commit()
    return redirect(url_for("pages.device", device_id=device_id))


# --- truststores ---------------------------------------------------------------------------------


@bp.get("/truststores")
def truststores():
    search = request.args.get("search", "").strip()
    usage = request.args.get("usage", "")
    page = paginate(
        db_session(),
        trust.truststores_query(search, usage if usage in trust.USAGES else None),
        _page_number(),
        PER_PAGE,
    )
    return _render(
        "truststores.html",
        page=page,
        search=search,
        usage=usage,
        usages=trust.USAGES,
        count=lambda t: len(x509.load_certificates(t.certificates_pem)),
    )


@bp.route("/truststores/new", methods=["GET", "POST"])
def new_truststore():
    form = forms.TruststoreForm()

    def create(db):
        pem = form.certificates.data or ""
        upload = request.files.get(form.certificates_file.name)
        if upload is not None and upload.filename:
            pem = upload.read(96 * 1024).decode("utf-8", "replace")
        item = trust.create_truststore(db, form.name.data, form.usage.data, pem)
        db.commit()
        log.info("operator %s created truststore %s", current_user.username, item.name)
        return redirect(url_for("pages.truststore", name=item.name))

    return _form_page(form, "New truststore", "Create the truststore", create, multipart=True)


@bp.get("/truststores/<name>")
def truststore(name):
    db = db_session()
    item = trust.get_truststore(db, name)
    return _render(
        "truststore.html",
        truststore=item,
        users=trust.truststore_users(db, item),
        certificates=[x509.summary(c) for c in x509.load_certificates(item.certificates_pem)],
    )


@bp.route("/truststores/<name>/delete", methods=["GET", "POST"])
def delete_truststore(name):
    item = trust.get_truststore(db_session(), name)

    def delete(db):
        trust.delete_truststore(db, trust.get_truststore(db, name))
        log.info("operator %s deleted truststore %s", current_user.username, name)
        return redirect(url_for("pages.truststores"))

    return _confirm_page(
        "Delete truststore %s" % item.name,
        "A truststore that DevID registrations use cannot be deleted.",
        "Delete the truststore",
        url_for("pages.truststore", name=item.name),
        delete,
    )


# --- DevID registrations -------------------------------------------------------------------------


@bp.get("/devid-registrations")
def registrations():
    db = db_session()
    search = request.args.get("search", "").strip()
    page = paginate(db, trust.registrations_query(search), _page_number(), PER_PAGE)
    return _render("registrations.html", page=page, search=search)


@bp.route("/devid-registrations/new", methods=["GET", "POST"])
def new_registration():
    form = forms.RegistrationForm()
    form.domain.choices = [(d.name, d.name) for d in db_session().scalars(pki.domains_query())]
    form.truststore.choices = [(t.name, t.name) for t in db_session().scalars(trust.truststores_query(usage="idevid"))]

    def create(db):
        fields = {
            "name": form.name.data,
            "domain": form.domain.data or "",
            "truststore": form.truststore.data or "",
            "pattern": form.pattern.data,
            "auto_create_devices": bool(form.auto_create_devices.data),
        }
        item = trust.create_registration(db, fields)
        db.commit()
        log.info("operator %s created DevID registration %s", current_user.username, item.name)
        return redirect(url_for("pages.registration", name=item.name))

    return _form_page(form, "New DevID registration", "Create the registration", create)


@bp.get("/devid-registrations/<name>")
def registration(name):
    return _render("registration.html", registration=trust.get_registration(db_session(), name))


@bp.route("/devid-registrations/<name>/delete", methods=["GET", "POST"])
def delete_registration(name):
    item = trust.get_registration(db_session(), name)

    def delete(db):
        trust.delete_registration(db, trust.get_registration(db, name))
        log.info("operator %s deleted DevID registration %s", current_user.username, name)
        return redirect(url_for("pages.registrations"))

    return _confirm_page(
        "Delete DevID registration %s" % item.name,
        "Devices it admitted keep their credentials; new IDevIDs it matched are refused.",
        "Delete the registration",
        url_for("pages.registration", name=item.name),
        delete,
    )
