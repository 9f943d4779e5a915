# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""When a device sends a request again: the answer was lost (no answer, a reset or closed connection, a timeout),
the server failed (HTTP 5xx) or said to (CMP systemUnavail). The server makes every such retry safe: a repeated
certConf gets its pkiConf again, a used one-time secret and a renewed credential still work until the new
credential is used (see docs/onboarding.md)."""

from __future__ import annotations

import time

from .errors import CmpFailure, TransportError, TrustpointError

# Seconds before the first, second, ... retry.
DELAYS = (1, 2, 4, 8)


def is_transient(exc):
    """Whether the exchange that raised exc may succeed when sent again."""
    if isinstance(exc, TransportError):
        return exc.transient
    if isinstance(exc, CmpFailure):
        return "systemUnavail" in exc.fail_info
    return False


def call_with_retries(call, retries, sleep=time.sleep, delays=DELAYS):
    """call() until it succeeds, at most retries more times while it fails with a transient error."""
    attempt = 0
    while True:
        try:
            return call()
        except TrustpointError as exc:
            if attempt >= retries or not is_transient(exc):
                raise
            sleep(delays[min(attempt, len(delays) - 1)])
            attempt += 1
