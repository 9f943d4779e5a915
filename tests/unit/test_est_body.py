# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""EST request bodies: raw DER is taken as it is (about 2 % of CSRs end in a byte that is white space)."""

from __future__ import annotations

import base64

import pytest
from trustpoint_core import est


@pytest.mark.parametrize("last", [b"\n", b" ", b"\t", b"\r", b"\x0b", b"\x0c"])
def test_raw_der_ending_in_a_white_space_byte_is_kept_whole(last):
    der = b"\x30\x03\x04\x01" + last
    assert est.decode_body(der) == der


@pytest.mark.parametrize(
    "body", [b"MAA=", b"  MAA=\r\n", b"-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END X-----\n"]
)
def test_text_forms_are_trimmed(body):
    assert est.decode_body(body) == base64.b64decode(b"MAA=")
