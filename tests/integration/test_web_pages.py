# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The web pages in headless Chromium, as an operator and a person at a device use them.

Sign in, create a domain and a device, open its help page and run the openssl command it shows against the
server; order a credential, download it on a second browser with the one-time password as a PKCS#12 that
`openssl pkcs12` opens with the chosen password; a wrong OTP three times voids it; a used download token is
refused; a form posted without its CSRF token is refused. Every page is screenshot at 1280 and 390 px wide
(tests/output/web/) and checked for labelled fields and horizontal scrolling.
"""

from __future__ import annotations

import re
import subprocess
import uuid

import pytest
from browser_helpers import Browser
from conftest import openssl

pytestmark = pytest.mark.browser


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


@pytest.fixture(scope="module")
def operator_browser(server):
    browser = Browser(server)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def signed_in(server, operator_browser):
    browser = operator_browser
    browser.get("/ui/devices")
    assert browser.path.startswith("/ui/sign-in"), browser.path
    password = (server.data_dir / "operator-password").read_text().strip()
    browser.fill({"Name": "admin", "Password": password + "x"})
    browser.submit("Sign in")
    assert "wrong name or password" in browser.alert()
    browser.fill({"Name": "admin", "Password": password})
    browser.submit("Sign in")
    assert browser.path == "/ui/devices", browser.path
    return browser


@pytest.fixture(scope="module")
def domain(server, signed_in):
    browser = signed_in
    name = unique("web")
    browser.get("/ui/domains/new")
    browser.fill({"Name": name})
    browser.submit("Create the domain")
    assert browser.path == "/ui/domains/%s" % name, browser.alert()
    # The names the pages' certificates here carry besides the devices' own (the names policy, services/names.py).
    allowed = ["DNS:plc.plant.example", "CN:plc", "URI:urn:plant:plc"]
    status, body = server.api("PATCH", "/domains/" + name, {"allowed_names": allowed})
    assert status == 200, body
    return name


def create_device(browser, domain, method):
    name = unique("dev")
    browser.get("/ui/devices/new")
    browser.fill({"Name": name, "Domain": domain, "Onboarding method": method})
    browser.submit("Register the device")
    assert browser.alert() is None, browser.alert()
    match = re.search(r"registered with id (\d+)", browser.text())
    assert match, browser.text()
    return name, int(match.group(1))


def test_help_page_shows_an_openssl_command_that_onboards_the_device(server, signed_in, domain, tmp_path):
    browser = signed_in
    name, device_id = create_device(browser, domain, "cmp_shared_secret")
    assert browser.path == "/ui/devices/new"  # the answer to the form: the help page with the fresh secret
    secret = browser.find("#secret").text
    script = browser.find("pre#openssl").text
    assert "-secret pass:%s" % secret in script and "-ref %d" % device_id in script
    (tmp_path / "tls-ca.pem").write_bytes(server.ca_file.read_bytes())
    run = subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "cert.pem: OK" in run.stdout
    assert openssl("x509", "-in", str(tmp_path / "cert.pem"), "-noout", "-subject").stdout.strip() == (
        "subject=CN = %s" % name
    )
    browser.get("/ui/devices/%d" % device_id)
    assert "onboarded" in browser.find(".heading .badge").text
    # The secret is spent: the help page now offers a new one instead of showing the old.
    browser.click_link("Help \N{EN DASH} issue new credentials")
    assert secret not in browser.text()
    assert "SHARED_SECRET" in browser.find("pre#openssl").text


def order_download(browser, device_id, fields):
    browser.get("/ui/devices/%d/downloads/new" % device_id)
    browser.fill(fields)
    browser.submit("Get a one-time password")
    assert browser.alert() is None, browser.alert()
    return browser.find("#otp").text, browser.find("#download-url").get_attribute("href")


def test_otp_download_to_a_pkcs12_that_openssl_opens(server, signed_in, domain, tmp_path):
    """The operator orders a tls_server credential for a device without onboarding; the person at the device
    downloads it as a PKCS#12 with the OTP; the download link works once."""
    _name, device_id = create_device(signed_in, domain, "none")
    # A name the device may not have is refused when the order is made, saying why.
    signed_in.get("/ui/devices/%d/downloads/new" % device_id)
    signed_in.fill({"Profile": "tls_server", "Subject alternative names": "DNS:elsewhere.example"})
    signed_in.submit("Get a one-time password")
    assert "may not have DNS:elsewhere.example" in (signed_in.alert() or ""), signed_in.alert()
    otp, url = order_download(
        signed_in, device_id, {"Profile": "tls_server", "Subject alternative names": "DNS:plc.plant.example"}
    )
    assert url == server.url + "/browser/"
    device_browser = Browser(server)  # the device's browser: no operator session
    try:
        device_browser.open(url)
        device_browser.fill({"One-time password": otp.lower().replace("-", " ")})  # as someone might type it
        device_browser.submit("Continue")
        assert device_browser.alert() is None, device_browser.alert()
        device_browser.fill({"Password for the private key": "correct horse", "The password again": "correct horse"})
        device_browser.submit("Download", navigates=False)  # the answer is the file
        p12 = device_browser.wait_for_download(".p12")
        opened = openssl("pkcs12", "-in", str(p12), "-passin", "pass:correct horse", "-nokeys", "-clcerts")
        (tmp_path / "cert.pem").write_text(opened.stdout)
        names = openssl("x509", "-in", str(tmp_path / "cert.pem"), "-noout", "-ext", "subjectAltName").stdout
        assert "DNS:plc.plant.example" in names
        assert openssl("pkcs12", "-in", str(p12), "-passin", "pass:wrong horse", "-nokeys", check=False).returncode
        key = openssl("pkcs12", "-in", str(p12), "-passin", "pass:correct horse", "-nocerts", "-nodes")
        assert "PRIVATE KEY" in key.stdout
        # The same form again: the token is spent.
        device_browser.submit("Download")
        assert "used up or expired" in device_browser.alert()
        assert len(list(device_browser.downloads.iterdir())) == 1
    finally:
        device_browser.close()
    signed_in.get("/ui/devices/%d" % device_id)
    assert "downloaded" in signed_in.text("#downloads + table")
    status, certificates = server.api("GET", "/devices/%d/certificates" % device_id)
    assert status == 200 and [c["profile"] for c in certificates] == ["tls_server"]


def test_three_wrong_otps_void_the_download(server, signed_in, domain):
    _name, device_id = create_device(signed_in, domain, "cmp_shared_secret")
    otp, url = order_download(signed_in, device_id, {"Profile": "domain_credential"})
    wrong = otp[:6] + ("A" if otp[6] != "A" else "B") + otp[7:]
    device_browser = Browser(server)
    try:
        device_browser.open(url)
        for left in ("2 attempts left", "1 attempt left", "void"):
            device_browser.fill({"One-time password": wrong})
            device_browser.submit("Continue")
            assert left in device_browser.alert()
        device_browser.fill({"One-time password": otp})
        device_browser.submit("Continue")
        assert "not valid" in device_browser.alert()
    finally:
        device_browser.close()
    status, orders = server.api("GET", "/devices/%d/downloads" % device_id)
    assert status == 200 and orders[0]["state"] == "void"
    assert server.device(device_id)["status"] == "pending"


def test_a_form_without_its_csrf_token_is_refused(server, signed_in, domain):
    browser = signed_in
    name = unique("csrf")
    browser.get("/ui/devices/new")
    browser.fill({"Name": name, "Domain": domain})
    browser.driver.execute_script("document.querySelector('main form input[name=csrf_token]').remove()")
    browser.submit("Register the device")
    assert "CSRF token is missing" in browser.alert()
    assert server.api("GET", "/devices?name=" + name)[1] == []


def test_every_page_has_labelled_fields_and_no_horizontal_scrolling(server, signed_in, domain):
    """Screenshots of each page at 1280 and 390 px; accessibility and layout problems fail the test."""
    browser = signed_in
    _name, device_id = create_device(browser, domain, "est_password")
    _none, none_id = create_device(browser, domain, "none")
    problems = browser.check_page("help-new-device")
    pem = server.create_domain()["ca_chain"]
    status, _body = server.api("POST", "/truststores", {"name": unique("ts"), "usage": "idevid", "certificates": pem})
    assert status == 201
    truststore = server.api("GET", "/truststores")[1][-1]["name"]
    registration = unique("reg")
    assert (
        server.api(
            "POST",
            "/devid-registrations",
            {"name": registration, "domain": domain, "truststore": truststore, "pattern": "SN-[0-9]+"},
        )[0]
        == 201
    )
    csr_key = browser.profile / "csr.key"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(csr_key))
    csr = openssl("req", "-new", "-key", str(csr_key), "-subj", "/CN=plc").stdout
    status, issued = server.api("POST", "/devices/%d/certificates" % none_id, {"profile": "tls_client", "csr": csr})
    assert status == 201
    pages = {
        "devices": "/ui/devices",
        "devices-search": "/ui/devices?search=dev&domain=%s" % domain,
        "device": "/ui/devices/%d" % device_id,
        "device-none": "/ui/devices/%d" % none_id,
        "help-est": "/ui/devices/%d/help?profile=tls_server" % device_id,
        "help-none": "/ui/devices/%d/help?profile=opc_ua" % none_id,
        "new-device": "/ui/devices/new",
        "certificate": "/ui/devices/%d/certificates/%s" % (none_id, issued["certificate"]["serial_number"]),
        "new-certificate": "/ui/devices/%d/certificates/new" % none_id,
        "new-download": "/ui/devices/%d/downloads/new" % none_id,
        "delete-device": "/ui/devices/%d/delete" % none_id,
        "domains": "/ui/domains",
        "domain": "/ui/domains/%s" % domain,
        "new-domain": "/ui/domains/new",
        "truststores": "/ui/truststores",
        "truststore": "/ui/truststores/%s" % truststore,
        "new-truststore": "/ui/truststores/new",
        "registrations": "/ui/devid-registrations",
        "registration": "/ui/devid-registrations/%s" % registration,
        "new-registration": "/ui/devid-registrations/new",
        "not-found": "/ui/devices/999999999",
    }
    for name, path in pages.items():
        browser.get(path)
        problems += browser.check_page(name)
    order_download(browser, none_id, {"Profile": "opc_ua", "Subject alternative names": "URI:urn:plant:plc"})
    problems += browser.check_page("download-ordered")
    browser.get("/ui/devices/new")
    browser.fill({"Name": "not valid!", "Domain": domain})
    browser.submit("Register the device")
    assert "device name must be" in browser.alert()
    problems += browser.check_page("form-error")
    visitor = Browser(server)
    try:
        visitor.get("/ui/sign-in")
        problems += visitor.check_page("sign-in")
        visitor.get("/browser/")
        problems += visitor.check_page("browser-otp")
        otp, _url = order_download(browser, none_id, {"Profile": "tls_client"})
        visitor.fill({"One-time password": otp})
        visitor.submit("Continue")
        problems += visitor.check_page("browser-download")
    finally:
        visitor.close()
    assert not problems, "\n".join(problems)
