# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""/browser/: the page the device's browser opens to download a credential with its one-time password.

No sign-in: the OTP is the credential (services/downloads.py). The download token travels in a hidden form
field, never in a URL (which logs and browser histories keep).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, render_template, request

from ...services import downloads
from ...storage.db import session
from ...storage.models import utcnow
from . import OTP_LIMIT, limiter, protect_form
from .forms import DownloadFileForm, OtpForm

log = logging.getLogger(__name__)
bp = Blueprint("browser", __name__, url_prefix="/browser", template_folder="../templates")
bp.before_request(protect_form)


def _download_form(order, token, error=None, status=200):
    form = DownloadFileForm(formdata=None, token=token)
    minutes = max(0, int((order.token_expires_at - utcnow()).total_seconds() // 60))
    return render_template("browser_download.html", form=form, order=order, error=error, minutes=minutes), status


@bp.route("/", methods=["GET", "POST"])
@limiter.limit(OTP_LIMIT, methods=["POST"])
def enter_otp():
    form = OtpForm()
    if request.method == "POST":
        try:
            order, token = downloads.unlock(session(), form.otp.data)
        except downloads.DownloadRefused as exc:
            log.info("browser download: OTP refused from %s: %s", request.remote_addr, exc.message)
            return render_template("browser_otp.html", form=form, error=exc.message), exc.status
        log.info("browser download %d for device %s unlocked from %s", order.id, order.device.name, request.remote_addr)
        return _download_form(order, token)
    return render_template("browser_otp.html", form=form, error=None)


@bp.post("/download")
@limiter.limit(OTP_LIMIT)
def download():
    form = DownloadFileForm()
    db = session()
    try:
        order = downloads.for_token(db, form.token.data)
    except downloads.DownloadRefused as exc:
        return render_template("browser_otp.html", form=OtpForm(formdata=None), error=exc.message), exc.status
    if form.password.data != form.confirm.data:
        return _download_form(order, form.token.data, "the two passwords differ", 400)
    try:
        services = current_app.extensions["trustpoint"]
        filename, content_type, body = downloads.download(
            db, services.vault, services.settings, form.token.data, form.password.data, form.file_format.data
        )
    except downloads.DownloadRefused as exc:
        if exc.status == 400:  # a password or format to correct: the token still works
            return _download_form(order, form.token.data, exc.message, 400)
        return render_template("browser_otp.html", form=OtpForm(formdata=None), error=exc.message), exc.status
    log.info("browser download %d: %s delivered to %s", order.id, filename, request.remote_addr)
    return Response(
        body,
        200,
        content_type=content_type,
        headers={"Content-Disposition": 'attachment; filename="%s"' % filename, "Cache-Control": "no-store"},
    )
