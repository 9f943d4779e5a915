# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pages' forms (Flask-WTF: each carries its CSRF token). They only collect fields: the services check
them, with the same rules and messages as the REST API."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from trustpoint_core import keys
from wtforms import BooleanField, HiddenField, PasswordField, RadioField, SelectField, StringField, TextAreaField

from ...services import certificates, devices, downloads, pki, trust

KEY_TYPE_CHOICES = [(k, k) for k in keys.KEY_TYPES]
METHOD_LABELS = {
    "cmp_shared_secret": "CMP with a one-time shared secret",
    "cmp_idevid": "CMP with the IDevID",
    "est_password": "EST with a one-time password",
    "est_idevid": "EST with the IDevID (TLS client certificate)",
    "none": "None: application certificates issued by an operator",
    "aoki": "Zero-touch (AOKI): the IDevID, after checking the server's DevOwnerID",
    "agent": "trustpoint-agent with a one-time onboarding token",
}


def _select(label, choices, **kwargs):
    # The services decide what is valid, with the API's messages: no second check here.
    return SelectField(label, choices=choices, validate_choice=False, **kwargs)


class ConfirmForm(FlaskForm):
    """A button that changes something: only the CSRF token."""


class SignInForm(FlaskForm):
    username = StringField("Name", render_kw={"autocomplete": "username", "autofocus": True, "required": True})
    password = PasswordField("Password", render_kw={"autocomplete": "current-password", "required": True})


class DomainForm(FlaskForm):
    name = StringField("Name", description="1-64 letters, digits, '_' or '-'", render_kw={"required": True})
    key_type = _select("Key type of its CAs", KEY_TYPE_CHOICES, default=keys.DEFAULT_KEY_TYPE)
    validity_days = StringField(
        "Validity of domain credentials (days)",
        default=str(pki.DEFAULT_VALIDITY_DAYS),
        render_kw={"inputmode": "numeric", "required": True},
    )


class DeviceForm(FlaskForm):
    name = StringField(
        "Name",
        description="Its certificates' common name; 1-128 letters, digits, '.', '_', ':' or '-'",
        render_kw={"required": True},
    )
    domain = _select("Domain", [])
    onboarding_method = _select("Onboarding method", [(m, METHOD_LABELS[m]) for m in devices.ONBOARDING_METHODS])
    serial_number = StringField("IDevID serial number (optional)", description="Subject serialNumber of its IDevID")


class TruststoreForm(FlaskForm):
    name = StringField("Name", render_kw={"required": True})
    usage = _select("Usage", [(u, u) for u in trust.USAGES])
    certificates = TextAreaField("Certificates (PEM)", render_kw={"rows": 8, "spellcheck": "false"})
    certificates_file = FileField("or a PEM file")


class RegistrationForm(FlaskForm):
    name = StringField("Name", render_kw={"required": True})
    domain = _select("Domain the devices join", [])
    truststore = _select("Truststore (usage idevid)", [])
    pattern = StringField(
        "Pattern",
        description="A regular expression that fully matches the IDevID's serialNumber or a SAN URI",
        render_kw={"required": True, "spellcheck": "false"},
    )
    auto_create_devices = BooleanField("Create devices on first contact")


class CertificateRequestForm(FlaskForm):
    profile = _select("Profile", [])
    csr = TextAreaField("Certificate request (PEM)", render_kw={"rows": 10, "spellcheck": "false"})
    csr_file = FileField("or a CSR file")


class DownloadOrderForm(FlaskForm):
    profile = _select("Profile", [])
    key_type = _select("Key type", KEY_TYPE_CHOICES)
    common_name = StringField("Common name", description="Empty: the device's name")
    subject_alt_names = TextAreaField(
        "Subject alternative names",
        description="One per line: DNS:name, IP:address, URI:uri or email:address",
        render_kw={"rows": 3, "spellcheck": "false"},
    )


class RevokeForm(FlaskForm):
    reason = _select("Reason", [(r, r) for r in certificates.REVOCATION_REASONS], default="cessationOfOperation")


class OtpForm(FlaskForm):
    otp = StringField(
        "One-time password",
        description="As the operator gave it, for example ABCDE-FGHJK-MNPQR-STVWX",
        render_kw={
            "autocomplete": "one-time-code",
            "autocapitalize": "characters",
            "spellcheck": "false",
            "autofocus": True,
            "required": True,
        },
    )


class DownloadFileForm(FlaskForm):
    token = HiddenField()
    password = PasswordField(
        "Password for the private key",
        description="At least %d characters" % keys.MIN_PASSWORD_LENGTH,
        render_kw={"autocomplete": "new-password", "required": True},
    )
    confirm = PasswordField("The password again", render_kw={"autocomplete": "new-password", "required": True})
    file_format = RadioField("Format", choices=list(downloads.FORMAT_LABELS.items()), default="pkcs12")
