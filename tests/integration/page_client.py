# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The web pages over plain HTTP requests (urllib, a cookie jar): sign in, post forms with their CSRF token,
read what a page shows. For tests that need no browser."""

from __future__ import annotations

import html
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request

from conftest import tls_context

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
_PRE = re.compile(r'<pre id="([^"]+)"[^>]*><code>(.*?)</code></pre>', re.S)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class PageClient:
    """A browser-like client of one server: cookies, CSRF tokens, the Referer that Flask-WTF checks."""

    def __init__(self, server):
        self.server = server
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=tls_context(str(server.ca_file))),
            urllib.request.HTTPCookieProcessor(self.jar),
            _NoRedirect(),
        )

    def request(self, method, path, fields=None, referer=True):
        """(status, headers, text) of one request; redirects are answers (3xx), not followed."""
        url = path if path.startswith("http") else self.server.url + path
        data = urllib.parse.urlencode(fields).encode() if fields is not None else None
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (the test server)
        if referer:
            request.add_header("Referer", self.server.url + "/ui/")
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, response.headers, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read().decode("utf-8", "replace")

    def adopt_session(self, other):
        """Take the cookies of other (a PageClient of another server instance) as this server's own."""
        host = urllib.parse.urlsplit(self.server.url).hostname
        for cookie in other.jar:
            copied = http.cookiejar.Cookie(
                cookie.version, cookie.name, cookie.value, None, False, host, False, False, cookie.path,
                cookie.path_specified, cookie.secure, cookie.expires, cookie.discard, None, None, {},
            )  # fmt: skip
            self.jar.set_cookie(copied)

    def get(self, path):
        return self.request("GET", path)

    def csrf_token(self, path):
        status, _headers, text = self.get(path)
        assert status == 200, (status, text[:300])
        tokens = _CSRF.findall(text)
        assert tokens, "no form on %s" % path
        return tokens[-1]  # the page's own form comes after the header's sign-out form

    def post_form(self, path, fields, form_page=None, with_token=True):
        """Post fields to path with the CSRF token of form_page (default: path)."""
        fields = dict(fields)
        if with_token:
            fields["csrf_token"] = self.csrf_token(form_page or path)
        return self.request("POST", path, fields)

    def sign_in(self, username, password):
        return self.post_form("/ui/sign-in", {"username": username, "password": password})


def alert(text):
    """The text of a page's error box, or None."""
    match = re.search(r'role="alert">(.*?)</div>', text, re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip() if match else None


def code_blocks(text):
    """{id: text} of the page's command blocks, as a person would copy them."""
    return {key: html.unescape(body) for key, body in _PRE.findall(text)}
