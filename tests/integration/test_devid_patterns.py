# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""DevID registration patterns (issue 11): matched in linear time, and only on IDevIDs that verify.

Patterns are RE2 expressions: nested quantifiers cannot freeze a worker (Python's backtracking engine
took forever on `(a|aa)+$` against 64 characters), backreferences and lookaround are refused when a
registration is created or changed, and a stored pattern an earlier version accepted admits nothing until
the operator changes it.
"""

from __future__ import annotations

import time

import cmp_helpers
import pytest
from cmp_helpers import (
    admit_manufacturer,
    assert_cmp_ok,
    assert_rejected,
    create_truststore,
    execute,
    idevid_args,
    make_ca,
    make_end_entity,
    new_key_file,
    run_cmp,
    unique,
)

domain = cmp_helpers.domain


def idevid_ir(domain, idevid, workdir):
    """openssl cmp ir signed with the IDevID (its chain sent along); answers within 30 s or fails."""
    return run_cmp(
        "-cmd", "ir", "-server", domain.url("initialization"), *idevid_args(idevid, workdir, domain),
        "-subject", "/CN=Trustpoint Domain Credential", "-newkey", new_key_file(workdir / "new.key"),
        "-certout", workdir / "out.pem", "-msg_timeout", "30", "-total_timeout", "30", cwd=workdir,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(SN-\d+)-\1", "invalid escape sequence"),  # a backreference
        (r"(?=SN-)SN-\d+", "invalid perl operator"),  # lookahead
        (r"(?<!X)SN-\d+", "invalid perl operator"),  # lookbehind
        ("SN-[0-9", "missing ]"),
    ],
)
def test_patterns_that_can_backtrack_are_refused_at_creation(server, domain, pattern, reason):
    truststore = create_truststore(server, [make_ca(unique("Manufacturer")).certificate])
    payload = {"name": unique("reg"), "domain": domain.name, "truststore": truststore, "pattern": pattern}
    status, body = server.api("POST", "/devid-registrations", payload)
    assert status == 400, body
    assert "pattern is not accepted" in body["error"] and reason in body["error"], body
    assert "RE2 syntax" in body["error"]
    status, created = server.api("POST", "/devid-registrations", dict(payload, pattern=r"SN-\d+"))
    assert status == 201 and created["pattern_error"] is None, created
    status, body = server.api("PATCH", "/devid-registrations/" + payload["name"], {"pattern": pattern})
    assert status == 400, body


def test_nested_quantifiers_cannot_freeze_a_worker(server, domain, workdir):
    """`(a|aa)+$` against a 64-character serial number that almost matches: Python's engine would try
    ~2^64 ways; RE2 answers at once (notAuthorized: no match). The same IDevID with a matching serial
    number onboards."""
    manufacturer = admit_manufacturer(server, domain, "(a|aa)+$", auto_create=True)
    idevid = make_end_entity(manufacturer, "sensor", "a" * 63 + "b")
    started = time.monotonic()
    returncode, output = idevid_ir(domain, idevid, workdir)
    assert_rejected(returncode, output, "notAuthorized")
    assert "no DevID registration of domain %s matches the IDevID" % domain.name in output
    assert time.monotonic() - started < 25
    assert_cmp_ok(*idevid_ir(domain, make_end_entity(manufacturer, "sensor", "a" * 64), workdir))


def test_a_pattern_never_sees_an_unverified_certificate(server, domain, workdir):
    """An IDevID from a manufacturer the registration does not trust, with an identifier its pattern
    matches: refused for its chain, before any pattern runs (the message says so)."""
    admit_manufacturer(server, domain, "SN-.*", auto_create=True)
    stranger = make_ca(unique("Stranger"))
    returncode, output = idevid_ir(domain, make_end_entity(stranger, "sensor", "SN-1"), workdir)
    assert_rejected(returncode, output, "notAuthorized")
    assert "does not verify against the truststore of any DevID registration" in output, output


def test_a_stored_pattern_this_version_cannot_use(server, domain, workdir):
    """A registration stored with a lookahead (as an earlier version allowed): the API shows why it admits
    nothing, the IDevIDs it would admit are refused with a logged warning, and changing the pattern through
    the API makes it work."""
    manufacturer = admit_manufacturer(server, domain, r"VX-\d+", auto_create=True)
    status, registrations = server.api("GET", "/devid-registrations")
    name = next(r["name"] for r in registrations if r["domain"] == domain.name)
    execute(server, "UPDATE devid_registration SET pattern = ? WHERE name = ?", (r"(?=VX-)VX-\d+", name))
    status, registration = server.api("GET", "/devid-registrations/" + name)
    assert status == 200 and "invalid perl operator" in registration["pattern_error"], registration

    idevid = make_end_entity(manufacturer, "sensor", "VX-123")
    assert_rejected(*idevid_ir(domain, idevid, workdir), "notAuthorized")
    assert "DevID registration %s admits nothing until its pattern is changed" % name in server.log()

    status, registration = server.api("PATCH", "/devid-registrations/" + name, {"pattern": r"VX-\d+"})
    assert status == 200 and registration["pattern_error"] is None, registration
    assert_cmp_ok(*idevid_ir(domain, idevid, workdir))


def test_binding_a_device_uses_the_same_matcher(server, domain):
    """Binding a device to a registration matches its serial number with RE2 too: a stored pattern this version
    cannot use matches nothing there either (Python's re would have accepted the lookahead)."""
    admit_manufacturer(server, domain, r"VB-\d+")
    status, registrations = server.api("GET", "/devid-registrations")
    name = next(r["name"] for r in registrations if r["domain"] == domain.name)
    execute(server, "UPDATE devid_registration SET pattern = ? WHERE name = ?", (r"(?=VB-)VB-\d+", name))
    status, created = server.api(
        "POST",
        "/devices",
        {"name": "bind-vb-7", "domain": domain.name, "onboarding_method": "cmp_idevid", "serial_number": "VB-7"},
    )
    assert status == 201, created
    status, answer = server.api("PATCH", "/devices/%d" % created["device"]["id"], {"devid_registration": name})
    assert status == 400 and "does not match serial number" in answer["error"], answer
