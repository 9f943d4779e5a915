# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""CMP conformance (issue 15): what RFC 9483 / RFC 9810 ask that a conformance tester checks at once.

Every test decodes the server's answer (a PKIMessage, HTTP 200, application/pkixcmp) and checks the exact
body and PKIFailureInfo; a refused request changes nothing (snapshot before and after).
"""

from __future__ import annotations

import time

import pytest
from cmp_helpers import (
    PkiDomain,
    crl_url_of,
    enroll_with_secret,
    error_of,
    fetch_crl,
    post_cmp,
    signed,
    snapshot,
    unprotected,
)
from cryptography import x509
from pyasn1.codec.der import decoder, encoder
from trustpoint_core.cmp_message import (
    ID_IT_CA_CERTS,
    ID_IT_CERT_REQ_TEMPLATE,
    ID_IT_CRL_STATUS_LIST,
    ID_IT_CRLS,
    crl_status_list_value,
    genm_body,
    genp_values,
)
from trustpoint_core.cmp_protection import verify_signature


@pytest.fixture
def domain(server, workdir):
    return PkiDomain(server, workdir)


@pytest.fixture
def onboarded(server, domain):
    """A device of the domain holding a domain credential (ir with its shared secret)."""
    return enroll_with_secret(server, domain)


def rejected(url, der, fail_info):
    """POST der; the answer is an error with exactly fail_info. Returns the text."""
    found, text = error_of(post_cmp(url, der))
    assert found == (fail_info,), (found, text)
    return text


def _crls(value):
    items, rest = decoder.decode(value)
    assert not rest
    return [x509.load_der_x509_crl(encoder.encode(item)) for item in items]


# --- genm crlStatusList (RFC 9483 4.3.4) ------------------------------------------------------------------


def crl_request(*statuses):
    """A genm crlStatusList naming statuses: (distribution point URI or None, issuer Name or None, thisUpdate)."""
    return genm_body(ID_IT_CRL_STATUS_LIST, values={ID_IT_CRL_STATUS_LIST: crl_status_list_value(statuses)})


@pytest.mark.parametrize("source", ["distribution-point", "issuer"])
def test_getcrls_returns_only_the_named_crl(server, domain, onboarded, source):
    """One source named, one CRL back: the issuing CA's, by its distribution point (as the credential names
    it) or by issuer name; the root CA's by its issuer name."""
    if source == "distribution-point":
        statuses = [(crl_url_of(onboarded.certificate), None, None)]
    else:
        statuses = [(None, domain.issuing.subject, None)]
    _header, der = signed(crl_request(*statuses), onboarded.credential())
    genp = post_cmp(domain.url("getcrls"), der)
    verify_signature(genp, domain.issuing)
    values = genp_values(genp)
    assert list(values) == [ID_IT_CRLS]
    [crl] = _crls(values[ID_IT_CRLS])
    assert crl.issuer == domain.issuing.subject
    assert crl.is_signature_valid(domain.issuing.public_key())

    _header, der = unprotected(crl_request((None, domain.root.subject, None)))
    [crl] = _crls(genp_values(post_cmp(domain.url("getcrls"), der))[ID_IT_CRLS])
    assert crl.issuer == domain.root.subject
    assert crl.is_signature_valid(domain.root.public_key())


def test_getcrls_nothing_newer_leaves_the_value_absent(server, domain, onboarded):
    """A client whose CRL is current gets id-it-crls without infoValue; after a revocation it gets the new one."""
    current = fetch_crl(onboarded.certificate)
    url = crl_url_of(onboarded.certificate)
    _header, der = unprotected(crl_request((url, None, current.last_update_utc)))
    genp = post_cmp(domain.url("getcrls"), der)
    assert genp_values(genp) == {ID_IT_CRLS: None}

    time.sleep(1.1)  # thisUpdate counts whole seconds: the next CRL must be newer
    status, body = server.api(
        "POST",
        "/devices/%d/certificates/%s/revoke" % (onboarded.id, format(onboarded.certificate.serial_number, "x")),
        {"reason": "keyCompromise"},
    )
    assert status == 200, body
    _header, der = unprotected(crl_request((url, None, current.last_update_utc)))
    [crl] = _crls(genp_values(post_cmp(domain.url("getcrls"), der))[ID_IT_CRLS])
    assert crl.get_revoked_certificate_by_serial_number(onboarded.certificate.serial_number) is not None


@pytest.mark.parametrize("problem", ["no-value", "unknown-issuer", "unknown-distribution-point"])
def test_getcrls_refused(server, domain, onboarded, problem):
    """crlStatusList without infoValue, or naming a CRL this domain does not issue: badRequest."""
    if problem == "no-value":
        body = genm_body(ID_IT_CRL_STATUS_LIST)
    elif problem == "unknown-issuer":
        body = crl_request((None, onboarded.certificate.subject, None))
    else:
        body = crl_request(("http://127.0.0.1:1/crl/999999", None, None))
    _header, der = signed(body, onboarded.credential())
    rejected(domain.url("getcrls"), der, "badRequest")


@pytest.mark.parametrize("info_type", [ID_IT_CA_CERTS, ID_IT_CERT_REQ_TEMPLATE])
def test_genm_with_info_value_where_none_belongs(server, domain, onboarded, info_type):
    """genm caCerts / certReqTemplate carry no infoValue (RFC 9483 4.3.1, 4.3.3): one that does is badRequest."""
    before = snapshot(server, onboarded.id)
    body = genm_body(info_type, values={info_type: b"\x05\x00"})
    _header, der = signed(body, onboarded.credential())
    rejected(domain.url("getcacerts"), der, "badRequest")
    assert snapshot(server, onboarded.id) == before
