# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""trustpoint-agent against a real server: AOKI (EST and CMP), the guided flow with a one-time token,
renewal, status, install-timer, and every refusal a device must make."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aoki_helpers import Aoki
from conftest import REPO, http
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from drop_proxy import DroppingProxy
from test_aoki import owner_signed
from trustpoint_core import aoki as aoki_format

AGENT_PATH = str(REPO / "agent")


def agent(*args, check=True, timeout=120):
    """Run trustpoint-agent (from the source tree, with this virtualenv's libraries)."""
    env = dict(os.environ, PYTHONPATH=AGENT_PATH)
    result = subprocess.run(
        [sys.executable, "-m", "trustpoint_agent.cli", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            "trustpoint-agent %s failed (%d):\n%s%s" % (args, result.returncode, result.stdout, result.stderr)
        )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def factory(aoki, n, directory, owner_ca="ownerid_ca.pem"):
    """Factory provisioning of device n: its IDevID and the owner's trust anchor."""
    directory.mkdir(exist_ok=True)
    cert, key, _serial = aoki.device(n)
    shutil.copy(cert, directory / "idevid.pem")
    shutil.copy(key, directory / "idevid.key")
    shutil.copy(aoki.dir / owner_ca, directory / "owner-truststore.pem")
    return directory


def state_of(state_dir):
    return json.loads((state_dir / "state.json").read_text())


def chain_root(state_dir):
    return x509.load_pem_x509_certificates((state_dir / "chain.pem").read_bytes())[-1]


def held(state_dir):
    """The SHA-256 fingerprint of the credential the device holds, as the API shows it."""
    der = x509.load_pem_x509_certificate((state_dir / "cert.pem").read_bytes()).public_bytes(Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def domain_root(server, domain):
    return x509.load_pem_x509_certificates(server.api("GET", "/domains/" + domain)[1]["ca_chain"].encode())[-1]


def timer_paths(workdir):
    """--unit-dir and --cron-file in workdir: the agent's commands never touch this machine's timers."""
    return ["--unit-dir", workdir / "units", "--cron-file", workdir / "cron.d" / "trustpoint-agent"]


class Tripwire:
    """A TCP port that counts the connections made to it (and answers none)."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = "https://127.0.0.1:%d" % self.socket.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _address = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self):
        self.socket.close()


@pytest.mark.parametrize("protocol", ["est", "cmp"])
def test_aoki_onboards_renews_and_reports(server, workdir, protocol):
    aoki = Aoki(server, workdir / "pki", devices=1)
    state = workdir / "state"
    base = ["--state-dir", state]
    run = agent(
        *base,
        "aoki",
        "--factory-dir",
        factory(aoki, 1, workdir / "factory"),
        "--url",
        server.url,
        "--protocol",
        protocol,
        "--attempts",
        "1",
    )
    assert "onboarded" in run.stdout
    assert (state / "key.pem").stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700
    assert chain_root(state) == domain_root(server, aoki.domain)
    assert state_of(state)["method"] == "aoki" and state_of(state)["protocol"] == protocol
    # The TLS anchor pinned: the server's TLS CA, first.
    pinned = x509.load_pem_x509_certificates((state / "tls-truststore.pem").read_bytes())
    assert pinned[0] == x509.load_pem_x509_certificate(server.ca_file.read_bytes())
    (device,) = aoki.devices_on_server()
    assert device["onboarding_method"] == "aoki" and device["status"] == "onboarded"
    first = x509.load_pem_x509_certificate((state / "cert.pem").read_bytes())
    assert device["credential"]["serial_number"] == format(first.serial_number, "x")

    report = json.loads(agent(*base, "status", "--json").stdout)
    assert report["onboarded"] and not report["renewal_due"] and report["protocol"] == protocol
    assert "not due" in agent(*base, "renew").stdout
    # A second boot: nothing to do.
    again = agent(*base, "aoki", "--factory-dir", workdir / "factory", "--url", server.url)
    assert "already onboarded" in again.stdout

    old_key = (state / "key.pem").read_bytes()
    assert "renewed" in agent(*base, "renew", "--force").stdout
    renewed = x509.load_pem_x509_certificate((state / "cert.pem").read_bytes())
    assert renewed.serial_number != first.serial_number and (state / "key.pem").read_bytes() != old_key
    device = server.device(device["id"])
    assert device["credential"]["serial_number"] == format(renewed.serial_number, "x")
    assert state_of(state)["renewed_at"]

    # Decommissioning: a CMP rr signed with the credential (also for a device that onboarded over EST), and the
    # daily renewal goes with it: the systemd units (enabled by the real systemctl, offline) and the cron entry.
    timers = timer_paths(workdir)
    root = workdir / "root"
    units = root / "etc" / "systemd" / "system"
    timers[1] = units
    agent(*base, "install-timer", "--mode", "systemd", "--no-enable", *timers)
    agent(*base, "install-timer", "--mode", "cron", *timers)
    # The timer first, then what `systemctl enable` linked, then the service.
    written = [units / "trustpoint-agent-renew.timer", units / "trustpoint-agent-renew.service"]
    systemctl = shutil.which("systemctl")
    if systemctl:
        enable = [systemctl, "--root", str(root), "enable", "trustpoint-agent-renew.timer"]
        subprocess.run(enable, check=True, capture_output=True)
        written.insert(1, units / "timers.target.wants" / "trustpoint-agent-renew.timer")
    cron = timers[3]
    assert all(os.path.lexists(path) for path in [*written, cron])
    serial = format(renewed.serial_number, "x")
    held_files = {name: (state / name).read_bytes() for name in ("key.pem", "cert.pem", "chain.pem")}
    revoked = agent(*base, "revoke", *timers).stdout.splitlines()
    assert revoked == [
        "revoked: %s (cessationOfOperation)" % serial,
        "removed %s" % ", ".join(map(str, written)),
        "removed %s" % cron,
    ]
    assert not any(os.path.lexists(path) for path in [*written, cron])
    record = server.api("GET", "/devices/%d/certificates/%s" % (device["id"], serial))[1]
    assert (record["status"], record["revocation_reason"]) == ("revoked", "cessationOfOperation"), record
    assert not any((state / name).exists() for name in ("key.pem", "cert.pem", "chain.pem"))
    assert state_of(state)["revoked_serial_number"] == serial
    again = agent(*base, "revoke", *timers).stdout.splitlines()
    assert again[0].startswith("already revoked") and again[1].startswith("no renewal timer to remove"), again
    assert agent(*base, "status", check=False).returncode == 1

    # A timer left behind (a device revoked by hand without it, or by an older agent) renews nothing and contacts
    # no server, even when an interrupted revoke left the credential's files: one line, exit code 0.
    tripwire = Tripwire()
    try:
        for name, content in held_files.items():
            (state / name).write_bytes(content)
        moved = {key: tripwire.url for key in ("server", "cmp_url", "est_url") if key in state_of(state)}
        (state / "state.json").write_text(json.dumps(dict(state_of(state), **moved)))
        for force in ([], ["--force"]):
            renew = agent(*base, "renew", *force, "--renew-before-days", "100000", check=False)
            assert (renew.returncode, renew.stderr) == (0, ""), renew
            assert (
                renew.stdout.startswith("not renewed: the credential was revoked at ") and renew.stdout.count("\n") == 1
            ), renew.stdout
        assert tripwire.connections == 0
    finally:
        tripwire.close()
    again = agent(*base, "revoke", *timers).stdout.splitlines()
    assert again[1] == "deleted %s" % ", ".join(str(state / name) for name in held_files), again
    assert not any((state / name).exists() for name in held_files)
    # It does not come back by itself at its next boot; --force onboards it again.
    boot = agent(*base, "aoki", "--factory-dir", workdir / "factory", "--url", server.url, check=False)
    assert boot.returncode == 3 and "decommissioned" in boot.stderr, boot.stderr
    forced = agent(*base, "aoki", "--factory-dir", workdir / "factory", "--url", server.url, "--force")
    assert "onboarded" in forced.stdout and (state / "key.pem").exists()
    last = agent(*base, "revoke", "--reason", "keyCompromise", *timers).stdout.splitlines()
    assert last[0].endswith("(keyCompromise)") and last[1].startswith("no renewal timer to remove"), last


def test_aoki_refuses_an_owner_the_factory_did_not_trust(server, workdir):
    """The device meets a server whose DevOwnerID chains to another owner: it refuses and writes nothing."""
    aoki = Aoki(server, workdir / "pki", devices=1)
    other = Aoki(server, workdir / "other", devices=1, owner=False)
    state = workdir / "state"
    run = agent(
        "--state-dir",
        state,
        "aoki",
        "--factory-dir",
        factory(aoki, 1, workdir / "factory", owner_ca="../other/ownerid_ca.pem"),
        "--url",
        server.url,
        "--attempts",
        "1",
        check=False,
    )
    assert run.returncode == 1
    assert "refused" in run.stderr and "does not chain to the device's owner trust anchor" in run.stderr, run.stderr
    assert not (state / "key.pem").exists() and not (state / "cert.pem").exists()
    # The server registered the device at init (the IDevID is admitted), but issued nothing.
    (device,) = aoki.devices_on_server()
    assert device["status"] == "pending" and device["credential"] is None
    assert other.devices_on_server() == []


def test_aoki_refuses_a_devownerid_that_does_not_name_the_device(server, workdir):
    """A domain-wide DevOwnerID (dev-owner:ca:) names no IDevID: the mTLS variant cannot check it."""
    aoki = Aoki(server, workdir / "pki", devices=1, owner=False)
    issuing = x509.load_pem_x509_certificates(server.api("GET", "/domains/" + aoki.domain)[1]["ca_chain"].encode())[0]
    aoki.add_owner(*owner_signed(aoki, [aoki_format.ca_reference(issuing)]))
    run = agent(
        "--state-dir",
        workdir / "state",
        "aoki",
        "--factory-dir",
        factory(aoki, 1, workdir / "factory"),
        "--url",
        server.url,
        "--attempts",
        "1",
        check=False,
    )
    assert run.returncode == 1 and "does not name this device's IDevID" in run.stderr, run.stderr


def test_an_onboarded_device_accepts_no_other_owner_later(server, workdir):
    """Anti-rollback: after onboarding, only the same DevOwnerID or one it issued."""
    aoki = Aoki(server, workdir / "pki", devices=1)
    state = workdir / "state"
    args = ["--factory-dir", factory(aoki, 1, workdir / "factory"), "--url", server.url, "--attempts", "1"]
    agent("--state-dir", state, "aoki", *args)
    status, body = server.api("DELETE", "/owner-credentials/" + aoki.owner_name)
    assert status == 204, body
    aoki.add_owner(*owner_signed(aoki, [aoki_format.cert_reference(aoki.idevid(1))]))
    before = (state / "cert.pem").read_bytes()
    run = agent("--state-dir", state, "aoki", "--force", *args, check=False)
    assert run.returncode == 1 and "neither the one this device was onboarded with" in run.stderr, run.stderr
    assert (state / "cert.pem").read_bytes() == before


def test_guided_onboarding_with_a_one_time_token(server, workdir):
    """Register with method agent: the API shows the token and the exact command once; the command
    onboards the device; the same token is refused the second time."""
    domain = server.create_domain()["name"]
    status, body = server.api(
        "POST", "/devices", {"name": "agent-" + domain, "domain": domain, "onboarding_method": "agent"}
    )
    assert status == 201, body
    token, command = body["onboarding_token"], body["agent_command"]
    device_id = body["device"]["id"]
    assert token.startswith("%d." % device_id) and len(token.split(".")) == 3
    assert command == "trustpoint-agent onboard --url https://127.0.0.1:%d --token %s" % (server.port, token)
    assert server.api("GET", "/devices/%d" % device_id)[1].get("onboarding_token") is None

    argv = shlex.split(command)
    assert argv[:2] == ["trustpoint-agent", "onboard"]
    state = workdir / "state"
    run = agent("--state-dir", state, *argv[1:])
    assert "onboarded" in run.stdout
    device = server.device(device_id)
    assert device["status"] == "onboarded" and device["onboarding_method"] == "agent"
    assert chain_root(state) == domain_root(server, domain)
    assert state_of(state)["method"] == "agent"

    # The agent used its new credential once (a genm): the server ended the token's retry window at once.
    again = agent("--state-dir", workdir / "state2", *argv[1:], check=False)
    assert again.returncode == 1 and "already used" in again.stderr, again.stderr
    assert not (workdir / "state2" / "cert.pem").exists()
    # Renewal with kur, over the pinned TLS; used once, the new credential ends the old one's grace period.
    before = x509.load_pem_x509_certificate((state / "cert.pem").read_bytes())
    assert "renewed" in agent("--state-dir", state, "renew", "--force").stdout
    serial = "%x" % before.serial_number
    old = server.api("GET", "/devices/%d/certificates/%s" % (device_id, serial))[1]
    assert (old["status"], old["revocation_reason"]) == ("revoked", "superseded"), old


def test_a_token_for_another_server_is_refused_before_anything_is_sent(server, workdir):
    domain = server.create_domain()["name"]
    _status, body = server.api(
        "POST", "/devices", {"name": "agent-" + domain, "domain": domain, "onboarding_method": "agent"}
    )
    device_id, secret, _pin = body["onboarding_token"].split(".")
    forged = "%s.%s.%s" % (device_id, secret, "A" * 43)
    run = agent("--state-dir", workdir / "state", "onboard", "--url", server.url, "--token", forged, check=False)
    assert run.returncode == 1 and "does not present the TLS anchor the token pins" in run.stderr, run.stderr
    assert server.device(int(device_id))["status"] == "pending"
    # The secret is unspent: the real token still works.
    agent("--state-dir", workdir / "state", "onboard", "--url", server.url, "--token", body["onboarding_token"])


def test_a_new_token_replaces_the_old_one(server, workdir):
    domain = server.create_domain()["name"]
    status, body = server.api(
        "POST", "/devices", {"name": "agent-" + domain, "domain": domain, "onboarding_method": "agent"}
    )
    old = body["onboarding_token"]
    status, renewed = server.api("POST", "/devices/%d/secret" % body["device"]["id"])
    assert status == 200 and renewed["onboarding_token"] != old and "agent_command" in renewed
    run = agent("--state-dir", workdir / "s", "onboard", "--url", server.url, "--token", old, check=False)
    assert run.returncode == 1 and "already used" in run.stderr


def test_status_without_a_credential_and_bad_input(workdir):
    run = agent("--state-dir", workdir / "state", "status", check=False)
    assert run.returncode == 1 and "not onboarded" in run.stdout
    run = agent("--state-dir", workdir / "state", "onboard", "--url", "http://x", "--token", "1.abc", check=False)
    assert run.returncode == 2 and "https://" in run.stderr
    run = agent(
        "--state-dir", workdir / "state", "onboard", "--url", "https://127.0.0.1:1", "--token", "x", check=False
    )
    assert run.returncode == 1 and "not an onboarding token" in run.stderr
    open_dir = workdir / "open"
    open_dir.mkdir(mode=0o777)
    open_dir.chmod(0o777)
    run = agent("--state-dir", open_dir, "status", check=False)
    assert run.returncode == 1 and "writable by another user" in run.stderr


def test_install_timer_writes_a_systemd_timer_or_a_cron_entry_once(workdir):
    units = workdir / "units"
    install = ["--state-dir", workdir / "state", "install-timer", "--mode", "systemd", "--unit-dir", units]
    install += ["--no-enable", "--program", "/usr/local/bin/trustpoint-agent"]
    first = agent(*install)
    assert "wrote" in first.stdout
    service = (units / "trustpoint-agent-renew.service").read_text()
    exec_start = "ExecStart=/usr/local/bin/trustpoint-agent --state-dir %s --key-type ecdsa-p256 renew"
    exec_start %= workdir / "state"
    assert exec_start in service
    assert "OnCalendar=daily" in (units / "trustpoint-agent-renew.timer").read_text()
    assert "up to date" in agent(*install).stdout
    analyze = shutil.which("systemd-analyze")
    if analyze:
        fake = workdir / "trustpoint-agent"
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
        (units / "trustpoint-agent-renew.service").write_text(
            service.replace("/usr/local/bin/trustpoint-agent", str(fake))
        )
        result = subprocess.run(
            [analyze, "verify", str(units / "trustpoint-agent-renew.timer")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr

    cron = workdir / "cron.d" / "trustpoint-agent"
    agent("--state-dir", workdir / "state", "install-timer", "--mode", "cron", "--cron-file", cron)
    line = next(x for x in cron.read_text().splitlines() if not x.startswith("#"))
    minute, hour, *_rest = line.split()
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24 and " root " in line
    # The command cron runs works: it finds the state directory and says there is nothing to renew yet (exit 1),
    # not a usage error (exit 2).
    command = shlex.split(line.split(" root ", 1)[1].split(">/dev/null")[0])
    renew = subprocess.run(
        command, env=dict(os.environ, PYTHONPATH=AGENT_PATH), capture_output=True, text=True, check=False
    )
    assert renew.returncode == 1 and "nothing to renew" in renew.stderr, renew.stderr
    assert (
        "up to date"
        in agent("--state-dir", workdir / "state", "install-timer", "--mode", "cron", "--cron-file", cron).stdout
    )
    assert cron.stat().st_mode & 0o777 == 0o644


def test_uninstall_timer_removes_what_install_timer_wrote_once(workdir):
    """Both kinds by default, one with --mode; a second run changes nothing; a link is removed, not its target."""
    state = ["--state-dir", workdir / "state"]
    paths = timer_paths(workdir)
    units, cron = workdir / "units", workdir / "cron.d" / "trustpoint-agent"
    timer, service = units / "trustpoint-agent-renew.timer", units / "trustpoint-agent-renew.service"
    agent(*state, "install-timer", "--mode", "systemd", "--no-enable", *paths)
    agent(*state, "install-timer", "--mode", "cron", *paths)

    only_cron = agent(*state, "uninstall-timer", "--mode", "cron", *paths).stdout
    assert only_cron == "removed %s\n" % cron and not cron.exists() and timer.exists() and service.exists()
    nothing = agent(*state, "uninstall-timer", "--mode", "cron", *paths).stdout
    assert nothing == "no renewal timer to remove (%s)\n" % cron

    # An operator's file where the cron entry was: the link goes, the file it points to stays.
    kept = workdir / "operator-crontab"
    kept.write_text("# not the agent's\n")
    cron.symlink_to(kept)
    removed = agent(*state, "uninstall-timer", *paths).stdout.splitlines()
    assert removed == ["removed %s, %s" % (timer, service), "removed %s" % cron], removed
    assert not any(os.path.lexists(path) for path in (timer, service, cron)) and kept.exists()
    again = agent(*state, "uninstall-timer", *paths)
    assert again.stdout == "no renewal timer to remove (%s, %s)\n" % (timer, cron) and again.returncode == 0


PYTHON38 = shutil.which("python3.8") and os.path.expanduser("~/.pyenv/versions/3.8.18/bin/python3.8")


def test_the_server_serves_the_agent_wheel_and_it_runs_on_python_38(server, workdir):
    """make agent-wheel's wheel at /agent/: pip installs it (dependencies from the index) into a Python 3.8
    virtualenv without Flask or SQLAlchemy, and that agent onboards a device with a token."""
    wheels = server.data_dir / "agent-wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), AGENT_PATH],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("trustpoint_agent-*.whl")
    status, _headers, page = http("GET", server.url + "/agent/")
    assert status == 200 and wheel.name in page.decode()
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert "%s#sha256=%s" % (wheel.name, digest) in page.decode()
    status, _headers, body = http("GET", server.url + "/agent/" + wheel.name)
    assert status == 200 and body == wheel.read_bytes()
    assert http("GET", server.url + "/agent/..%2Fvault.key")[0] == 404
    status, _headers, pem = http("GET", server.url + "/agent/tls-truststore.pem")
    assert status == 200 and x509.load_pem_x509_certificates(pem)[0] == x509.load_pem_x509_certificate(
        server.ca_file.read_bytes()
    )

    python = PYTHON38 if PYTHON38 and os.path.exists(PYTHON38) else None
    if python is None:
        pytest.fail("Python 3.8 (pyenv 3.8.18) is needed to show that the agent runs on it")
    venv = workdir / "venv38"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
    # pip trusts the server's TLS CA besides the system's (for the package index); requests prefers the
    # environment's bundle over pip's --cert, so both name the combined one.
    bundle = workdir / "ca-bundle.pem"
    system = os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
    system_cas = Path(system).read_bytes() if os.path.exists(system) else b""
    bundle.write_bytes(system_cas + server.ca_file.read_bytes())
    env = dict(os.environ, PIP_CERT=str(bundle), REQUESTS_CA_BUNDLE=str(bundle), CURL_CA_BUNDLE=str(bundle))
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--find-links", server.url + "/agent/", "trustpoint-agent"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    installed = subprocess.run([str(venv / "bin" / "pip"), "list"], capture_output=True, text=True, check=True).stdout
    assert "trustpoint-agent" in installed and "zeroconf" in installed
    assert "Flask" not in installed and "SQLAlchemy" not in installed

    domain = server.create_domain()["name"]
    status, body = server.api(
        "POST", "/devices", {"name": "py38-" + domain, "domain": domain, "onboarding_method": "agent"}
    )
    assert status == 201, body
    argv = shlex.split(body["agent_command"])
    run = subprocess.run(
        [str(venv / "bin" / "trustpoint-agent"), "--state-dir", str(workdir / "state"), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert server.device(body["device"]["id"])["status"] == "onboarded"


def test_aoki_with_an_idevid_below_an_intermediate_ca(server, workdir):
    """The agent sends the IDevID's intermediates (idevid-chain.pem) in the TLS handshake: a truststore with
    only the manufacturer's root admits it."""
    from cmp_helpers import create_registration, create_truststore, make_ca, make_end_entity, write_key, write_pem

    aoki = Aoki(server, workdir / "pki", devices=1, owner=False)
    root = make_ca(unique_name("Vendor Root"))
    intermediate = make_ca(unique_name("Vendor Devices"), issuer=root)
    idevid = make_end_entity(intermediate, "chained", "CHAIN-0001", ["urn:uuid:" + unique_name("u")])
    create_registration(server, aoki.domain, create_truststore(server, [root.certificate]), "CHAIN-[0-9]{4}")
    aoki.add_owner(*owner_signed(aoki, [aoki_format.cert_reference(idevid.certificate)]))
    factory_dir = workdir / "factory"
    factory_dir.mkdir()
    write_pem(factory_dir / "idevid.pem", [idevid.certificate])
    write_key(factory_dir / "idevid.key", idevid.key)
    write_pem(factory_dir / "idevid-chain.pem", idevid.chain)
    shutil.copy(aoki.dir / "ownerid_ca.pem", factory_dir / "owner-truststore.pem")
    assert idevid.chain == [intermediate.certificate]
    agent(
        "--state-dir", workdir / "state", "aoki", "--factory-dir", factory_dir, "--url", server.url, "--attempts", "1"
    )
    (device,) = aoki.devices_on_server()
    assert device["serial_number"] == "CHAIN-0001" and device["status"] == "onboarded"


def unique_name(prefix):
    from aoki_helpers import unique

    return unique(prefix)


@pytest.mark.parametrize(
    "lost",
    [
        pytest.param(2, id="ip"),  # 1: the TLS truststore, 2: ir -> ip, 3: certConf -> pkiConf, 4: genm
        pytest.param(3, id="pkiconf"),
    ],
)
def test_guided_onboarding_and_renewal_finish_when_an_answer_is_lost(server, workdir, lost):
    """The proxy loses one answer; the agent sends again by itself and ends up with the credential the server
    holds for it, then renews through a lost kup the same way."""
    domain = server.create_domain()["name"]
    _status, body = server.api(
        "POST", "/devices", {"name": "lost-%d-%s" % (lost, domain), "domain": domain, "onboarding_method": "agent"}
    )
    device_id = body["device"]["id"]
    state = workdir / "state"
    with DroppingProxy(("127.0.0.1", server.port), drop={lost}) as proxy:
        agent("--state-dir", state, "onboard", "--url", proxy.url("https"), "--token", body["onboarding_token"])
        assert proxy.dropped == [lost], "the proxy lost no answer (%d connections)" % proxy.connections
        credential = server.device(device_id)["credential"]
        assert (credential["fingerprint_sha256"], credential["status"]) == (held(state), "active"), credential

        proxy.reset(drop={1})  # kur -> kup
        assert "renewed" in agent("--state-dir", state, "renew", "--force").stdout
        assert proxy.dropped == [1]
        credential = server.device(device_id)["credential"]
        assert (credential["fingerprint_sha256"], credential["status"]) == (held(state), "active"), credential


def test_revoke_without_a_credential_decommissions_the_device(workdir):
    """A device that never onboarded (or whose files were wiped) has nothing to revoke; it is recorded as
    decommissioned all the same, so that its zero-touch service does not onboard it later. A state directory that
    does not exist (a mistyped --state-dir) is an error and stays absent."""
    timers = timer_paths(workdir)
    missing = agent("--state-dir", workdir / "typo", "revoke", *timers, check=False)
    assert missing.returncode == 1 and "nothing to revoke" in missing.stderr, missing.stderr
    assert not (workdir / "typo").exists()
    state = workdir / "state"
    state.mkdir(mode=0o700)
    agent("--state-dir", state, "install-timer", "--mode", "cron", *timers)
    run = agent("--state-dir", state, "revoke", *timers).stdout.splitlines()
    assert run[0].startswith("decommissioned: the device holds no credential") and run[1].startswith("removed "), run
    recorded = state_of(state)
    assert recorded["revoked_at"] and recorded["revoked_serial_number"] is None, recorded
    again = agent("--state-dir", state, "revoke", *timers).stdout.splitlines()
    assert again[0] == "already decommissioned at %s (it held no credential)" % recorded["revoked_at"], again
    bad = agent("--state-dir", state, "revoke", "--reason", "removeFromCRL", check=False)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr, bad.stderr


def test_aoki_stops_when_the_device_is_decommissioned_while_it_waits_for_the_server(server, workdir):
    """aoki retries with back-off while no server answers; a revoke meanwhile ends it (exit 3) before its next round,
    instead of letting it onboard the decommissioned device once the server is back."""
    aoki = Aoki(server, workdir / "pki", devices=1)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    state = workdir / "state"
    command = [
        sys.executable,
        "-m",
        "trustpoint_agent.cli",
        "--state-dir",
        str(state),
        "aoki",
        "--factory-dir",
        str(factory(aoki, 1, workdir / "factory")),
        "--url",
        "https://127.0.0.1:%d" % closed.getsockname()[1],
    ]
    looping = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=AGENT_PATH), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for _poll in range(100):  # its first round failed: it waits 2.5-5 s before the next
            if (state / ".lock").exists():
                break
            time.sleep(0.1)
        time.sleep(0.5)
        assert looping.poll() is None, looping.communicate()
        run = agent("--state-dir", state, "revoke", *timer_paths(workdir)).stdout
        assert run.startswith("decommissioned: "), run
        _out, err = looping.communicate(timeout=30)
    finally:
        closed.close()
        if looping.poll() is None:
            looping.kill()
            looping.communicate()
    assert looping.returncode == 3 and "decommissioned" in err, err
    assert "Traceback" not in err and not (state / "key.pem").exists()


def test_without_retries_a_lost_answer_fails_with_a_message(server, workdir):
    domain = server.create_domain()["name"]
    _status, body = server.api(
        "POST", "/devices", {"name": "noretry-" + domain, "domain": domain, "onboarding_method": "agent"}
    )
    with DroppingProxy(("127.0.0.1", server.port), drop={2}) as proxy:
        run = agent(
            "--retries", "0", "--state-dir", workdir / "s", "onboard",
            "--url", proxy.url("https"), "--token", body["onboarding_token"], check=False,
        )  # fmt: skip
    assert run.returncode == 1 and run.stderr.strip(), run.stderr
    assert not (workdir / "s" / "cert.pem").exists()
