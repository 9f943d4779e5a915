# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to the collection: registering devices through the REST API, for trustpoint.pki.device (one
device) and trustpoint.pki.device_batch (many devices in one task)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from .names import normalise

METHODS = ("cmp_shared_secret", "cmp_idevid", "est_password", "est_idevid", "none", "aoki", "agent")
# The methods that onboard with a one-time secret the server hands out (agent: a token and its command).
SECRET_METHODS = ("cmp_shared_secret", "est_password", "agent")
# gunicorn refuses request lines over 4094 bytes: a batch is read in requests below that.
_MAX_QUERY = 3000


class Conflict(Exception):
    """A wanted device cannot be reconciled with the one that exists; the message says what to do."""


def settings(device):
    """What a diff shows of a device (never its secret)."""
    fields = ("name", "domain", "onboarding_method", "status", "secret_locked", "devid_registration", "allowed_names")
    return {k: device[k] for k in fields if k in device}


def check_wanted(wanted):
    """Raise Conflict for a device the server would refuse to create, before anything is registered."""
    if wanted["onboarding_method"] == "est_password" and ":" in wanted["name"]:
        raise Conflict(
            "device name %s contains ':', which an est_password device cannot have (its name is the HTTP Basic "
            "user-id, which ends at the first ':'); choose another name" % wanted["name"]
        )


def find(api, names):
    """{name: device} of the devices with these names that exist on the server, in as few requests as fit."""
    found, chunks = {}, [[]]
    for name in names:
        item = urlencode({"name": name})
        if chunks[-1] and sum(len(i) + 1 for i in chunks[-1]) + len(item) > _MAX_QUERY:
            chunks.append([])
        chunks[-1].append(item)
    for chunk in chunks:
        if chunk:
            for device in api.request("GET", "/devices?" + "&".join(chunk)):
                found[device["name"]] = device
    return found


def find_one(api, name):
    matches = api.request("GET", "/devices?name=" + quote(name, safe=""))
    return matches[0] if matches else None


def ensure(api, wanted, current, check_mode):
    """Register the wanted device (name, domain, onboarding_method, serial_number, devid_registration,
    allowed_names, regenerate_secret, unlock) unless it exists as current (the server's JSON, or None); an existing
    one gets the wanted devid_registration and allowed_names. Returns {changed, device, diff[, shared_secret |
    password]}. unlock lifts the lock the server put on the device's secret after failed attempts."""
    before = settings(current) if current else {}
    result = {"changed": False}
    if current is None:
        check_wanted(wanted)
        result["changed"] = True
        request = {k: wanted[k] for k in ("name", "domain", "onboarding_method")}
        for field in ("serial_number", "devid_registration"):
            if wanted.get(field) is not None:
                request[field] = wanted[field]
        if wanted.get("allowed_names") is not None:
            request["allowed_names"] = normalise(wanted["allowed_names"])
        if check_mode:
            device = dict(request, status="pending")
        else:
            created = api.request("POST", "/devices", request)
            device = created.pop("device")
            result.update(created)  # shared_secret, password, or onboarding_token and agent_command
    else:
        for field in ("domain", "onboarding_method"):
            if current[field] != wanted[field]:
                raise Conflict(
                    "device %s exists with %s %s, not %s; delete it (state=absent) and register it again to "
                    "change that" % (wanted["name"], field, current[field], wanted[field])
                )
        device = current
        patch = {}
        if wanted.get("allowed_names") is not None and normalise(wanted["allowed_names"]) != current.get(
            "allowed_names"
        ):
            patch["allowed_names"] = normalise(wanted["allowed_names"])
        registration = wanted.get("devid_registration")
        if registration is not None and registration != current.get("devid_registration"):
            patch["devid_registration"] = registration
        if patch:
            result["changed"] = True
            device = (
                dict(current, **patch) if check_mode else api.request("PATCH", "/devices/%d" % current["id"], patch)
            )
        unlocked = dict(device, secret_locked=False, failed_authentications=0, secret_locked_at=None)
        if wanted.get("regenerate_secret") and wanted["onboarding_method"] in SECRET_METHODS:
            result["changed"] = True
            device = unlocked  # a new secret starts unlocked
            if not check_mode:
                renewed = api.request("POST", "/devices/%d/secret" % current["id"])
                device = renewed.pop("device")
                result.update(renewed)
        elif wanted.get("unlock") and current.get("secret_locked"):
            result["changed"] = True
            device = unlocked if check_mode else api.request("POST", "/devices/%d/unlock" % current["id"])
    result["device"] = device
    result["diff"] = {"before": before, "after": settings(device)}
    return result
