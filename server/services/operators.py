# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators: the people who sign in to the web pages. The REST API keeps its bearer tokens.

Passwords are Argon2id hashes (RFC 9106, argon2-cffi's defaults: 64 MiB, 3 passes). A check costs that memory
and ~50 ms of CPU whoever asks, so checks run at most MAX_CONCURRENT_CHECKS at a time per process, an unknown
name costs as much as a known one (no enumeration by timing), and after FAILURES_BEFORE_DELAY failed sign-ins
in a row an account answers only after a delay that doubles with each further failure (up to MAX_DELAY), without
running the hash. The web pages add a per-address rate limit in front (web/pages/__init__.py). Decided: a blocked
account says so ("try again in N seconds"), which tells a visitor that the name exists once it was tried
FAILURES_BEFORE_DELAY times; the operator who mistyped needs to know, and operator names are not secrets.
"""

from __future__ import annotations

import datetime
import re
import secrets
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from ..errors import ApiError
from ..storage.db import begin_write
from ..storage.models import Operator, utcnow

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
FAILURES_BEFORE_DELAY = 5
FIRST_DELAY = datetime.timedelta(seconds=30)
MAX_DELAY = datetime.timedelta(minutes=15)
MAX_CONCURRENT_CHECKS = 2

_HASHER = PasswordHasher()
_CHECKS = threading.BoundedSemaphore(MAX_CONCURRENT_CHECKS)
# What an unknown name is checked against, so that it costs the same as a known one.
_DUMMY_HASH = []


class SignInRefused(Exception):
    """A failed sign-in; message is what the person is told."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def check_username(username):
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise ApiError(
            400, "an operator name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return username


def check_new_password(password):
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ApiError(400, "an operator password must be %d to %d characters" % (MIN_PASSWORD, MAX_PASSWORD))
    return password


def new_password():
    """A generated password: 24 URL-safe characters (144 bits)."""
    return secrets.token_urlsafe(18)


def _hash(password):
    with _CHECKS:
        return _HASHER.hash(password)


def _verify(password_hash, password):
    with _CHECKS:
        try:
            return _HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def get_operator(db, username):
    operator = db.scalar(select(Operator).where(Operator.username == username))
    if operator is None:
        raise ApiError(404, "operator %r does not exist" % username)
    return operator


def create_operator(db, username, password):
    """Add an operator. The caller commits."""
    check_username(username)
    password_hash = _hash(check_new_password(password))
    begin_write(db)
    if db.scalar(select(Operator).where(Operator.username == username)) is not None:
        raise ApiError(409, "operator %r already exists" % username)
    operator = Operator(
        username=username, password_hash=password_hash, session_token=secrets.token_hex(16), failed_sign_ins=0
    )
    db.add(operator)
    return operator


def set_password(db, operator, password):
    """Give operator a new password; their sessions end and a sign-in delay is lifted. The caller commits."""
    password_hash = _hash(check_new_password(password))
    begin_write(db)
    db.refresh(operator)
    operator.password_hash = password_hash
    operator.failed_sign_ins = 0
    operator.blocked_until = None
    end_sessions(operator)


def end_sessions(operator):
    """Every session cookie of operator stops working (sign-out ends the sessions of all browsers)."""
    operator.session_token = secrets.token_hex(16)


def delete_operator(db, operator):
    db.delete(operator)


def authenticate(db, username, password, now=None):
    """The operator whose name and password these are; SignInRefused otherwise. Commits the outcome."""
    now = now or utcnow()
    operator = db.scalar(select(Operator).where(Operator.username == username)) if isinstance(username, str) else None
    if not isinstance(password, str) or len(password) > MAX_PASSWORD:
        password = ""
    if operator is not None and operator.blocked_until is not None and now < operator.blocked_until:
        wait = int((operator.blocked_until - now).total_seconds()) + 1
        raise SignInRefused(
            "too many failed sign-ins for this account: try again in %d seconds (an operator can set a new "
            "password with `trustpoint-server operator password`)" % wait
        )
    if operator is None:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(_hash(secrets.token_urlsafe(16)))
        _verify(_DUMMY_HASH[0], password)
        raise SignInRefused("wrong name or password")
    valid = _verify(operator.password_hash, password)
    rehash = _hash(password) if valid and _HASHER.check_needs_rehash(operator.password_hash) else None
    begin_write(db)
    db.refresh(operator)
    if not valid:
        operator.failed_sign_ins += 1
        excess = operator.failed_sign_ins - FAILURES_BEFORE_DELAY
        if excess >= 0:
            operator.blocked_until = now + min(FIRST_DELAY * 2 ** min(excess, 16), MAX_DELAY)
        db.commit()
        raise SignInRefused("wrong name or password")
    operator.failed_sign_ins = 0
    operator.blocked_until = None
    operator.last_sign_in_at = now
    if rehash is not None:
        operator.password_hash = rehash
    db.commit()
    return operator


def session_id(operator):
    """What a session cookie carries to name operator: id and the current session token."""
    return "%d:%s" % (operator.id, operator.session_token)


def from_session_id(db, value):
    """The operator a session cookie names, None when the token changed (signed out) or they were deleted."""
    ident, _sep, token = (value or "").partition(":")
    if not ident.isdigit() or not token or len(ident) > 18:
        return None
    operator = db.get(Operator, int(ident))
    if operator is None or not secrets.compare_digest(operator.session_token, token):
        return None
    return operator
