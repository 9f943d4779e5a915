# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Headless Chromium for the web page tests: Debian's chromium and chromium-driver, driven by Selenium.

Nothing is downloaded: the browser and the driver are the system's (Selenium Manager stays offline), and the
flags keep Chromium from reaching for the network. The browser trusts the test server's TLS certificate by its
public key (--ignore-certificate-errors-spki-list), so the pages are a secure context with Secure cookies.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO
from cryptography import x509
from cryptography.hazmat.primitives import serialization

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = REPO / "tests" / "output" / "web"
WIDTHS = (1280, 390)
# Chromium's error code for a load abandoned because the host's network changed, and how often a GET is retried.
NETWORK_CHANGED = "ERR_NETWORK_CHANGED"
NETWORK_CHANGE_RETRIES = 5
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)

# Accessibility checks run in the page: every form field has a label, ids are unique, one h1, the page has a
# language, every link and button says what it does.
A11Y_SCRIPT = """
const problems = [];
for (const el of document.querySelectorAll('input, select, textarea')) {
  if (el.type === 'hidden') continue;
  const label = (el.id && document.querySelector('label[for="' + CSS.escape(el.id) + '"]')) || el.closest('label')
    || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
  if (!label) problems.push('field without a label: ' + el.outerHTML.slice(0, 120));
}
const seen = {};
for (const el of document.querySelectorAll('[id]')) { seen[el.id] = (seen[el.id] || 0) + 1; }
for (const [id, count] of Object.entries(seen)) { if (count > 1) problems.push('id used ' + count + ' times: ' + id); }
if (!document.documentElement.lang) problems.push('no lang attribute on <html>');
if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
if (!document.title.trim()) problems.push('no title');
for (const el of document.querySelectorAll('a, button')) {
  if (el.hidden || el.closest('[hidden]')) continue;
  if (!el.textContent.trim() && !el.getAttribute('aria-label')) problems.push('no text: ' + el.outerHTML.slice(0, 120));
}
for (const table of document.querySelectorAll('table')) {
  if (!table.querySelector('caption') && !table.getAttribute('aria-label')) problems.push('table without a caption');
}
return problems;
"""
# Whether the page scrolls sideways: its content is wider than the viewport.
OVERFLOW_SCRIPT = """
const root = document.documentElement;
const wide = [...document.querySelectorAll('body *')]
  .filter(el => el.getBoundingClientRect().right > root.clientWidth + 1).slice(0, 5)
  .map(el => el.tagName + (el.id ? '#' + el.id : '') + (el.className ? '.' + el.className : ''));
return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, wide: wide};
"""


def require_browser():
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail("%s is missing: install Debian's %s (tools/setup-system.sh does)" % (path, package))


def spki_pin(certificate_pem):
    """base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium's SPKI list takes it."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class Browser:
    """One headless Chromium with its own profile and download directory."""

    def __init__(self, server):
        require_browser()
        os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never downloads a driver or browser
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = Path(tempfile.mkdtemp(prefix="tp-chromium-"))
        self.downloads = self.profile / "downloads"
        self.downloads.mkdir()
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument("--user-data-dir=%s" % (self.profile / "profile"))
        pin = spki_pin((server.data_dir / "tls-cert.pem").read_bytes())
        options.add_argument("--ignore-certificate-errors-spki-list=%s" % pin)
        options.add_experimental_option(
            "prefs", {"download.default_directory": str(self.downloads), "download.prompt_for_download": False}
        )
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(self.downloads)}
        )
        self.base = server.url

    def close(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # --- navigation and forms ----------------------------------------------------------------------

    def get(self, path):
        self.open(self.base + path)

    def open(self, url):
        """Load url (a GET). Chromium abandons a load when the host's network changes (ERR_NETWORK_CHANGED: tests
        running beside this one add and remove interfaces for their network namespaces); a GET is loaded again."""
        for _attempt in range(NETWORK_CHANGE_RETRIES):
            self.driver.get(url)
            if not self.network_changed():
                return
            time.sleep(0.5)
        raise AssertionError(
            "Chromium abandoned %s %d times: the host's network kept changing" % (url, NETWORK_CHANGE_RETRIES)
        )

    def network_changed(self):
        """Whether the page is Chromium's own error page for a load the host's network change abandoned."""
        return bool(
            self.driver.execute_script(
                "return (document.body && document.body.innerText || '').includes(arguments[0])", NETWORK_CHANGED
            )
        )

    @property
    def path(self):
        url = self.driver.current_url
        return url[len(self.base) :] if url.startswith(self.base) else url

    def find(self, css):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def fill(self, fields):
        """Type into inputs and choose options, by the field's label text (as a person finds them)."""
        from selenium.webdriver.support.ui import Select

        for label_text, value in fields.items():
            label = next(
                (lab for lab in self.find_all("label") if lab.text.strip() == label_text),
                None,
            )
            assert label is not None, "no field labelled %r on %s, a page that says: %s" % (
                label_text,
                self.path,
                self.page_text()[:600],
            )
            field = self.find("#" + label.get_attribute("for"))
            if field.tag_name == "select":
                Select(field).select_by_value(value)
            elif field.get_attribute("type") in ("radio", "checkbox"):
                if bool(value) != field.is_selected():
                    field.click()
            else:
                field.clear()
                field.send_keys(value)

    def submit(self, button_text, navigates=True):
        """Click the button; with navigates, wait until the answer page replaced this one. A form the host's network
        change abandoned is not sent again (the server may have acted on it): the test fails, saying so."""
        button = next((b for b in self.find_all("button") if b.text.strip() == button_text), None)
        assert button is not None, "no button %r on %s" % (button_text, self.path)
        self._navigate(button.click, navigates)
        assert not (navigates and self.network_changed()), (
            "Chromium abandoned the form of %r: the host's network changed meanwhile (%s)"
            % (button_text, NETWORK_CHANGED)
        )

    def click_link(self, text):
        link = next((a for a in self.find_all("a") if a.text.strip() == text), None)
        assert link is not None, "no link %r on %s" % (text, self.path)
        href = link.get_attribute("href")
        self._navigate(link.click)
        if self.network_changed():  # a GET: loaded again (see open())
            self.open(href)

    def _navigate(self, action, navigates=True):
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        # A mark on this document's window tells when another document replaced it. Waiting for an
        # element to go stale races with Chrome's navigation: ChromeDriver may answer "Node with
        # given id does not belong to the document" (an unknown error, not a stale element).
        self.driver.execute_script("window.__tpLeaving = true")
        action()
        if navigates:
            WebDriverWait(self.driver, 60, ignored_exceptions=(WebDriverException,)).until(
                lambda driver: driver.execute_script("return !window.__tpLeaving && document.readyState === 'complete'")
            )

    def text(self, css="main"):
        return self.find(css).text

    def page_text(self):
        """The document's title and text, whatever it is (a server's error page, the browser's own)."""
        return "%s | %s" % (self.driver.title, self.driver.execute_script("return document.body.innerText"))

    def alert(self):
        found = self.find_all("[role=alert]")
        return found[0].text if found else None

    # --- checks and artifacts ----------------------------------------------------------------------

    def set_width(self, width):
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600},
        )

    def check_page(self, name):
        """Screenshots at every width of WIDTHS; fails on a11y problems or horizontal scrolling."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        problems = []
        for width in WIDTHS:
            self.set_width(width)
            time.sleep(0.1)
            for problem in self.driver.execute_script(A11Y_SCRIPT):
                problems.append("%s at %d px: %s" % (name, width, problem))
            overflow = self.driver.execute_script(OVERFLOW_SCRIPT)
            if overflow["scrollWidth"] > overflow["clientWidth"]:
                problems.append(
                    "%s scrolls sideways at %d px (content %d px wide; widest: %s)"
                    % (name, width, overflow["scrollWidth"], ", ".join(overflow["wide"]))
                )
            self.screenshot("%s-%d" % (name, width))
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        return problems

    def screenshot(self, name):
        """A full-page PNG in tests/output/web/ (kept as a test artifact)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1},
            },
        )
        path = SCREENSHOTS / ("%s.png" % name)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def wait_for_download(self, suffix, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [p for p in self.downloads.iterdir() if p.name.endswith(suffix)]
            if done:
                return done[0]
            time.sleep(0.1)
        raise AssertionError("no %s download after %d s: %s" % (suffix, timeout, list(self.downloads.iterdir())))
