# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""services/names.py: which names a device may have in its certificates (issue 11, "Names")."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from trustpoint_core.profiles import get_profile
from trustpoint_server.errors import ApiError
from trustpoint_server.services import names
from trustpoint_server.storage.models import Base, Device, Domain


@pytest.fixture
def db():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session


@pytest.fixture
def plant(db):
    domain = Domain(name="plant1", key_type="ecdsa-p256", validity_days=365)
    db.add(domain)
    plc = Device(name="plc7", domain=domain, onboarding_method="cmp_shared_secret")
    other = Device(name="hmi2.plant1.example", domain=domain, onboarding_method="cmp_shared_secret")
    db.add_all([plc, other])
    db.flush()
    return domain, plc, other


def subject(*pairs):
    oids = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME}
    return x509.Name([x509.NameAttribute(oids[kind], value) for kind, value in pairs])


def decide(db, device, domain, profile, requested_subject, sans=()):
    return names.decide(db, device, domain, get_profile(profile), requested_subject, list(sans))


def test_a_device_gets_its_own_name_by_default(db, plant):
    domain, plc, _other = plant
    issued = decide(db, plc, domain, "tls_client", subject(("CN", "plc7")), [x509.DNSName("plc7"),
                    x509.UniformResourceIdentifier("urn:trustpoint:device:plc7")])  # fmt: skip
    assert issued.subject == subject(("CN", "plc7"))
    assert [n.value for n in issued.sans] == ["plc7", "urn:trustpoint:device:plc7"]
    assert not issued.modified
    # No subject asked for: the device's name, which is no change.
    assert not decide(db, plc, domain, "tls_client", None).modified


@pytest.mark.parametrize(
    ("requested", "sans", "shown"),
    [
        (("CN", "hmi2.plant1.example"), (), "CN:hmi2.plant1.example"),  # another device's name
        (("CN", "plc7"), (x509.DNSName("hmi2.plant1.example"),), "DNS:hmi2.plant1.example"),
        (("CN", "plant1 Issuing CA"), (), "CN:plant1 Issuing CA"),  # the issuing CA's own name
        (("CN", "plc7"), (x509.IPAddress(ipaddress.ip_address("10.0.5.11")),), "IP:10.0.5.11"),
        (("CN", "plc7"), (x509.UniformResourceIdentifier("urn:other"),), "URI:urn:other"),
    ],
)
def test_names_outside_the_allow_lists_are_refused(db, plant, requested, sans, shown):
    domain, plc, _other = plant
    with pytest.raises(names.NameRefused) as refused:
        decide(db, plc, domain, "tls_client", subject(requested), sans)
    assert refused.value.not_allowed
    assert shown in refused.value.message and "allowed_names" in refused.value.message


@pytest.mark.parametrize("bad", ["plc\x00.example", "plc7\nCN=admin", "plc\u202e7", "plc\x1b[31m"])
def test_control_characters_are_refused_wherever_they_are(db, plant, bad):
    domain, plc, _other = plant
    plc.allowed_names = ["CN:*"]  # even where an entry would allow anything
    cases = [(subject(("CN", bad)), ()), (subject(("CN", "plc7"), ("O", bad)), ())]
    if bad.isascii():  # cryptography takes only ASCII in these
        cases += [
            (subject(("CN", "plc7")), (x509.UniformResourceIdentifier("urn:" + bad),)),
            (subject(("CN", "plc7")), (x509.RFC822Name(bad + "@plant1.example"),)),
        ]
    for requested, sans in cases:
        with pytest.raises(names.NameRefused, match="control characters") as refused:
            decide(db, plc, domain, "tls_client", requested, sans)
        assert not refused.value.not_allowed
        assert "\n" not in refused.value.message and "\x00" not in refused.value.message
    # Domain credentials too: the subject is replaced, but a request with such text is refused outright.
    with pytest.raises(names.NameRefused, match="control characters"):
        decide(db, plc, domain, "domain_credential", subject(("CN", bad)))


def test_wildcard_certificates_are_never_issued(db, plant):
    domain, plc, _other = plant
    domain.allowed_names = ["DNS:*.plant1.example"]
    with pytest.raises(names.NameRefused, match="wildcard"):
        decide(db, plc, domain, "tls_server", subject(("CN", "plc7")), [x509.DNSName("*.plant1.example")])


def test_allow_lists_of_the_device_and_the_domain(db, plant):
    domain, plc, _other = plant
    sans = [x509.DNSName("web.plant1.example"), x509.IPAddress(ipaddress.ip_address("10.0.5.11"))]
    with pytest.raises(names.NameRefused):
        decide(db, plc, domain, "tls_server", subject(("CN", "web.plant1.example")), sans)
    domain.allowed_names = ["DNS:*.plant1.example"]
    plc.allowed_names = ["IP:10.0.5.0/24"]
    issued = decide(db, plc, domain, "tls_server", subject(("CN", "web.plant1.example")), sans)
    assert [str(n.value) for n in issued.sans] == ["web.plant1.example", "10.0.5.11"]
    # *. stands for one label: neither deeper names nor the suffix itself.
    for name in ("a.b.plant1.example", "plant1.example"):
        with pytest.raises(names.NameRefused):
            decide(db, plc, domain, "tls_server", subject(("CN", "plc7")), [x509.DNSName(name)])


def test_a_domain_entry_never_gives_away_another_devices_name(db, plant):
    domain, plc, other = plant
    domain.allowed_names = ["DNS:*.plant1.example"]
    with pytest.raises(names.NameRefused, match=r"hmi2\.plant1\.example"):
        decide(db, plc, domain, "tls_server", subject(("CN", "plc7")), [x509.DNSName("hmi2.plant1.example")])
    with pytest.raises(names.NameRefused, match=r"HMI2\.plant1\.example"):
        decide(db, plc, domain, "tls_server", subject(("CN", "HMI2.plant1.example")), [x509.DNSName("plc7")])
    # The operator may still give it to this device explicitly.
    plc.allowed_names = ["DNS:hmi2.plant1.example"]
    decide(db, plc, domain, "tls_server", subject(("CN", "plc7")), [x509.DNSName("hmi2.plant1.example")])
    # And the device itself has its own name.
    own = "hmi2.plant1.example"
    decide(db, other, domain, "tls_server", subject(("CN", own)), [x509.DNSName(own)])


def test_the_device_placeholder(db, plant):
    domain, plc, other = plant
    domain.allowed_names = ["DNS:{device}.plant1.example", "URI:urn:plant1:{device}"]
    decide(db, plc, domain, "tls_client", subject(("CN", "plc7.plant1.example")), [
           x509.DNSName("plc7.plant1.example"), x509.UniformResourceIdentifier("urn:plant1:plc7")])  # fmt: skip
    with pytest.raises(names.NameRefused):
        decide(db, plc, domain, "tls_server", subject(("CN", "plc7")), [x509.DNSName("plc8.plant1.example")])
    # The entry follows each device.
    decide(db, other, domain, "tls_server", subject(("CN", "hmi2.plant1.example")),
           [x509.DNSName("hmi2.plant1.example.plant1.example")])  # fmt: skip


def test_changes_are_reported_as_modifications(db, plant):
    domain, plc, _other = plant
    issued = decide(db, plc, domain, "tls_client", subject(("CN", "plc7"), ("O", "Trustpoint"), ("OU", "admins")))
    assert issued.subject == subject(("CN", "plc7")) and issued.modified
    assert "O, OU" in issued.changes[0]
    # tls_server needs a SAN: the host-name CN becomes one.
    issued = decide(db, plc, domain, "tls_server", subject(("CN", "plc7")))
    assert [n.value for n in issued.sans] == ["plc7"] and issued.modified
    # A domain credential is named after the device whatever was asked.
    issued = decide(db, plc, domain, "domain_credential", subject(("CN", "Trustpoint Domain Credential")))
    assert issued.subject == subject(("CN", "plc7")) and issued.sans == [] and issued.modified
    assert not decide(db, plc, domain, "domain_credential", subject(("CN", "plc7"))).modified


def test_profile_rules_still_apply(db, plant):
    domain, plc, _other = plant
    plc.allowed_names = ["URI:urn:plant1:*"]
    with pytest.raises(names.NameRefused, match="does not issue subject alternative names of type"):
        decide(db, plc, domain, "tls_server", subject(("CN", "plc7")), [x509.UniformResourceIdentifier("urn:plant1:x")])
    plc_no_host = Device(name="plc:7", domain_id=domain.id, onboarding_method="cmp_shared_secret")
    with pytest.raises(names.NameRefused, match="needs a subject alternative name"):
        decide(db, plc_no_host, domain, "tls_server", subject(("CN", "plc:7")))
    # OPC UA needs the application's URI: the server has none to put in its place.
    with pytest.raises(names.NameRefused, match="needs a subject alternative name of type UniformResourceIdentifier"):
        decide(db, plc, domain, "opc_ua", subject(("CN", "plc7")), [x509.DNSName("plc7")])
    issued = decide(db, plc, domain, "opc_ua", None, [x509.UniformResourceIdentifier("urn:plant1:x")])
    assert [n.value for n in issued.sans] == ["urn:plant1:x"]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("plc7.example", "must start with one of"),
        ("FOO:bar", "must start with one of"),
        ("DNS:", "must be 1-255"),
        ("DNS:bad_name.example", "not a host name"),
        ("DNS:a.*.example", "not a host name"),
        ("IP:10.0.0.1/24", "not an IP address or network"),
        ("URI:no-scheme", "not a URI"),
        ("URI:urn:*:x", "not a URI"),
        ("EMAIL:nobody", "not an email address"),
        ("CN:a*b", "* only as a leading"),
        ("CN:ok\nCN:injected", "control characters"),
    ],
)
def test_allow_list_entries_are_checked(entry, problem):
    with pytest.raises(ApiError) as refused:
        names.check_allowed_names([entry])
    assert refused.value.status == 400 and problem in refused.value.message


def test_allow_lists_are_normalised():
    assert names.check_allowed_names(["dns:Web.Plant1.Example", "DNS:web.plant1.example", "ip:10.0.0.0/8"]) == [
        "DNS:web.plant1.example",
        "IP:10.0.0.0/8",
    ]
    assert names.check_allowed_names(["DNS:{device}.plant1.example"]) == ["DNS:{device}.plant1.example"]
    with pytest.raises(ApiError, match="a list of strings"):
        names.check_allowed_names("DNS:x")
    with pytest.raises(ApiError, match="at most 100"):
        names.check_allowed_names(["DNS:d%d.example" % i for i in range(101)])
