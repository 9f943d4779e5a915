# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Errors of the core. Their messages are written for the person who has to act on them."""

from __future__ import annotations

# The longest text an error carries, and the longest excerpt of one value in it: a peer's values (salts,
# OIDs, names, serial numbers, integers of any size) must not make answers and log lines as large as the
# input, or larger.
MAX_TEXT = 1024
MAX_EXCERPT = 80


def excerpt(value, limit=MAX_EXCERPT):
    """value as text for a message, at most about limit characters; a too large integer by its size (Python
    refuses to print an int of more than 4300 digits, and nobody needs to read one)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "an integer of %d bits" % value.bit_length()
    if isinstance(value, (bytes, bytearray)):
        text = value[: limit + 1].hex()
        size = len(value) * 2
    else:
        text = value if isinstance(value, str) else str(value)
        size = len(text)
    if size <= limit:
        return text
    return "%s...(%d characters)" % (text[:limit], size)


def bounded(text, limit=MAX_TEXT):
    """An error text cut to limit characters (it says how long it was)."""
    text = text if isinstance(text, str) else str(text)
    if len(text) <= limit:
        return text
    return "%s...(%d characters in all)" % (text[:limit], len(text))


class TrustpointError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidInput(TrustpointError):
    """Data from a user or a peer is malformed or not acceptable."""

    def __init__(self, message):
        super().__init__(bounded(message))


class CmpFailure(TrustpointError):
    """A CMP request is rejected, or a CMP response is not acceptable.

    fail_info holds PKIFailureInfo bit names (see cmp_message.FAIL_INFO_BITS); a server answers with an
    error PKIMessage carrying them, a client reports them.
    """

    def __init__(self, text, *fail_info):
        text = bounded(text)
        super().__init__(text)
        self.text = text
        self.fail_info = tuple(fail_info)

    def __str__(self):
        if self.fail_info:
            return "%s (%s)" % (self.text, ", ".join(self.fail_info))
        return self.text


class TransportError(TrustpointError):
    """The peer could not be reached or answered outside the protocol (HTTP error, wrong type).

    status: the HTTP status of the answer, None when there was none. transient: whether sending the request
    again may succeed; by default when there was no answer or the server failed (5xx).
    """

    def __init__(self, message, status=None, transient=None):
        super().__init__(message)
        self.status = status
        self.transient = (status is None or status >= 500) if transient is None else transient


class ConfirmationUnknown(TransportError):
    """The server issued a certificate, but whether it received the certConf is unknown: its answer was lost
    (also after the retries).

    enrollment holds what was issued; the caller may find out (use the certificate once) or start over.
    """

    def __init__(self, message, enrollment):
        super().__init__(message)
        self.enrollment = enrollment
