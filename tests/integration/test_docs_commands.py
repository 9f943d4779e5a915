# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The command blocks of docs/server.md, docs/web.md and docs/onboarding.md, run as written against real servers:
only placeholders (DATA, <server>, <device id>, ...), paths under /var and /etc, and fixed ports are replaced.
The Ansible deployment of docs/server.md is checked without hosts (syntax, variables); the role's tests deploy it."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time
import uuid

import yaml
from conftest import BIN, REPO, Server, free_port, http, openssl, require_binary
from doc_blocks import run_strict, section_blocks
from page_client import PageClient

DOCS = REPO / "docs"
# The documented commands call `trustpoint-server` as installed: the checkout's virtualenv comes first on PATH.
ENV = dict(
    {k: v for k, v in os.environ.items() if not k.startswith("TRUSTPOINT_")}, PATH="%s:%s" % (BIN, os.environ["PATH"])
)


def one_block(path, title, language="sh"):
    (block,) = section_blocks(path, title, language)
    return block


def wait_until_healthy(url, process, **kwargs):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server stopped (%s)" % process.returncode
        try:
            if http("GET", url + "/healthz", timeout=2, **kwargs)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not answer at %s" % url)


def stop(process):
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- docs/web.md: operators ----------------------------------------------------------------------


def run_on_a_terminal(script, cwd, env, answers, timeout=60):
    """(exit status, output) of script run by bash on a terminal of its own (getpass reads /dev/tty): each
    (prompt, answer) of answers in turn is typed once the prompt shows after the previous one."""
    pid, master = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        try:
            os.chdir(cwd)
            os.execve(shutil.which("bash"), ["bash", "-euo", "pipefail", "-c", script], env)  # noqa: S606 (no shell)
        finally:
            os._exit(127)
    output, seen, pending, deadline = b"", 0, list(answers), time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every process of the terminal has closed it
                    break
                if not chunk:
                    break
                output += chunk
            if pending and output.find(pending[0][0].encode(), seen) >= 0:
                prompt, answer = pending.pop(0)
                seen = output.find(prompt.encode(), seen) + len(prompt)
                os.write(master, answer.encode() + b"\n")
    finally:
        status = os.waitpid(pid, 0)[1]
        os.close(master)
    assert not pending, "no prompt %r in:\n%s" % (pending[0][0], output.decode(errors="replace"))
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace").replace("\r\n", "\n")


def test_web_md_operator_commands(tmp_path):
    """docs/web.md, "Signing in": the operator commands, typed passwords and all; the server then signs in exactly
    the operators they left, with the passwords they set."""
    script = one_block(DOCS / "web.md", "Signing in")
    assert script.count("--data-dir DATA") == 6 and "$PASSWORD" in script
    # The server runs meanwhile (operators are managed beside it): it signs in what the commands leave.
    server = Server(tmp_path / "data", free_port())
    try:
        script = script.replace("--data-dir DATA", "--data-dir data")
        first, second, ci = ("alice's first password", "alice's second password", "the password of ci")
        prompts = [
            ("password for alice: ", first),
            ("the same password again: ", first),
            ("password for alice: ", second),
            ("the same password again: ", second),
        ]
        status, output = run_on_a_terminal(script, tmp_path, dict(ENV, PASSWORD=ci), prompts)
        assert status == 0, output
        assert "Traceback" not in output
        assert "created the operator alice\n" in output and "set a new password for alice\n" in output
        (bob,) = re.findall(r"created the operator bob; password: (\S+)", output)
        assert "created the operator ci\n" in output and "deleted the operator bob" in output
        listed = re.findall(r"^(\w+)\tlast sign-in never$", output, re.M)
        assert listed == ["admin", "alice", "bob", "ci"]
        for username, password, signed_in in [
            ("alice", second, True),
            ("alice", first, False),
            ("ci", ci, True),
            ("bob", bob, False),
        ]:
            status = PageClient(server).sign_in(username, password)[0]
            assert (status in (302, 303)) == signed_in, (username, password, status)
    finally:
        server.stop()


# --- docs/server.md: init and run, with options and with a configuration file --------------------


def run_in_background(line, cwd):
    """The process of a documented `run` line, its output in cwd/server.log."""
    with (cwd / "server.log").open("wb") as log:
        return subprocess.Popen(["bash", "-c", "exec " + line], cwd=cwd, env=ENV, stdout=log, stderr=subprocess.STDOUT)


def init_and_run(tmp_path, init, run, https, plain):
    """Run a documented init line, then its run line until the server answers on plain HTTP at plain and on HTTPS
    at https as trustpoint.example.com (the docs' TLS name: curl checks the certificate carries it); the
    server's output."""
    subprocess.run(["bash", "-c", init], cwd=tmp_path, env=ENV, check=True, capture_output=True)
    process = run_in_background(run, tmp_path)
    try:
        wait_until_healthy("http://127.0.0.1:%d" % plain, process)
        name = "trustpoint.example.com"
        result = subprocess.run(
            [require_binary("curl"), "-sf", "--cacert", str(tmp_path / "data" / "tls-ca.pem"),
             "--resolve", "%s:%d:127.0.0.1" % (name, https), "https://%s:%d/healthz" % (name, https)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0 and json.loads(result.stdout) == {"status": "ok"}, result
    finally:
        stop(process)
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log
    return log


def test_server_md_init_and_run(tmp_path):
    """docs/server.md's first block: init with a TLS name, run on every address."""
    lines = section_blocks(DOCS / "server.md", "Running the enrollment server", "sh")[0].splitlines()
    assert lines[0].startswith("pip install .")  # the checkout's virtualenv has it
    init, run = lines[1:]
    https, plain = free_port(), free_port()
    init = init.replace("/var/lib/trustpoint", "data")
    run = run.replace("/var/lib/trustpoint", "data").replace(":8443", ":%d" % https).replace(":8080", ":%d" % plain)
    init_and_run(tmp_path, init, run, https, plain)


def test_server_md_init_and_run_with_a_configuration_file(tmp_path):
    """docs/server.md, "Settings": the example file and the two commands that read it."""
    (toml,) = section_blocks(DOCS / "server.md", "Settings", "toml")
    (commands,) = section_blocks(DOCS / "server.md", "Settings", "sh")
    https, plain = free_port(), free_port()
    toml = toml.replace("/var/lib/trustpoint-server", str(tmp_path / "data"))
    toml = toml.replace(":8443", ":%d" % https).replace("0.0.0.0:8080", "0.0.0.0:%d" % plain)
    config = tmp_path / "server.toml"
    config.write_text(toml)
    init, run = commands.replace("/etc/trustpoint-server/server.toml", str(config)).splitlines()
    init_and_run(tmp_path, init, run, https, plain)


def test_server_md_vault_key_rotation_then_migrate(tmp_path):
    """docs/server.md, "Secrets at rest" and "Upgrading": rotate-vault-key with the key file outside the data
    directory, then migrate, as written. The TLS CA key decrypts under the new key only after the rotation."""
    (rotate,) = section_blocks(DOCS / "server.md", "Secrets at rest", "sh")
    (migrate,) = section_blocks(DOCS / "server.md", "Upgrading", "sh")
    (tmp_path / "etc").mkdir(mode=0o700)
    key_file = tmp_path / "etc" / "vault.key"
    init = "trustpoint-server init --data-dir data --vault-key-file etc/vault.key"
    subprocess.run(["bash", "-c", init], cwd=tmp_path, env=ENV, check=True, capture_output=True)
    old_key = key_file.read_bytes()

    def paths(line):
        return line.replace("/var/lib/trustpoint", "data").replace("/etc/trustpoint/", "etc/")

    result = run_strict(paths(rotate), tmp_path, env=ENV)
    assert result.returncode == 0, result
    assert key_file.read_bytes() != old_key
    (retired,) = (tmp_path / "etc").glob("vault.key.retired-*")
    assert retired.read_bytes() == old_key
    # A new TLS name makes init issue a server certificate with the TLS CA's key: it must decrypt under the new key.
    reissue = ["bash", "-c", init + " --tls-san rotated.example.com"]
    subprocess.run(reissue, cwd=tmp_path, env=ENV, capture_output=True, check=True)
    served = openssl("x509", "-in", str(tmp_path / "data" / "tls-cert.pem"), "-noout", "-text").stdout
    assert "rotated.example.com" in served
    result = run_strict(paths(migrate), tmp_path, env=ENV)
    assert result.returncode == 0 and "Traceback" not in result.stdout + result.stderr, result


def options(role, entry_point="main"):
    """The variables an entry point of one of the collection's roles declares."""
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return set(specs["argument_specs"][entry_point]["options"])


def test_server_md_ansible_deployment(tmp_path):
    """docs/server.md, "Deploying with Ansible": the inventory as the block names it, read by ansible-inventory; the
    documented command under --syntax-check; every variable the blocks set declared by the role it is meant for,
    of the type that role's argument spec wants and passing the role's own checks; the device playbooks' lines
    finding what the role fetches.

    The deployment itself is too slow for this file: test_server_role.py and the Molecule scenario run the role."""
    (inventory,) = section_blocks(DOCS / "server.md", "Deploying with Ansible", "yaml")
    (commands,) = section_blocks(DOCS / "server.md", "Deploying with Ansible", "sh")
    name = re.match(r"# (\S+)\n", inventory).group(1)
    (tmp_path / name).write_text(inventory)
    env = dict(ENV, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"), ANSIBLE_NOCOLOR="1")

    listed = subprocess.run(["ansible-inventory", "-i", name, "--list"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert listed.returncode == 0 and "[WARNING]" not in listed.stderr, listed
    hostvars = json.loads(listed.stdout)["_meta"]["hostvars"]
    assert list(hostvars) == ["tp1"], hostvars
    role_vars = {key for key in hostvars["tp1"] if not key.startswith("ansible_")}
    assert role_vars and not role_vars - options("trustpoint_server"), role_vars - options("trustpoint_server")

    deploy, *device_lines = commands.splitlines()
    assert deploy.startswith("ansible-playbook -i %s " % name), deploy
    result = run_strict(deploy + " --syntax-check", tmp_path, env=env)
    assert result.returncode == 0 and "[WARNING]" not in result.stderr, result
    # The commented lines, variables of the device playbooks (onboard_devices.yml: device_onboarding's main).
    device_vars = yaml.safe_load("".join(line[1:] + "\n" for line in device_lines if re.match(r"#\s+\w+:", line)))
    assert set(device_vars) <= options("device_onboarding"), set(device_vars) - options("device_onboarding")

    # The role's own argument spec on the inventory's values (templated), and the device variables on the files
    # fetch.yml writes: <fetch dir>/<inventory host>/admin-token and tls-ca.pem.
    fetched = tmp_path / "trustpoint" / "tp1"
    fetched.mkdir(parents=True)
    (fetched / "admin-token").write_text("tp_token_of_tp1\n")
    (fetched / "tls-ca.pem").write_text("the trust anchor\n")
    (tmp_path / "device-vars.yml").write_text(yaml.safe_dump(device_vars))
    spec = REPO / "roles" / "trustpoint_server" / "meta" / "argument_specs.yml"
    check = [{
        "name": "Check the documented variables",
        "hosts": "trustpoint_servers",
        "gather_facts": False,
        # what the role's validation reads besides the variables (a host with systemd; nothing connects to it)
        "vars": {"ansible_facts": {"service_mgr": "systemd", "os_family": "Debian"},
                 "__trustpoint_server_manager": "systemd"},
        "tasks": [
            {"name": "Check the inventory's variables against the role's argument spec",
             "ansible.builtin.validate_argument_spec": {
                 "argument_spec": "{{ (lookup('file', '%s') | from_yaml).argument_specs.main.options }}" % spec}},
            {"name": "Check them as the role does before it changes anything",
             "ansible.builtin.include_role": {"name": "trustpoint.pki.trustpoint_server", "tasks_from": "validate"}},
            {"name": "Check that the device playbooks' lines find the fetched files",
             "ansible.builtin.assert": {"that": [
                 "trustpoint_api_token == 'tp_token_of_tp1'",
                 "trustpoint_ca_path == trustpoint_server_fetch_dir ~ '/' ~ inventory_hostname ~ '/tls-ca.pem'",
                 "trustpoint_ca_path is file",
             ]}},
        ],
    }]  # fmt: skip
    (tmp_path / "check.yml").write_text(yaml.safe_dump(check, sort_keys=False))
    result = subprocess.run(["ansible-playbook", "-i", name, "check.yml", "-e", "@device-vars.yml"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"tp1 +: ok=\d+ .* failed=0 ", result.stdout) and "skipping" not in result.stdout, result.stdout


# --- docs/onboarding.md: openssl cmp, curl and openssl against the session server ----------------


def placeholders(server, **values):
    """A function that fills a docs block: the server's URLs, tls-ca.pem's, and <name> from values."""

    def fill(script):
        script = script.replace("http://<server>:8080", server.cmp_url).replace("https://<server>:8443", server.url)
        for name, value in values.items():
            script = script.replace("<%s>" % name.replace("_", " "), str(value))
        assert "<" not in script.replace("<<", ""), script
        return script

    return fill


def test_onboarding_md_cmp_by_hand_then_with_the_credential(server, tmp_path):
    """ "CMP with a shared secret, by hand" and the openssl cmp block of "After onboarding", one after the
    other on one device: onboard, an application certificate, revoke it, CA certificates, renew."""
    require_binary("openssl")
    domain = server.create_domain()["name"]
    device, secret = server.create_device(domain)
    status, body = server.api(
        "PATCH", "/devices/%d" % device["id"], {"allowed_names": ["DNS:plc.local", "IP:10.0.5.11"]}
    )
    assert status == 200, body
    fill = placeholders(server, domain=domain, device_id=device["id"], shared_secret=secret)
    (onboard,) = section_blocks(DOCS / "onboarding.md", "CMP with a shared secret, by hand", "sh")
    (after, _est) = section_blocks(DOCS / "onboarding.md", "After onboarding: CMP and EST with the domain credential",
                                   "sh")  # fmt: skip
    result = run_strict(fill(onboard) + fill(after), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    cert = openssl("x509", "-in", str(tmp_path / "cert.pem"), "-noout", "-subject", "-serial").stdout
    assert "CN=%s" % device["name"] in cert.replace(" = ", "=")
    openssl("verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "chain.pem"),
            str(tmp_path / "cert.pem"))  # fmt: skip
    tls = openssl("x509", "-in", str(tmp_path / "tls.pem"), "-noout", "-ext", "subjectAltName", "-serial").stdout
    assert "DNS:plc.local" in tls and "IP Address:10.0.5.11" in tls
    assert not (tmp_path / "new-cert.pem").exists() and not (tmp_path / "new-key.pem").exists()
    state = server.device(device["id"])
    # the renewed credential is cert.pem now, for key.pem
    serial = cert.split("serial=")[1].strip().lower().lstrip("0")
    assert state["credential"]["serial_number"] == serial, state
    assert (
        openssl("x509", "-in", str(tmp_path / "cert.pem"), "-noout", "-pubkey").stdout
        == openssl("pkey", "-in", str(tmp_path / "key.pem"), "-pubout").stdout
    )
    certificates = server.api("GET", "/devices/%d/certificates" % device["id"])[1]
    tls_serial = tls.split("serial=")[1].strip().lower().lstrip("0")
    by_serial = {c["serial_number"]: c for c in certificates}
    assert by_serial[tls_serial]["status"] == "revoked", by_serial


def test_onboarding_md_est_with_curl_and_openssl(server, tmp_path):
    """The EST block of "After onboarding": CA certificates, enroll with the password, renew with the certificate."""
    require_binary("curl")
    domain = server.create_domain()["name"]
    name = "est-" + uuid.uuid4().hex[:10]
    status, body = server.api("POST", "/devices", {"name": name, "domain": domain, "onboarding_method": "est_password"})
    assert status == 201, body
    fill = placeholders(server, domain=domain, device_name=name, password=body["password"])
    (_cmp, est) = section_blocks(DOCS / "onboarding.md", "After onboarding: CMP and EST with the domain credential",
                                 "sh")  # fmt: skip
    shutil.copy(server.ca_file, tmp_path / "tls-ca.pem")  # the server's TLS trust anchor, as the docs expect it
    result = run_strict(fill(est), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    for issued, key in (("cert.pem", "key.pem"), ("new-cert.pem", "new-key.pem")):
        text = openssl("x509", "-in", str(tmp_path / issued), "-noout", "-subject", "-pubkey").stdout
        assert "CN=%s" % name in text.replace(" = ", "="), text
        assert openssl("pkey", "-in", str(tmp_path / key), "-pubout").stdout in text
        openssl("verify", "-CAfile", str(tmp_path / "cacerts.pem"), "-partial_chain", str(tmp_path / issued))
    state = server.device(body["device"]["id"])
    serial = openssl("x509", "-in", str(tmp_path / "new-cert.pem"), "-noout", "-serial").stdout
    assert state["status"] == "onboarded"
    assert state["credential"]["serial_number"] == serial.split("=")[1].strip().lower().lstrip("0"), state


def test_web_md_certificates_without_onboarding(server, tmp_path):
    """docs/web.md, "Devices without onboarding": a tls_server certificate for the device's CSR, then an opc_ua one
    with a key the server generates, as a PKCS#12 opened with the password from the environment."""
    require_binary("curl")
    require_binary("jq")
    domain = server.create_domain()["name"]
    device, secret = server.create_device(domain, method="none")
    assert secret is None
    names = ["DNS:plc-7.plant1.example", "URI:urn:plant1:plc-7"]
    status, body = server.api("PATCH", "/devices/%d" % device["id"], {"allowed_names": names})
    assert status == 200, body
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc", "-keyout", "plc.key",
            "-subj", "/CN=" + device["name"], "-addext", "subjectAltName=DNS:plc-7.plant1.example", "-out", "plc.csr",
            cwd=tmp_path)  # fmt: skip
    shutil.copy(server.ca_file, tmp_path / "tls-ca.pem")
    # A password that a JSON string typed by hand or an unquoted shell word would break.
    password = 'plant 1\'s "PLC" $7 \\ key'
    block = placeholders(server, id=device["id"], name=device["name"])(one_block(DOCS / "web.md", "Devices without"))
    # Without the exported password the block stops at the PKCS#12 with the server's reason.
    (tmp_path / "unset").mkdir()
    for name in ("plc.csr", "tls-ca.pem"):
        shutil.copy(tmp_path / name, tmp_path / "unset")
    result = run_strict(block, tmp_path / "unset", env=dict(ENV, TOKEN=server.token))
    assert result.returncode != 0 and "pkcs12_password must be" in result.stderr, result
    assert not (tmp_path / "unset" / "plc-7.pem").exists()
    result = run_strict(block, tmp_path, env=dict(ENV, TOKEN=server.token, P12_PASSWORD=password))
    assert result.returncode == 0, result.stdout + result.stderr

    # plc.pem: a tls_server certificate for the CSR's key
    def public_key(command, *args):
        options = ["-pubout"] if command == "pkey" else ["-pubkey", "-noout"]
        return openssl(command, *args, *options, cwd=tmp_path).stdout

    assert public_key("x509", "-in", "plc.pem") == public_key("pkey", "-in", "plc.key")
    plc = openssl("x509", "-in", "plc.pem", "-noout", "-serial", "-ext", "extendedKeyUsage,subjectAltName",
                  cwd=tmp_path).stdout  # fmt: skip
    assert "TLS Web Server Authentication" in plc and "DNS:plc-7.plant1.example" in plc, plc
    by_serial = {c["serial_number"]: c for c in server.api("GET", "/devices/%d/certificates" % device["id"])[1]}
    assert by_serial[plc.split("serial=")[1].split()[0].lower().lstrip("0")]["profile"] == "tls_server", by_serial

    # plc-7.p12: opens with the password only, and holds the key and an opc_ua certificate with the plant's URI
    wrong = openssl("pkcs12", "-in", "plc-7.p12", "-passin", "pass:not the password", "-noout", check=False,
                    cwd=tmp_path)  # fmt: skip
    assert wrong.returncode != 0
    env = dict(ENV, P12_PASSWORD=password)
    opened = openssl("pkcs12", "-in", "plc-7.p12", "-passin", "env:P12_PASSWORD", "-noenc", env=env,
                     cwd=tmp_path).stdout  # fmt: skip
    assert opened.count("-----BEGIN PRIVATE KEY-----") == 1 and "-----BEGIN CERTIFICATE-----" in opened
    (tmp_path / "p12.pem").write_text(opened)
    assert public_key("pkey", "-in", "p12.pem") == public_key("x509", "-in", "p12.pem")
    # the files the block took out of it: the same certificate, and the key under the same password, 0600
    assert public_key("x509", "-in", "plc-7.pem") == public_key("x509", "-in", "p12.pem")
    key = openssl("pkey", "-in", "plc-7-key.pem", "-passin", "env:P12_PASSWORD", "-pubout", env=env, cwd=tmp_path)
    assert key.stdout == public_key("x509", "-in", "plc-7.pem")
    assert "ENCRYPTED PRIVATE KEY" in (tmp_path / "plc-7-key.pem").read_text()
    for name in ("plc-7.p12", "plc-7-key.pem"):
        assert (tmp_path / name).stat().st_mode & 0o077 == 0, name
    opc_ua = openssl("x509", "-in", "plc-7.pem", "-noout", "-ext", "extendedKeyUsage,subjectAltName",
                     cwd=tmp_path).stdout  # fmt: skip
    assert "URI:urn:plant1:plc-7" in opc_ua, opc_ua
    assert "TLS Web Server Authentication" in opc_ua and "TLS Web Client Authentication" in opc_ua, opc_ua
    assert server.device(device["id"])["status"] == "no_onboarding"


def test_onboarding_md_names_every_variable_of_the_role():
    """README.md sends readers to docs/onboarding.md for every variable of the device_onboarding role: five were
    missing. (docs/server.md sends them to the trustpoint_server role's argument spec itself.)"""
    text = (DOCS / "onboarding.md").read_text()
    missing = sorted(name for name in options("device_onboarding") if "`%s`" % name not in text)
    assert not missing, "docs/onboarding.md does not name " + ", ".join(missing)
