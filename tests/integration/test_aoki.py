# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""AOKI on a real server: the mTLS init with an independent upstream-style client, AOKI over CMP with the
real `openssl cmp`, DevOwnerID credentials through the API, and every refusal."""

from __future__ import annotations

import base64
import datetime
import json
import re
import ssl
import subprocess

import aoki_upstream_client as upstream
import pytest
from aoki_helpers import Aoki, unique
from cmp_helpers import DOMAIN_SUBJECT, make_ca, make_end_entity, new_key_file, run_cmp, write_key, write_pem
from conftest import BIN, http
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from trustpoint_core import aoki as aoki_format

ECDSA_SHA256 = "1.2.840.10045.4.3.2"


def init_request(server, cert=None, key=None, path="/aoki/init/"):
    """(status, headers, body) of GET path with a client certificate; the server is not verified."""
    context = ssl._create_unverified_context()  # noqa: S323 (AOKI trusts the server only after the answer)
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return http("GET", server.url + path, context=context)


def owner_signed(aoki, references, key_kind="ec", ca=True, critical_bc=True, key_usage=True):
    """(certificate PEM path, key path) of a DevOwnerID issued by the test set's owner CA."""
    from cmp_helpers import new_private_key

    owner_ca = x509.load_pem_x509_certificate((aoki.dir / "ownerid_ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((aoki.dir / "ownerid_ca_pk.pem").read_bytes(), None)
    key = new_private_key(key_kind)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unique("DevOwnerID"))]))
        .issuer_name(owner_ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=critical_bc)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(r) for r in references]), False)
    )
    if key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, ca, ca, False, False), critical=True
        )
    certificate = builder.sign(ca_key, hashes.SHA256())
    stem = unique("owner")
    cert_path = write_pem(aoki.dir / (stem + ".pem"), [certificate])
    key_path = write_key(aoki.dir / (stem + "_pk.pem"), key)
    return cert_path.name, key_path.name


# --- the mTLS variant --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/aoki/init", "/aoki/init/"])
def test_an_upstream_client_onboards_over_mtls_init_and_est(server, workdir, path):
    """The independent client (upstream's behaviour) gets a signed answer it accepts, then its credential
    over EST with the IDevID; the server creates the device in the registration's domain as an aoki device."""
    aoki = Aoki(server, workdir, devices=2)
    cert, key, serial = aoki.device(1)
    answer = upstream.aoki_init(server.url, str(cert), str(key), str(workdir / "ownerid_ca.pem"), path=path)
    assert answer["est_url"].startswith("https://127.0.0.1:%d/.well-known/est/%s/" % (server.port, aoki.domain))
    # The anchor it pins is the server's TLS CA (upstream devices read the first PEM only).
    assert answer["tls_truststore_pem"] == server.ca_file.read_bytes()

    device_key = ec.generate_private_key(ec.SECP256R1())
    issued = upstream.est_enroll(answer["est_url"], str(cert), str(key), answer["tls_truststore_pem"], device_key)
    certificate = next(c for c in issued if c.public_key() == device_key.public_key())
    (device,) = aoki.devices_on_server()
    assert device["onboarding_method"] == "aoki"
    assert device["serial_number"] == serial
    assert device["status"] == "onboarded"
    assert device["credential"]["serial_number"] == format(certificate.serial_number, "x")


def test_the_init_answer_is_upstreams_format_with_absolute_urls_and_the_whole_tls_chain(server, workdir):
    aoki = Aoki(server, workdir, devices=1)
    cert, key, _serial = aoki.device(1)
    status, headers, body = init_request(server, cert, key)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert headers["AOKI-Signature-Algorithm"] == ECDSA_SHA256
    document = json.loads(body)
    # Upstream's key order and json.dumps separators, byte for byte.
    assert body == json.dumps(document).encode()
    init = document["aoki-init"]
    assert list(init) == ["version", "enrollment-info", "owner-id-cert", "tls-truststore"]
    assert init["version"] == "1.0"
    base = "https://127.0.0.1:%d" % server.port
    assert init["enrollment-info"]["protocols"] == [
        {"protocol": "EST", "url": "%s/.well-known/est/%s/domain_credential/" % (base, aoki.domain)},
        {"protocol": "CMP", "url": base + "/.well-known/cmp/p/.aoki/initialization"},
    ]
    assert init["owner-id-cert"] == aoki.read("owner_id.pem")
    chain = x509.load_pem_x509_certificates(init["tls-truststore"].encode())
    served = x509.load_pem_x509_certificates((server.data_dir / "tls-cert.pem").read_bytes())
    assert chain == list(reversed(served)), "anchor first, the leaf the server presents last"
    owner = x509.load_pem_x509_certificate(init["owner-id-cert"].encode())
    owner.public_key().verify(base64.b64decode(headers["AOKI-Signature"]), body, ec.ECDSA(hashes.SHA256()))


def test_init_refusals_use_upstreams_status_codes_and_carry_no_signature(server, workdir):
    aoki = Aoki(server, workdir, devices=3, pattern="AOKI-000[12]", owner=False)
    cert, key, _serial = aoki.device(1)

    status, headers, body = init_request(server)
    assert status == 401 and "IDevID" in json.loads(body)["error"]
    assert "AOKI-Signature" not in headers

    # Admitted by no registration (the pattern leaves out device 3): 403.
    other_cert, other_key, _serial = aoki.device(3)
    status, headers, body = init_request(server, other_cert, other_key)
    assert status == 403 and "no DevID registration" in json.loads(body)["error"], body
    assert "AOKI-Signature" not in headers

    # Admitted, but no DevOwnerID names it: upstream's 422 and its text; nothing is registered.
    status, headers, body = init_request(server, cert, key)
    assert status == 422 and json.loads(body)["error"] == "No DevOwnerID present for this IDevID."
    assert "AOKI-Signature" not in headers
    assert aoki.devices_on_server() == []


def test_an_idevid_of_an_untrusted_manufacturer_gets_no_answer_at_all(server, workdir):
    """The TLS handshake itself refuses an IDevID that chains to no idevid truststore."""
    aoki = Aoki(server, workdir, devices=1)
    rogue = make_ca(unique("Rogue Manufacturer"))
    idevid = make_end_entity(rogue, "rogue", aoki.manifest["devices"][0]["serial_number"], ["urn:uuid:" + unique("x")])
    cert, key, _chain = idevid.write(workdir, "rogue")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        init_request(server, cert, key)
    assert aoki.devices_on_server() == []


def test_a_device_registered_for_another_method_is_refused(server, workdir):
    aoki = Aoki(server, workdir, devices=1)
    cert, key, serial = aoki.device(1)
    status, body = server.api(
        "POST",
        "/devices",
        {"name": unique("est"), "domain": aoki.domain, "onboarding_method": "est_idevid", "serial_number": serial},
    )
    assert status == 201, body
    status, _headers, body = init_request(server, cert, key)
    assert status == 403 and "onboards with est_idevid, not aoki" in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("key_kind", "algorithm"),
    [("rsa", "1.2.840.113549.1.1.11"), ("ec384", ECDSA_SHA256), ("ed25519", "1.3.101.112")],
)
def test_rsa_ecdsa_and_ed25519_owner_keys(server, workdir, key_kind, algorithm):
    """RSA and ECDSA (any curve) sign with SHA-256, as upstream devices assume; Ed25519 for new devices."""
    aoki = Aoki(server, workdir, devices=1, owner=False)
    cert, key, _serial = aoki.device(1)
    idevid = aoki.idevid(1)
    aoki.add_owner(*owner_signed(aoki, [aoki_format.cert_reference(idevid)], key_kind))
    status, headers, body = init_request(server, cert, key)
    assert status == 200, body
    assert headers["AOKI-Signature-Algorithm"] == algorithm
    owner = x509.load_pem_x509_certificate(json.loads(body)["aoki-init"]["owner-id-cert"].encode())
    aoki_format.verify_signature(owner, body, headers["AOKI-Signature"], algorithm)
    with pytest.raises(aoki_format.OwnerRefused, match="does not fit"):
        aoki_format.verify_signature(owner, body, headers["AOKI-Signature"], "1.2.840.113549.1.1.12")
    if key_kind != "ed25519":  # upstream devices know RSA and ECDSA
        upstream.aoki_init(server.url, str(cert), str(key), str(workdir / "ownerid_ca.pem"))


def test_the_owner_naming_the_idevid_wins_over_a_domain_wide_one(server, workdir):
    aoki = Aoki(server, workdir, devices=2, owner=False)
    issuing = x509.load_pem_x509_certificates(server.api("GET", "/domains/" + aoki.domain)[1]["ca_chain"].encode())[0]
    domain_wide = aoki.add_owner(*owner_signed(aoki, [aoki_format.ca_reference(issuing)]))
    own = aoki.add_owner(*owner_signed(aoki, [aoki_format.uri_references(aoki.idevid(1))[0]]))
    names = {}
    for n in (1, 2):
        cert, key, _serial = aoki.device(n)
        status, _headers, body = init_request(server, cert, key)
        assert status == 200, body
        owner_pem = json.loads(body)["aoki-init"]["owner-id-cert"]
        names[n] = owner_pem
    assert names[1] == server.api("GET", "/owner-credentials/" + own)[1]["certificate"]
    assert names[2] == server.api("GET", "/owner-credentials/" + domain_wide)[1]["certificate"]


# --- AOKI over CMP ----------------------------------------------------------------------------------


def aoki_cmp_args(server, aoki, n, workdir, *extra):
    cert, key, _serial = aoki.device(n)
    newkey = new_key_file(workdir / ("dc-%d.key" % n))
    args = ["-cmd", "ir", "-server", server.cmp_url + "/.well-known/cmp/p/.aoki/initialization"]
    args += ["-cert", cert, "-key", key, "-extracerts", workdir / "idevid_ca.pem"]
    args += ["-subject", DOMAIN_SUBJECT, "-newkey", newkey, "-certout", workdir / ("dc-%d.pem" % n)]
    args += ["-chainout", workdir / ("chain-%d.pem" % n), "-extracertsout", workdir / ("full-%d.pem" % n)]
    return [*args, *extra]


@pytest.mark.parametrize("confirm", ["implicit", "certConf"])
def test_openssl_cmp_onboards_with_aoki_over_cmp_trusting_only_the_owner_ca(server, workdir, confirm):
    """Upstream's command line: the ip is signed by the DevOwnerID, which OpenSSL verifies against the owner
    CA (-trusted); the DevOwnerID comes first in extraCerts; the device is created as an aoki device."""
    aoki = Aoki(server, workdir, devices=1)
    extra = ["-trusted", workdir / "ownerid_ca.pem"]
    if confirm == "implicit":
        extra.append("-implicit_confirm")
    returncode, output = run_cmp(*aoki_cmp_args(server, aoki, 1, workdir, *extra), cwd=workdir)
    assert returncode == 0, output
    full = x509.load_pem_x509_certificates((workdir / "full-1.pem").read_bytes())
    assert full[0] == x509.load_pem_x509_certificate((workdir / "owner_id.pem").read_bytes())
    (device,) = aoki.devices_on_server()
    assert device["onboarding_method"] == "aoki" and device["status"] == "onboarded"
    issued = x509.load_pem_x509_certificate((workdir / "dc-1.pem").read_bytes())
    assert device["credential"]["serial_number"] == format(issued.serial_number, "x")


def test_aoki_over_cmp_refuses_an_owner_the_device_does_not_trust(server, workdir):
    """A device whose owner anchor is another CA refuses the ip (OpenSSL cannot verify the protection)."""
    aoki = Aoki(server, workdir, devices=1)
    other = make_ca(unique("Another Owner"))
    write_pem(workdir / "other-owner.pem", [other.certificate])
    returncode, output = run_cmp(*aoki_cmp_args(server, aoki, 1, workdir, "-trusted", workdir / "other-owner.pem"))
    assert returncode != 0
    assert "no suitable sender cert" in output or "error validating protection" in output, output


def test_aoki_over_cmp_takes_signatures_only(server, workdir):
    aoki = Aoki(server, workdir, devices=1)
    device, secret = server.create_device(aoki.domain)
    newkey = new_key_file(workdir / "pbm.key")
    args = ["-cmd", "ir", "-server", server.cmp_url + "/.well-known/cmp/p/.aoki/initialization"]
    args += ["-ref", device["id"], "-secret", "pass:" + secret, "-subject", DOMAIN_SUBJECT, "-newkey", newkey]
    args += ["-certout", workdir / "pbm.pem", "-unprotected_errors"]
    returncode, output = run_cmp(*args)
    assert returncode != 0
    assert "AOKI only supported with signature-based protection" in output, output
    assert server.device(device["id"])["status"] == "pending"


def test_aoki_over_cmp_without_a_devownerid_issues_nothing(server, workdir):
    aoki = Aoki(server, workdir, devices=1, owner=False)
    args = aoki_cmp_args(server, aoki, 1, workdir, "-trusted", workdir / "ownerid_ca.pem", "-unprotected_errors")
    returncode, output = run_cmp(*args)
    assert returncode != 0
    assert "No DevOwnerID present for this IDevID" in output, output
    assert aoki.devices_on_server() == []


def test_a_domain_wide_devownerid_serves_aoki_over_cmp(server, workdir):
    """dev-owner:ca:<sha256 of the domain's issuing CA> (upstream's "domain-based" DevOwnerID), RSA key."""
    aoki = Aoki(server, workdir, devices=1, owner=False)
    issuing = x509.load_pem_x509_certificates(server.api("GET", "/domains/" + aoki.domain)[1]["ca_chain"].encode())[0]
    aoki.add_owner(*owner_signed(aoki, [aoki_format.ca_reference(issuing)], "rsa"))
    args = aoki_cmp_args(server, aoki, 1, workdir, "-trusted", workdir / "ownerid_ca.pem", "-implicit_confirm")
    returncode, output = run_cmp(*args)
    assert returncode == 0, output


# --- DevOwnerID credentials through the API -----------------------------------------------------------


def test_owner_credentials_api_checks_what_it_stores_and_never_returns_the_key(server, workdir):
    aoki = Aoki(server, workdir, devices=1, owner=False)
    ref = [aoki_format.cert_reference(aoki.idevid(1))]

    def post(cert, key, **more):
        payload = dict({"name": unique("o"), "certificate": aoki.read(cert), "private_key": aoki.read(key)}, **more)
        return server.api("POST", "/owner-credentials", payload)

    status, body = post(*owner_signed(aoki, ref, critical_bc=False))
    assert status == 400 and "must be critical" in body["error"]
    status, body = post(*owner_signed(aoki, ["urn:uuid:" + unique("x")]))
    assert status == 400 and "names no device" in body["error"]
    cert, _key = owner_signed(aoki, ref)
    status, body = post(cert, "idevid_0001_pk.pem")
    assert status == 400 and "not the key of the certificate" in body["error"]
    status, body = post(cert, "owner_id.pem")
    assert status == 400 and "private_key" in body["error"]

    cert, key = owner_signed(aoki, ref)
    status, created = post(cert, key, chain=aoki.read("ownerid_ca.pem"))
    assert status == 201, created
    assert created["references"] == ref
    assert "private_key" not in json.dumps(created) and "PRIVATE KEY" not in json.dumps(created)
    name = created["name"]
    assert (
        server.api(
            "POST", "/owner-credentials", dict(name=name, certificate=aoki.read(cert), private_key=aoki.read(key))
        )[0]
        == 409
    )
    # Encrypted at rest: the database holds no PEM key.
    database = (server.data_dir / "trustpoint.db").read_bytes()
    assert b"PRIVATE KEY" not in database

    new_cert, new_key = owner_signed(aoki, ref + aoki_format.uri_references(aoki.idevid(1)))
    status, replaced = server.api(
        "PUT", "/owner-credentials/" + name, {"certificate": aoki.read(new_cert), "private_key": aoki.read(new_key)}
    )
    assert status == 200, replaced
    assert len(replaced["references"]) == 2 and replaced["chain"] == ""
    assert server.api("DELETE", "/owner-credentials/" + name)[0] == 204
    assert server.api("GET", "/owner-credentials/" + name)[0] == 404


def test_aoki_status_in_the_api(server):
    status, body = server.api("GET", "/aoki")
    assert status == 200, body
    assert body["mdns"] == {"enabled": False}
    served = x509.load_pem_x509_certificates((server.data_dir / "tls-cert.pem").read_bytes())
    assert body["tls_truststore_fingerprints_sha256"][0] == served[-1].fingerprint(hashes.SHA256()).hex()


def test_gen_test_certs_writes_private_keys_0600_and_never_overwrites(workdir):
    from aoki_helpers import gen_test_certs

    manifest = gen_test_certs(workdir, 2, "--key-type", "ecdsa-p256")
    assert [d["serial_number"] for d in manifest["devices"]] == ["AOKI-0001", "AOKI-0002"]
    for path in workdir.glob("*_pk.pem"):
        assert path.stat().st_mode & 0o777 == 0o600
    owner = x509.load_pem_x509_certificate((workdir / "owner_id.pem").read_bytes())
    assert owner.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length is None
    idevid = x509.load_pem_x509_certificate((workdir / "idevid_0002.pem").read_bytes())
    assert aoki_format.cert_reference(idevid) in aoki_format.owner_references(owner)
    uris = idevid.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", uris.get_values_for_type(x509.UniformResourceIdentifier)[0])
    result = subprocess.run(
        [str(BIN / "trustpoint-server"), "aoki", "gen-test-certs", str(workdir), "--devices", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "already holds a test set" in result.stderr
    assert "Traceback" not in result.stderr
