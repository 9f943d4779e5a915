# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The truststore, devid_registration and device_info modules as Ansible runs them, against a real server.

Each case follows the collection convention: check mode, real run, then both again for idempotency.
"""

from __future__ import annotations

import json
import re
import uuid

import test_modules
from conftest import openssl
from test_modules import run_tasks

PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.S)


# The same connection options (server_url, api_token, TLS trust) as the other module tests.
connection = test_modules.connection


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def ca_certificates(server):
    """(issuing CA PEM, root CA PEM, {fingerprint: subject}) of a new domain, as the server describes them."""
    domain = server.create_domain()
    issuing, root = PEM_BLOCK.findall(domain["ca_chain"])
    known = {domain[ca]["fingerprint_sha256"]: domain[ca]["subject"] for ca in ("issuing_ca", "root_ca")}
    return issuing, root, known


def listing(known, *fingerprints):
    return [{"subject": known[f], "fingerprint_sha256": f} for f in fingerprints]


def truststore_task(connection, **args):
    return {"name": "truststore", "trustpoint.pki.truststore": dict(connection, **args)}


def registration_task(connection, **args):
    return {"name": "registration", "trustpoint.pki.devid_registration": dict(connection, **args)}


def info_task(connection, **args):
    return {"name": "info", "trustpoint.pki.device_info": dict(connection, **args)}


def create_truststore(server, usage="idevid"):
    _issuing, root, _known = ca_certificates(server)
    name = unique("ts")
    status, body = server.api("POST", "/truststores", {"name": name, "usage": usage, "certificates": root})
    assert status == 201, body
    return name


# --- truststore ------------------------------------------------------------------------------------


def test_truststore_module_lifecycle(server, workdir, connection):
    """Create, compare by fingerprint in order, update certificates and usage with a diff, delete."""
    issuing, root, known = ca_certificates(server)
    issuing_fp, root_fp = known
    name = unique("ts")
    task = truststore_task(connection, name=name, usage="idevid", certificates=root)

    predicted = run_tasks(workdir, [task], check=True, diff=True)["truststore"]
    assert predicted["changed"] and predicted["diff"]["before"] == {}
    after = predicted["diff"]["after"]
    assert after["name"] == name and after["usage"] == "idevid" and len(after["certificates"]) == 1
    assert after["certificates"] == listing(known, root_fp)
    assert server.api("GET", "/truststores/" + name)[0] == 404, "check mode must not create the truststore"

    created = run_tasks(workdir, [task], diff=True)["truststore"]
    assert created["changed"]
    assert created["truststore"]["fingerprints_sha256"] == [root_fp]
    assert created["truststore"]["usage"] == "idevid" and created["truststore"]["created_at"]
    assert server.api("GET", "/truststores/" + name)[1]["fingerprints_sha256"] == [root_fp]

    assert not run_tasks(workdir, [task], check=True)["truststore"]["changed"]
    assert not run_tasks(workdir, [task])["truststore"]["changed"]

    # The same certificate in another PEM layout is the same truststore.
    reformatted = "Root CA of the test domain\r\n" + root.replace("\n", "\r\n") + "\r\n\r\n"
    same = truststore_task(connection, name=name, usage="idevid", certificates=reformatted)
    assert not run_tasks(workdir, [same], check=True)["truststore"]["changed"]
    assert not run_tasks(workdir, [same])["truststore"]["changed"]

    # Another certificate list is a PATCH; the diff lists subjects and fingerprints, never PEM.
    two = truststore_task(connection, name=name, usage="idevid", certificates=root + issuing)
    predicted = run_tasks(workdir, [two], check=True, diff=True)["truststore"]
    assert predicted["changed"]
    assert predicted["diff"]["before"]["certificates"] == listing(known, root_fp)
    assert predicted["diff"]["after"]["certificates"] == listing(known, root_fp, issuing_fp)
    assert "BEGIN" not in json.dumps(predicted["diff"])
    assert server.api("GET", "/truststores/" + name)[1]["fingerprints_sha256"] == [root_fp]
    updated = run_tasks(workdir, [two], diff=True)["truststore"]
    assert updated["changed"] and updated["truststore"]["fingerprints_sha256"] == [root_fp, issuing_fp]
    assert updated["truststore"]["created_at"] == created["truststore"]["created_at"], "updated in place"
    assert not run_tasks(workdir, [two], check=True)["truststore"]["changed"]
    assert not run_tasks(workdir, [two])["truststore"]["changed"]

    # The order counts.
    swapped = truststore_task(connection, name=name, usage="idevid", certificates=issuing + root)
    assert run_tasks(workdir, [swapped])["truststore"]["truststore"]["fingerprints_sha256"] == [issuing_fp, root_fp]
    assert not run_tasks(workdir, [swapped])["truststore"]["changed"]

    # A usage change is a PATCH too.
    tls = truststore_task(connection, name=name, usage="tls", certificates=issuing + root)
    predicted = run_tasks(workdir, [tls], check=True, diff=True)["truststore"]
    assert predicted["changed"]
    assert (predicted["diff"]["before"]["usage"], predicted["diff"]["after"]["usage"]) == ("idevid", "tls")
    assert server.api("GET", "/truststores/" + name)[1]["usage"] == "idevid"
    assert run_tasks(workdir, [tls])["truststore"]["truststore"]["usage"] == "tls"
    assert not run_tasks(workdir, [tls], check=True)["truststore"]["changed"]
    assert not run_tasks(workdir, [tls])["truststore"]["changed"]

    absent = truststore_task(connection, name=name, state="absent")
    predicted = run_tasks(workdir, [absent], check=True, diff=True)["truststore"]
    assert predicted["changed"] and predicted["diff"]["after"] == {}
    assert server.api("GET", "/truststores/" + name)[0] == 200, "check mode must not delete"
    assert run_tasks(workdir, [absent])["truststore"]["changed"]
    assert server.api("GET", "/truststores/" + name)[0] == 404
    assert not run_tasks(workdir, [absent], check=True)["truststore"]["changed"]
    assert not run_tasks(workdir, [absent])["truststore"]["changed"]


def test_truststore_module_errors(server, workdir, connection):
    """Unreadable certificates, no certificates and a server refusal are failed tasks with clear messages."""
    name = unique("ts")
    garbage = truststore_task(
        connection,
        name=name,
        usage="idevid",
        certificates="-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    assert "not a readable certificate" in run_tasks(workdir, [garbage], expect_failure=True)["truststore"]["msg"]

    key = openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256").stdout
    only_key = truststore_task(connection, name=name, usage="idevid", certificates=key)
    failed = run_tasks(workdir, [only_key], expect_failure=True)["truststore"]
    assert "at least one PEM certificate" in failed["msg"]
    assert "PRIVATE KEY" not in failed["msg"]

    words = truststore_task(connection, name=name, usage="idevid", certificates="hello")
    failed = run_tasks(workdir, [words], expect_failure=True)["truststore"]
    assert "at least one PEM certificate" in failed["msg"] and "asn1" not in failed["msg"].lower(), failed["msg"]

    _issuing, root, _known = ca_certificates(server)
    bad_name = truststore_task(connection, name="-bad name", usage="idevid", certificates=root)
    failed = run_tasks(workdir, [bad_name], expect_failure=True)["truststore"]
    assert "HTTP 400" in failed["msg"] and "truststore name must be" in failed["msg"]

    missing = truststore_task(connection, name=name)
    failed = run_tasks(workdir, [missing], expect_failure=True)["truststore"]
    assert "usage" in failed["msg"] and "certificates" in failed["msg"]
    assert server.api("GET", "/truststores/" + name)[0] == 404


# --- devid_registration ----------------------------------------------------------------------------


def test_devid_registration_module_lifecycle(server, workdir, connection):
    """Create, patch each field with a diff, leave unset fields alone, delete."""
    domain = server.create_domain()["name"]
    truststore = create_truststore(server)
    name = unique("reg")
    args = dict(name=name, domain=domain, truststore=truststore, pattern="ACME-[0-9]{8}")
    task = registration_task(connection, **args)

    predicted = run_tasks(workdir, [task], check=True, diff=True)["registration"]
    assert predicted["changed"] and predicted["diff"]["before"] == {}
    assert predicted["diff"]["after"] == args
    assert server.api("GET", "/devid-registrations/" + name)[0] == 404, "check mode must not create"

    created = run_tasks(workdir, [task])["registration"]
    assert created["changed"]
    stored = created["registration"]
    assert stored == {**args, "auto_create_devices": False, "pattern_error": None, "created_at": stored["created_at"]}

    assert not run_tasks(workdir, [task], check=True)["registration"]["changed"]
    assert not run_tasks(workdir, [task])["registration"]["changed"]
    # Options left out keep their values.
    assert not run_tasks(workdir, [registration_task(connection, name=name)])["registration"]["changed"]

    # Pattern and auto-creation: one PATCH, with the diff.
    changed = {**args, "pattern": "ACME-.*", "auto_create_devices": True}
    patch = registration_task(connection, **changed)
    predicted = run_tasks(workdir, [patch], check=True, diff=True)["registration"]
    assert predicted["changed"]
    assert predicted["diff"]["before"] == {**args, "auto_create_devices": False}
    assert predicted["diff"]["after"] == changed
    assert server.api("GET", "/devid-registrations/" + name)[1]["pattern"] == "ACME-[0-9]{8}"
    patched = run_tasks(workdir, [patch], diff=True)["registration"]
    assert patched["changed"] and patched["registration"]["pattern"] == "ACME-.*"
    assert patched["registration"]["auto_create_devices"] is True
    assert not run_tasks(workdir, [patch], check=True)["registration"]["changed"]
    assert not run_tasks(workdir, [patch])["registration"]["changed"]

    # Another domain and another truststore are PATCHes too.
    other_domain = server.create_domain()["name"]
    other_truststore = create_truststore(server)
    moved = {**changed, "domain": other_domain, "truststore": other_truststore}
    move = registration_task(connection, **moved)
    predicted = run_tasks(workdir, [move], check=True, diff=True)["registration"]
    assert predicted["changed"] and predicted["diff"]["after"] == moved
    result = run_tasks(workdir, [move])["registration"]
    assert result["changed"]
    assert (result["registration"]["domain"], result["registration"]["truststore"]) == (other_domain, other_truststore)
    assert result["registration"]["created_at"] == created["registration"]["created_at"], "updated in place"
    assert not run_tasks(workdir, [move], check=True)["registration"]["changed"]
    assert not run_tasks(workdir, [move])["registration"]["changed"]

    absent = registration_task(connection, name=name, state="absent")
    predicted = run_tasks(workdir, [absent], check=True, diff=True)["registration"]
    assert predicted["changed"] and predicted["diff"] == {"before": moved, "after": {}}
    assert server.api("GET", "/devid-registrations/" + name)[0] == 200, "check mode must not delete"
    assert run_tasks(workdir, [absent])["registration"]["changed"]
    assert server.api("GET", "/devid-registrations/" + name)[0] == 404
    assert not run_tasks(workdir, [absent], check=True)["registration"]["changed"]
    assert not run_tasks(workdir, [absent])["registration"]["changed"]


def test_devid_registration_module_server_errors(server, workdir, connection):
    """What the server refuses fails the task with the server's message; nothing is created."""
    domain = server.create_domain()["name"]
    truststore = create_truststore(server)
    tls_truststore = create_truststore(server, usage="tls")
    name = unique("reg")
    base = dict(name=name, domain=domain, truststore=truststore, pattern="SN-.*")

    cases = [
        ({**base, "domain": "no-such-domain"}, "HTTP 404: domain 'no-such-domain' does not exist"),
        ({**base, "truststore": "no-such-truststore"}, "truststore 'no-such-truststore' does not exist"),
        ({**base, "truststore": tls_truststore}, "has usage tls"),
        ({**base, "pattern": "SN-(["}, "pattern is not accepted: missing ]"),
        (dict(name=name, domain=domain), "field(s) required: truststore, pattern"),
    ]
    for args, message in cases:
        failed = run_tasks(workdir, [registration_task(connection, **args)], expect_failure=True)["registration"]
        assert message in failed["msg"], failed["msg"]
        assert "POST /devid-registrations" in failed["msg"]
    assert server.api("GET", "/devid-registrations/" + name)[0] == 404

    # A PATCH the server refuses leaves the registration as it was.
    run_tasks(workdir, [registration_task(connection, **base)])
    failed = run_tasks(workdir, [registration_task(connection, name=name, domain="gone")], expect_failure=True)
    assert "domain 'gone' does not exist" in failed["registration"]["msg"]
    assert server.api("GET", "/devid-registrations/" + name)[1]["domain"] == domain


def test_truststore_in_use_cannot_be_deleted(server, workdir, connection):
    """Deleting a truststore a registration uses fails with the server's 409 message; it works once unused."""
    domain = server.create_domain()["name"]
    truststore = create_truststore(server)
    name = unique("reg")
    run_tasks(workdir, [registration_task(connection, name=name, domain=domain, truststore=truststore, pattern=".*")])

    absent = truststore_task(connection, name=truststore, state="absent")
    assert run_tasks(workdir, [absent], check=True)["truststore"]["changed"], "check mode predicts the deletion"
    failed = run_tasks(workdir, [absent], expect_failure=True)["truststore"]
    assert "HTTP 409" in failed["msg"]
    assert "truststore %r is used by DevID registration(s) %s" % (truststore, name) in failed["msg"]
    assert server.api("GET", "/truststores/" + truststore)[0] == 200

    run_tasks(workdir, [registration_task(connection, name=name, state="absent")])
    assert run_tasks(workdir, [absent])["truststore"]["changed"]
    assert server.api("GET", "/truststores/" + truststore)[0] == 404


# --- device_info -----------------------------------------------------------------------------------


def onboard(server, domain, device, secret, workdir):
    """Onboard a device with the real `openssl cmp` client (ir, PBM with its shared secret)."""
    key = workdir / ("%s.key" % device["name"])
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    openssl(
        "cmp",
        "-cmd",
        "ir",
        "-server",
        "%s/.well-known/cmp/p/%s/initialization" % (server.cmp_url, domain),
        "-ref",
        str(device["id"]),
        "-secret",
        "pass:" + secret,
        "-subject",
        "/CN=Trustpoint Domain Credential",
        "-newkey",
        str(key),
        "-certout",
        str(workdir / ("%s.pem" % device["name"])),
        cwd=str(workdir),
    )
    record = server.device(device["id"])
    assert record["status"] == "onboarded", record
    return record


def test_device_info_module(server, workdir, connection):
    """Filters by name, domain and status; computes the credential's days to expiry; changes nothing."""
    domain = server.create_domain(validity_days=30)["name"]
    pending, _secret = server.create_device(domain)
    onboarded, secret = server.create_device(domain)
    record = onboard(server, domain, onboarded, secret, workdir)
    other_domain = server.create_domain()["name"]
    elsewhere, _other_secret = server.create_device(other_domain)

    for check in (True, False):
        result = run_tasks(workdir, [info_task(connection, domain=domain)], check=check)["info"]
        assert not result["changed"]
        assert [d["name"] for d in result["devices"]] == [pending["name"], onboarded["name"]]
        by_name = {d["name"]: d for d in result["devices"]}
        assert by_name[pending["name"]]["status"] == "pending"
        assert by_name[pending["name"]]["credential"] is None
        assert by_name[pending["name"]]["credential_expires_in_days"] is None
        device = by_name[onboarded["name"]]
        assert device["status"] == "onboarded"
        assert device["credential"]["serial_number"] == record["credential"]["serial_number"]
        assert isinstance(device["credential_expires_in_days"], float)
        assert 29.9 < device["credential_expires_in_days"] <= 30.01

    def names(**filters):
        devices = run_tasks(workdir, [info_task(connection, **filters)])["info"]["devices"]
        return [d["name"] for d in devices]

    assert names(name=onboarded["name"]) == [onboarded["name"]]
    assert names(name=elsewhere["name"]) == [elsewhere["name"]]
    assert names(name=elsewhere["name"], domain=domain) == []
    assert names(domain=domain, status="onboarded") == [onboarded["name"]]
    assert names(domain=domain, status="pending") == [pending["name"]]
    assert names(name=pending["name"], status="onboarded") == []
    assert names(domain=other_domain) == [elsewhere["name"]]
    assert names(name=unique("nobody")) == []
    every = names()
    assert {pending["name"], onboarded["name"], elsewhere["name"]} <= set(every)
    assert onboarded["name"] in names(status="onboarded") and pending["name"] not in names(status="onboarded")


def test_device_info_module_errors(server, workdir, connection):
    """An unknown domain or a bad status is a failed task with a clear message."""
    failed = run_tasks(workdir, [info_task(connection, domain="no-such-domain")], expect_failure=True)["info"]
    assert "domain 'no-such-domain' does not exist" in failed["msg"]
    failed = run_tasks(workdir, [info_task(connection, status="revoked")], expect_failure=True)["info"]
    assert "status" in failed["msg"] and "pending, onboarded" in failed["msg"]
