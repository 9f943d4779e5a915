# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTP/1.0 and 1.1 as the server's worker reads and writes it: the request head, the body's framing, the
WSGI environ (PEP 3333) and the answer's head. Pure functions over bytes; the worker (worker.py) does the I/O.

Strict where leniency lets one request be read two ways (request smuggling): no whitespace before a
header's colon, no folded lines, one Content-Length, no Content-Length beside Transfer-Encoding, and
"chunked" as the only transfer coding. Every size is bounded; an error names the HTTP status to answer.
"""

from __future__ import annotations

import re
import sys
from email.utils import formatdate
from io import BytesIO
from urllib.parse import unquote_to_bytes

MAX_REQUEST_LINE = 8190
MAX_HEADERS = 100
MAX_HEAD = 32 * 1024  # request line, headers and the blank line
MAX_CHUNK_LINE = 1024

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Visible ASCII and obs-text (bytes >= 0x80, decoded as Latin-1 per PEP 3333); no controls, no spaces.
_TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_STATUS_TEXT = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
# Hop-by-hop fields are the server's business (RFC 9110 7.6.1): an application's are dropped.
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length")
)


class HttpError(Exception):
    """The request cannot be read: answer status (with message as the text) and close."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class RequestHead:
    """A parsed request line and header block. headers: [(lowercase name, value)], both str (Latin-1)."""

    __slots__ = ("chunked", "content_length", "expect_continue", "headers", "method", "target", "version")

    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.content_length = None
        self.chunked = False
        self.expect_continue = False


def head_end(buffer, start=0):
    """The index just after the blank line ending the head in buffer, or -1 while it is incomplete."""
    end = buffer.find(b"\r\n\r\n", max(0, start - 3))
    return -1 if end < 0 else end + 4


def parse_head(data):
    """RequestHead of the bytes up to and including the blank line; raises HttpError."""
    # RFC 9112 2.2: a server should ignore empty lines received before the request line.
    data = bytes(data).lstrip(b"\r\n")
    lines = data[:-4].split(b"\r\n") if data.endswith(b"\r\n\r\n") else []
    if not lines or not lines[0]:
        raise HttpError(400, "the request has no request line")
    request_line = lines[0]
    if len(request_line) > MAX_REQUEST_LINE:
        raise HttpError(414, "the request line exceeds %d bytes" % MAX_REQUEST_LINE)
    parts = request_line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise HttpError(400, "malformed request line")
    version = _VERSION.fullmatch(parts[2])
    if version is None:
        raise HttpError(400, "malformed HTTP version")
    if version.group(1) != b"1":
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are served")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "more than %d header fields" % MAX_HEADERS)
    headers = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "folded header lines are not accepted")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed header field")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise HttpError(400, "a header field value holds control characters")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
    head = RequestHead(
        parts[0].decode("ascii"), parts[1].decode("latin-1"), "HTTP/1.%s" % version.group(2).decode(), headers
    )
    _framing(head)
    return head


def _framing(head):
    """Set how the body is delimited (RFC 9112 6): Content-Length or chunked, never both."""
    lengths = [value for name, value in head.headers if name == "content-length"]
    codings = [value for name, value in head.headers if name == "transfer-encoding"]
    if codings:
        if lengths:
            raise HttpError(400, "Content-Length and Transfer-Encoding together")
        if head.version == "HTTP/1.0":
            raise HttpError(400, "Transfer-Encoding is not defined for HTTP/1.0")
        coding = ",".join(codings).replace(" ", "").replace("\t", "").lower()
        if coding != "chunked":
            raise HttpError(501, "the only transfer coding served is chunked")
        head.chunked = True
    elif lengths:
        values = {value.strip() for value in ",".join(lengths).split(",")}
        if len(values) != 1:
            raise HttpError(400, "conflicting Content-Length values")
        value = values.pop()
        if not value.isdigit() or not value.isascii() or len(value) > 18:
            raise HttpError(400, "malformed Content-Length")
        head.content_length = int(value)
    expect = [value.lower() for name, value in head.headers if name == "expect"]
    head.expect_continue = head.version == "HTTP/1.1" and expect == ["100-continue"]


class ChunkedBody:
    """Decodes a chunked body (RFC 9112 7.1) fed in pieces; keeps at most limit + 1 bytes of it.

    feed() returns True once the last chunk and the trailers have arrived, or once more than limit
    bytes were decoded (the rest is not read: the application refuses what is too large). Raises
    HttpError for malformed framing.
    """

    def __init__(self, limit):
        self.limit = limit
        self.body = bytearray()
        self._buffer = bytearray()
        self._remaining = None  # bytes left in the current chunk; None: a size line is next
        self._trailers = False
        self.over_limit = False

    def feed(self, data):
        self._buffer += data
        while True:
            if self._trailers:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEAD:
                        raise HttpError(431, "chunked trailers exceed %d bytes" % MAX_HEAD)
                    return False
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                if not line:
                    return True
                continue
            if self._remaining is None:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_CHUNK_LINE:
                        raise HttpError(400, "a chunk size line exceeds %d bytes" % MAX_CHUNK_LINE)
                    return False
                size = bytes(self._buffer[:end]).split(b";", 1)[0].strip(b" \t")
                del self._buffer[: end + 2]
                if not size or len(size) > 16 or not re.fullmatch(rb"[0-9A-Fa-f]+", size):
                    raise HttpError(400, "malformed chunk size")
                self._remaining = int(size, 16)
                if self._remaining == 0:
                    self._trailers = True
                continue
            if self._remaining > 0:
                if not self._buffer:
                    return False
                piece = self._buffer[: self._remaining]
                del self._buffer[: len(piece)]
                self._remaining -= len(piece)
                self.body += piece
                if len(self.body) > self.limit:
                    self.over_limit = True
                    return True
                continue
            if len(self._buffer) < 2:
                return False
            if self._buffer[:2] != b"\r\n":
                raise HttpError(400, "a chunk does not end with CRLF")
            del self._buffer[:2]
            self._remaining = None


def environ(head, body, client, server, url_scheme, extra=None):
    """The WSGI environ of a request whose body (bytes) has been read in full (or up to the limit).

    client and server are (host, port) pairs. CONTENT_LENGTH is the length of body as read; with a
    Content-Length larger than the application accepts, body is empty and CONTENT_LENGTH says the
    announced size, so that the application refuses it without reading.
    """
    path, _sep, query = head.target.partition("?")
    if not path.startswith("/"):
        # absolute-form (RFC 9112 3.2.2): the path of the URI
        _scheme, _sep, rest = path.partition("://")
        path = "/" + rest.partition("/")[2] if rest else path
    result = {
        "REQUEST_METHOD": head.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "RAW_URI": head.target,
        "SERVER_PROTOCOL": head.version,
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "CONTENT_LENGTH": str(len(body) if head.content_length is None or body else head.content_length),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.input": BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in head.headers:
        if "_" in name:
            continue  # would be indistinguishable from the same name with '-' (a proxy's spoofing vector)
        if name == "content-type":
            result["CONTENT_TYPE"] = value
            continue
        if name in ("content-length", "transfer-encoding"):
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        result[key] = "%s, %s" % (result[key], value) if key in result else value
    if extra:
        result.update(extra)
    return result


def response_head(version, status, headers, length):
    """The head of an answer: the request's HTTP version (HTTP/1.0 clients want theirs back), the
    application's headers without hop-by-hop ones, Content-Length unless the status forbids a body,
    a Date and Connection: close."""
    lines = ["%s %s" % (version if version in ("HTTP/1.0", "HTTP/1.1") else "HTTP/1.1", status)]
    lines.extend("%s: %s" % (name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP)
    code = int(status[:3])
    if code >= 200 and code not in (204, 304):
        lines.append("Content-Length: %d" % length)
    lines.append("Date: %s" % formatdate(usegmt=True))
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_response(version, status, message):
    """A complete text/plain answer the worker sends itself (the application never saw the request)."""
    body = (message + "\n").encode("ascii", "replace")
    reason = "%d %s" % (status, _STATUS_TEXT.get(status, "Error"))
    return response_head(version, reason, [("Content-Type", "text/plain; charset=utf-8")], len(body)) + body
