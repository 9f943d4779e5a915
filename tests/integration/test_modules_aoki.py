# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The devowner_id module, and the device module's aoki and agent methods, as Ansible runs them against a
real server: check mode, real run, then both again for idempotency."""

from __future__ import annotations

import json

import test_modules
from aoki_helpers import Aoki, unique
from test_aoki import owner_signed
from test_modules import run_tasks
from trustpoint_core import aoki as aoki_format

connection = test_modules.connection


def owner_task(connection, **args):
    return {"name": "owner", "trustpoint.pki.devowner_id": dict(connection, **args)}


def test_devowner_id_module_lifecycle(server, workdir, connection):
    aoki = Aoki(server, workdir, devices=2, owner=False)
    name = unique("owner")
    task = owner_task(
        connection, name=name, certificate=aoki.read("owner_id.pem"), private_key=aoki.read("owner_id_pk.pem")
    )

    predicted = run_tasks(workdir, [task], check=True, diff=True)["owner"]
    assert predicted["changed"] and predicted["diff"]["before"] == {}
    assert len(predicted["diff"]["after"]["references"]) == 4
    assert server.api("GET", "/owner-credentials/" + name)[0] == 404, "check mode must not create it"

    created = run_tasks(workdir, [task], diff=True)["owner"]
    assert created["changed"] and created["owner_credential"]["name"] == name
    results = json.dumps(created)
    assert "PRIVATE KEY" not in results, "the key must never come back"
    for check in (True, False):
        again = run_tasks(workdir, [task], check=check, diff=True)["owner"]
        assert not again["changed"], again

    # A new DevOwnerID (say, for more devices) replaces certificate and key.
    cert, key = owner_signed(aoki, [aoki_format.cert_reference(aoki.idevid(1))])
    replace = owner_task(connection, name=name, certificate=aoki.read(cert), private_key=aoki.read(key))
    replaced = run_tasks(workdir, [replace], diff=True)["owner"]
    assert replaced["changed"] and replaced["owner_credential"]["references"] == [
        aoki_format.cert_reference(aoki.idevid(1))
    ]
    assert replaced["diff"]["before"]["fingerprint_sha256"] != replaced["diff"]["after"]["fingerprint_sha256"]
    assert not run_tasks(workdir, [replace])["owner"]["changed"]

    gone = owner_task(connection, name=name, state="absent")
    assert run_tasks(workdir, [gone], check=True)["owner"]["changed"]
    assert run_tasks(workdir, [gone])["owner"]["changed"]
    assert not run_tasks(workdir, [gone])["owner"]["changed"]
    assert server.api("GET", "/owner-credentials/" + name)[0] == 404


def test_devowner_id_module_says_what_is_wrong(server, workdir, connection):
    aoki = Aoki(server, workdir, devices=1, owner=False)
    bad_key = owner_task(
        connection, name=unique("o"), certificate=aoki.read("owner_id.pem"), private_key=aoki.read("idevid_0001_pk.pem")
    )
    failed = run_tasks(workdir, [bad_key], expect_failure=True)["owner"]
    assert "not the key of the certificate" in failed["msg"]
    no_pem = owner_task(connection, name=unique("o"), certificate="nothing", private_key="x")
    failed = run_tasks(workdir, [no_pem], expect_failure=True)["owner"]
    assert "certificate" in failed["msg"] and "PEM" in failed["msg"]


def test_device_module_registers_agent_devices_with_token_and_command(server, workdir, connection):
    domain = server.create_domain()["name"]
    name = unique("gw")
    task = {
        "name": "device",
        "trustpoint.pki.device": dict(connection, name=name, domain=domain, onboarding_method="agent"),
    }
    created = run_tasks(workdir, [task])["device"]
    assert created["changed"]
    assert created["agent_command"].endswith("--token " + created["onboarding_token"])
    assert created["agent_command"].startswith("trustpoint-agent onboard --url https://")
    again = run_tasks(workdir, [task])["device"]
    assert not again["changed"] and "onboarding_token" not in again
    regenerate = dict(task)
    regenerate["trustpoint.pki.device"] = dict(task["trustpoint.pki.device"], regenerate_secret=True)
    renewed = run_tasks(workdir, [regenerate])["device"]
    assert renewed["changed"] and renewed["onboarding_token"] != created["onboarding_token"]

    args = dict(connection, name=unique("z"), domain=domain, onboarding_method="aoki", serial_number="Z-1")
    aoki_device = {"name": "device", "trustpoint.pki.device": args}
    made = run_tasks(workdir, [aoki_device])["device"]
    assert made["device"]["onboarding_method"] == "aoki" and "onboarding_token" not in made
