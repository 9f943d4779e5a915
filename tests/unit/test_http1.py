# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""runtime/http1.py: how the worker reads requests. One reading of every request (no smuggling), bounded
sizes, and errors as HttpError with the status to answer, never another exception."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trustpoint_server.runtime import http1


def head(text):
    return http1.parse_head(text.encode("latin-1"))


def test_a_plain_request():
    parsed = head("POST /.well-known/cmp/p/d/initialization?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n")
    assert (parsed.method, parsed.target, parsed.version, parsed.content_length) == (
        "POST",
        "/.well-known/cmp/p/d/initialization?x=1",
        "HTTP/1.1",
        12,
    )
    environ = http1.environ(parsed, b"x" * 12, ("192.0.2.7", 5), ("127.0.0.1", 8080), "http")
    assert environ["PATH_INFO"] == "/.well-known/cmp/p/d/initialization" and environ["QUERY_STRING"] == "x=1"
    assert environ["CONTENT_LENGTH"] == "12" and environ["HTTP_HOST"] == "a" and environ["SERVER_PORT"] == "8080"
    assert environ["wsgi.input"].read() == b"x" * 12


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        ("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),  # CL.TE
        ("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),  # whitespace before the colon
        ("GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", 400),
        ("GET /a b HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\n\r\n", 505),
        ("GET / HTTPS/1.1\r\n\r\n", 400),
        ("GET /" + "a" * 9000 + " HTTP/1.1\r\n\r\n", 414),
        ("GET / HTTP/1.1\r\n" + "X-A: 1\r\n" * 101 + "\r\n", 431),
    ],
)
def test_ambiguous_or_oversized_heads_are_refused(request_head, status):
    with pytest.raises(http1.HttpError) as caught:
        head(request_head)
    assert caught.value.status == status


def test_same_content_length_twice_is_one():
    assert head("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").content_length == 5


def test_headers_with_underscores_are_dropped():
    """X_Forwarded_For would reach the app as HTTP_X_FORWARDED_FOR, like X-Forwarded-For."""
    environ = http1.environ(head("GET / HTTP/1.1\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n"), b"", ("a", 1), ("b", 2), "http")
    assert "HTTP_X_FORWARDED_FOR" not in environ


def test_expect_continue_only_for_http_11():
    assert head("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").expect_continue
    assert not head("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").expect_continue


@given(st.binary(max_size=600))
def test_any_head_parses_or_is_an_http_error(data):
    try:
        http1.parse_head(data + b"\r\n\r\n")
    except http1.HttpError as exc:
        assert exc.status in (400, 414, 431, 501, 505)


@given(st.binary(max_size=3000), st.lists(st.integers(1, 300), min_size=1, max_size=20), st.integers(1, 50))
def test_chunked_bodies_decode_whatever_the_pieces(body, sizes, piece):
    """A body sent as chunks of any sizes, fed to the decoder in pieces of any size, comes out whole."""
    encoded, rest = b"", body
    for size in sizes * (len(body) // max(1, sum(sizes)) + 1):
        if not rest:
            break
        chunk, rest = rest[:size], rest[size:]
        encoded += b"%x;ext=1\r\n%s\r\n" % (len(chunk), chunk)
    encoded += b"0\r\nTrailer: x\r\n\r\n"
    decoder = http1.ChunkedBody(limit=10_000)
    finished = False
    for start in range(0, len(encoded), piece):
        assert not finished
        finished = decoder.feed(encoded[start : start + piece])
    assert finished and bytes(decoder.body) == body and not decoder.over_limit


def test_a_chunked_body_stops_past_the_limit():
    decoder = http1.ChunkedBody(limit=10)
    assert decoder.feed(b"20\r\n" + b"a" * 32 + b"\r\n")
    assert decoder.over_limit and len(decoder.body) > 10


@given(st.binary(max_size=300))
def test_malformed_chunks_are_http_errors(data):
    decoder = http1.ChunkedBody(limit=1000)
    try:
        decoder.feed(data)
    except http1.HttpError as exc:
        assert exc.status in (400, 431)


def test_answers_mirror_the_version_and_close():
    answer = http1.response_head("HTTP/1.0", "200 OK", [("Content-Type", "a/b"), ("Connection", "keep-alive")], 3)
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and b"Content-Length: 3\r\n" in answer
    assert b"Connection: close\r\n" in answer and b"keep-alive" not in answer
    assert b"Content-Length" not in http1.response_head("HTTP/1.1", "204 No Content", [], 0)
