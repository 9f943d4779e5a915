#!/usr/bin/env python
# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make demo`: four SSH device hosts receive their domain credentials from the bundled server.

    .venv/bin/python tools/demo.py [--keep] [--dir DIR] [--port PORT]

  1. tools/testbed.py starts trustpoint-server (HTTPS, trusted through its TLS CA tls-ca.pem) and
     four device hosts, each a network namespace with its own sshd on a private bridge (prefix tpd,
     bridge tpbr78, 169.254.78.0/24, port 8478: apart from the Molecule scenario's
     tpm/tpbr77/169.254.77/8470).
  2. ansible-playbook runs trustpoint.pki.onboard_devices: the domain `demo` is created
     (trustpoint_create_domain=true), each host is
     registered and generates its key, and enrolls: device1 over CMP with a shared secret and device2
     over EST with a password, both with the python backend (the virtualenv's Python); device3 over
     CMP with the openssl backend (the system Python).
  3. Zero-touch: device4 gets only what a factory gives it (an IDevID and its owner's trust anchor) and
     runs `trustpoint-agent aoki`: it finds the server over mDNS, checks its DevOwnerID and enrolls.
  4. The server's REST API reports what it issued (device id, serial, expiry), and the operator's web pages
     show the same devices after a sign-in (the URL and the sign-in are printed).
  5. Each device's certificate, read over SSH, is checked with `openssl verify` against the domain's
     root CA and compared with the server's record.
  6. tools/testbed.py down removes everything, also on failure or Ctrl-C (except with --keep).

Runs as root (network namespaces). State lives in DIR (default ~/.cache/trustpoint-demo, not /tmp:
sshd's StrictModes); every run starts from scratch and removes DIR after a successful run.
"""

from __future__ import annotations

import argparse
import html
import http.cookiejar
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
TESTBED = REPO / "tools" / "testbed.py"
COLLECTIONS = REPO / "build" / "collections"
DEFAULT_DIR = "~/.cache/trustpoint-demo"
MARKER = ".trustpoint-demo"  # marks DIR as ours: only such a directory is ever removed

PREFIX, BRIDGE, SUBNET, PORT = "tpd", "tpbr78", "169.254.78", 8478  # default port; --port
DOMAIN = "demo"
HOSTS = {"device1": 11, "device2": 12, "device3": 13, "device4": 14}  # name: last octet of its address
ZERO_TOUCH_HOSTS = ("device4",)  # onboard by themselves (AOKI), not through the playbook
OPENSSL_HOSTS = ("device3",)  # system Python, `openssl cmp`; the others use the virtualenv's Python
# How each host onboards (the others: CMP with a shared secret).
METHODS = {"device2": "est_password"}
SYSTEM_PYTHON = "/usr/bin/python3"
CREDENTIAL = "/etc/trustpoint/domain_credential.pem"
# The agent's files on a zero-touch host (in the testbed's private directories).
AGENT_FACTORY = "/etc/trustpoint/factory"
AGENT_STATE = "/var/lib/trustpoint/agent"
PHASES = 6


class DemoError(Exception):
    """A failed step: printed as one clear message, exit code 1."""


class Interrupted(Exception):
    """SIGTERM or SIGHUP: handled like Ctrl-C."""


def _interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


# --------------------------------------------------------------------------- output

COLOR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def style(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if COLOR else text


def phase(number: int, title: str) -> None:
    print("\n" + style(f"[{number}/{PHASES}] {title}", "1;36"), flush=True)


def say(text: str = "") -> None:
    print(f"      {text}" if text else "", flush=True)


def short(path: Path) -> str:
    """A path as the reader would type it: relative inside the repository, absolute elsewhere."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def show_command(cmd: Sequence[str] | str) -> None:
    """Print the command a step runs, in a form the reader can copy."""
    if not isinstance(cmd, str):
        cmd = shlex.join(short(Path(w)) if w.startswith(str(REPO) + "/") else w for w in cmd)
    print(style("    $ " + cmd, "2"), flush=True)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("    " + line for line in lines)


# --------------------------------------------------------------------------- helpers


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DemoError(f"{name} is not installed (Debian package {package}); `make demo` installs it")
    return path


def venv_tool(name: str) -> str:
    """A program of the virtualenv this script runs in (not resolved: the venv's bin/ is the point)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    raise DemoError(f"{name} not found next to {sys.executable}; run `make demo` (it sets up .venv)")


def capture(cmd: Sequence[str], what: str, cwd: Optional[Path] = None) -> str:
    proc = subprocess.run(
        list(cmd), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise DemoError(f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def write_private(path: Path, text: str) -> None:
    """Write a file that only root may read (created 0600, never wider)."""
    path.unlink(missing_ok=True)
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML string


# --------------------------------------------------------------------------- the demo


class Demo:
    def __init__(self, directory: Path, port: int = PORT, keep: bool = False) -> None:
        self.dir = directory
        self.port = port
        self.keep = keep
        self.server: Dict[str, Any] = {}
        self.token = ""
        self.backends: Dict[str, str] = {}
        self.touched = False  # whether this run changed the machine (and so must clean up)
        self.ansible_playbook = ""
        self.playbook_cmd: List[str] = []
        self.playbook_env: Dict[str, str] = {}

    # ---- 1
    def start(self) -> None:
        phase(1, "Start the enrollment server (advertising AOKI over mDNS) and four SSH device hosts")
        if os.geteuid() != 0:
            raise DemoError("run as root: the device hosts are network namespaces with their own sshd")
        for name, package in (("openssl", "openssl"), ("ssh", "openssh-client")):
            tool(name, package)
        self.ansible_playbook = venv_tool("ansible-playbook")
        collections = os.environ.get("ANSIBLE_COLLECTIONS_PATH") or str(COLLECTIONS)
        if not any((Path(p) / "ansible_collections/trustpoint/pki").exists() for p in collections.split(os.pathsep)):
            raise DemoError(f"trustpoint.pki is not on ANSIBLE_COLLECTIONS_PATH ({collections}); run `make demo`")
        self.playbook_env = {"ANSIBLE_COLLECTIONS_PATH": collections}
        self.prepare_dir()
        cmd = [
            sys.executable, str(TESTBED), "up", "--dir", str(self.dir),
            "--prefix", PREFIX, "--bridge", BRIDGE, "--subnet", SUBNET, "--server-port", str(self.port),
            "--server-mdns", "--python-interpreter", "",  # set per host below
        ]  # fmt: skip
        for name, octet in HOSTS.items():
            cmd += ["--host", f"{name}:{octet}"]
        show_command(cmd)
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False).returncode
        if rc != 0:
            raise DemoError(f"tools/testbed.py up failed (exit {rc}); its message is above")
        try:
            self.server = json.loads((self.dir / "server.json").read_text())
            self.token = Path(self.server["token_file"]).read_text().strip()
            Path(self.server["ca_file"]).read_bytes()  # the TLS trust anchor every request needs
        except (OSError, ValueError, KeyError) as exc:
            raise DemoError(f"cannot read the server's address, token and TLS CA from {self.dir}: {exc}") from None

    def prepare_dir(self) -> None:
        """Start from scratch: take down and remove what an earlier demo left in DIR (ours only)."""
        if self.dir.exists():
            if not (self.dir / MARKER).exists() and any(self.dir.iterdir()):
                raise DemoError(f"{self.dir} exists and was not made by the demo; remove it or choose --dir")
            self.touched = True
            if (self.dir / "testbed-state.json").exists():
                say(f"an earlier demo left {self.dir}: making sure it is down, then starting afresh")
                self.close_ssh_connections()
                if not self.testbed_down():
                    raise DemoError("cannot take down what an earlier demo left behind; see above")
            shutil.rmtree(self.dir)
        self.touched = True
        self.dir.mkdir(parents=True)
        os.chmod(self.dir, 0o700)
        (self.dir / MARKER).write_text("state of tools/demo.py; removed by the next run\n")

    # ---- 2
    def onboard(self) -> None:
        phase(2, "Onboard the devices with Ansible (trustpoint.pki.onboard_devices)")
        # The testbed's inventory has the hosts and their SSH settings; this one adds which Python
        # each host runs Ansible's modules with, and so which enroll backend it uses.
        hosts = []
        for name in HOSTS:
            if name in ZERO_TOUCH_HOSTS:
                continue
            method = METHODS.get(name, "cmp_shared_secret")
            if name in OPENSSL_HOSTS:
                hosts += [
                    f"        {name}:",
                    f"          ansible_python_interpreter: {yaml_str(SYSTEM_PYTHON)}",
                    "          trustpoint_enroll_backend: openssl",
                    f"          trustpoint_onboarding_method: {method}",
                ]
            else:
                hosts += [
                    f"        {name}:",
                    f"          ansible_python_interpreter: {yaml_str(sys.executable)}",
                    f"          trustpoint_onboarding_method: {method}",
                ]
        overlay = self.dir / "demo-hosts.yml"
        overlay.write_text(
            "# generated by tools/demo.py: per-host settings added to the testbed's inventory.yml\n"
            + "all:\n  children:\n    devices:\n      hosts:\n"
            + "\n".join(hosts)
            + "\n"
        )
        secrets = self.dir / "secrets.yml"  # extra vars with the API token: 0600, never on a command line
        write_private(secrets, f"trustpoint_api_token: {yaml_str(self.token)}\n")

        self.playbook_cmd = [
            self.ansible_playbook,
            "-i", str(self.dir / "inventory.yml"), "-i", str(overlay),
            "-e", f"trustpoint_domain={DOMAIN}", "-e", "trustpoint_create_domain=true",
            "-e", f"trustpoint_server_url={self.server['api_url']}",
            "-e", f"trustpoint_enrollment_url={self.server['device_url']}",
            "-e", f"trustpoint_ca_path={self.server['ca_file']}",
            "-e", f"@{secrets}",
            "--limit", ":".join(["devices", *("!" + name for name in ZERO_TOUCH_HOSTS)]),
            "trustpoint.pki.onboard_devices",
        ]  # fmt: skip
        say(f"server for the controller: {self.server['api_url']}, for the devices: {self.server['device_url']}")
        say(f"TLS trust anchor: {self.server['ca_file']}")
        show_command(self.playbook_cmd)

        junit = self.dir / "results"
        env = dict(os.environ, **self.playbook_env)
        env.update(
            ANSIBLE_NOCOWS="1",
            # Ansible's built-in junit callback records every task result as JSON next to the usual
            # output; the table below reads the backend each host's enroll task used from it.
            ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.junit",
            JUNIT_OUTPUT_DIR=str(junit),
            JUNIT_HIDE_TASK_ARGUMENTS="true",
            # Ansible's persistent SSH connections live here, so that the clean-up can close them
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.dir / "ssh-control"),
            # the server is local: never reach it through a proxy
            NO_PROXY=",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", f"{SUBNET}.1"])),
            no_proxy=",".join(filter(None, [os.environ.get("no_proxy"), "127.0.0.1", f"{SUBNET}.1"])),
        )
        rc = subprocess.run(self.playbook_cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, check=False).returncode
        self.backends = read_backends(junit)
        if rc == 99:  # ansible-playbook's exit code when the user interrupted it
            raise Interrupted("ansible-playbook stopped by the user")
        if rc != 0:
            raise DemoError(f"the playbook failed (ansible-playbook exit {rc}); its output is above")

    # ---- 3
    def zero_touch(self) -> None:
        phase(3, "Zero-touch: " + ", ".join(ZERO_TOUCH_HOSTS) + " onboards by itself (AOKI)")
        server_bin = Path(sys.executable).parent
        pki = self.dir / "aoki-pki"
        cmd = [
            str(server_bin / "trustpoint-server"),
            "aoki",
            "gen-test-certs",
            str(pki),
            "--devices",
            str(len(ZERO_TOUCH_HOSTS)),
        ]
        show_command(cmd)
        capture(cmd, "trustpoint-server aoki gen-test-certs")
        manifest = json.loads((pki / "devices.json").read_text())
        say("the manufacturer's IDevID CA is trusted, its serial numbers admitted into the domain, the owner's")
        say("DevOwnerID (naming the IDevIDs) installed - the same as trustpoint.pki.truststore, devid_registration")
        say("and devowner_id do:")
        api = self.server["api_url"] + "/api/v1"
        self.api(
            api + "/truststores",
            {"name": "demo-manufacturer", "usage": "idevid", "certificates": (pki / "idevid_ca.pem").read_text()},
        )
        self.api(
            api + "/devid-registrations",
            {
                "name": "demo-manufacturer",
                "domain": DOMAIN,
                "truststore": "demo-manufacturer",
                "pattern": "AOKI-[0-9]{4}",
                "auto_create_devices": True,
            },
        )
        self.api(
            api + "/owner-credentials",
            {
                "name": "demo-owner",
                "certificate": (pki / "owner_id.pem").read_text(),
                "private_key": (pki / "owner_id_pk.pem").read_text(),
            },
        )
        ssh = tool("ssh", "openssh-client")
        for name, record in zip(ZERO_TOUCH_HOSTS, manifest["devices"]):
            # The factory: the IDevID, its key and the owner's trust anchor; nothing about the server.
            say(f"{name}: factory provisioning ({record['serial_number']}), then power on")
            for source, target, mode in (
                (record["certificate"], "idevid.pem", "644"),
                (record["private_key"], "idevid.key", "600"),
                ("ownerid_ca.pem", "owner-truststore.pem", "644"),
            ):
                path = f"{AGENT_FACTORY}/{target}"
                script = f"mkdir -p {AGENT_FACTORY} && umask 077 && cat > {path} && chmod {mode} {path}"
                subprocess.run(
                    [ssh, "-F", str(self.dir / "ssh_config"), name, script],
                    input=(pki / source).read_bytes(),
                    capture_output=True,
                    check=True,
                )
            agent = [
                str(server_bin / "trustpoint-agent"),
                "--state-dir",
                AGENT_STATE,
                "aoki",
                "--factory-dir",
                AGENT_FACTORY,
                "--attempts",
                "5",
            ]
            show_command(["ssh", "-F", "ssh_config", name, *agent])
            proc = subprocess.run(
                [ssh, "-F", str(self.dir / "ssh_config"), name, shlex.join(agent)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
            for line in (proc.stderr + proc.stdout).strip().splitlines():
                say(f"  {line}")
            if proc.returncode != 0:
                raise DemoError(f"{name}: trustpoint-agent aoki failed (exit {proc.returncode}); see above")
            self.backends[name] = "agent"

    # ---- 4
    def ask_server(self) -> Dict[str, Dict[str, Any]]:
        phase(4, "Ask the server what it issued (REST API, web pages)")
        url = f"{self.server['api_url']}/api/v1/devices?domain={DOMAIN}"
        show_command(self.curl(f"/api/v1/devices?domain={DOMAIN}"))
        devices = {d["name"]: d for d in self.api(url)}
        say(
            f"{len(devices)} device(s) in domain {DOMAIN}: "
            + ", ".join(f"{n} ({d['status']})" for n, d in devices.items())
        )
        return devices

    def check_pages(self, devices: Dict[str, Dict[str, Any]]) -> None:
        """Sign in to the web pages as the operator `init` created and find the devices there."""
        pages = self.server.get("pages_url") or self.server["api_url"] + "/ui/"
        try:
            password = Path(self.server["operator_password_file"]).read_text().strip()
        except (OSError, KeyError) as exc:
            raise DemoError(f"cannot read the operator's password: {exc}") from None
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=self.server["ca_file"])),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        )

        def fetch(path: str, fields: Optional[Dict[str, str]] = None) -> str:
            data = urllib.parse.urlencode(fields).encode() if fields is not None else None
            # Forms check their CSRF token and that they come from the site itself (Referer), as in a browser.
            request = urllib.request.Request(pages.rstrip("/") + path, data=data, headers={"Referer": pages})  # noqa: S310
            try:
                with opener.open(request, timeout=30) as response:
                    return response.read().decode("utf-8", "replace")
            except (urllib.error.URLError, OSError) as exc:
                raise DemoError(f"web pages, {path}: {exc}") from None

        form = fetch("/sign-in")
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form)
        if token is None:
            raise DemoError("the sign-in page has no form")
        fetch("/sign-in", {"csrf_token": token.group(1), "username": self.server["operator"], "password": password})
        listing = fetch(f"/devices?domain={DOMAIN}")
        if "Sign in</h1>" in listing:  # the pages sent us back to the sign-in
            raise DemoError(f"the operator {self.server['operator']} could not sign in to {pages}")
        text = html.unescape(re.sub(r"<[^>]+>", " ", listing))
        missing = [name for name in devices if name not in text]
        if missing:
            raise DemoError(f"the web pages do not list {', '.join(missing)}")
        say(f"web pages: {pages} (trust {self.server['ca_file']}); {len(devices)} device(s) listed after signing in")
        say(f"sign in as {self.server['operator']}, password {password} (in {self.server['operator_password_file']})")
        if not self.keep:
            say("the server stops at the end of the demo: `.venv/bin/python tools/demo.py --keep` leaves it up")

    def curl(self, path: str) -> str:
        """The API request as a curl command (the token read from its file, never printed)."""
        token_file = shlex.quote(self.server.get("token_file", "?"))
        ca_file = shlex.quote(self.server.get("ca_file", "?"))
        url = shlex.quote(self.server.get("api_url", "?") + path)
        return f'curl -s --cacert {ca_file} -H "Authorization: Bearer $(cat {token_file})" {url}'

    def api(self, url: str, payload: Optional[Dict[str, Any]] = None) -> Any:
        """GET url, or POST payload to it (JSON)."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 (the https URL of server.json)
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),  # local server: no proxy
            urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=self.server["ca_file"])),
        )
        try:
            with opener.open(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            raise DemoError(f"{request.get_method()} {url}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DemoError(f"{request.get_method()} {url}: {exc}") from None

    # ---- 5
    def check(self, devices: Dict[str, Dict[str, Any]]) -> None:
        phase(5, "Check each device's certificate (read over SSH, openssl verify)")
        domain = self.api(f"{self.server['api_url']}/api/v1/domains/{DOMAIN}")
        pems = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", domain["ca_chain"], re.S)
        if len(pems) != 2:
            raise DemoError(f"domain {DOMAIN}: expected an issuing and a root CA certificate, got {len(pems)}")
        work = self.dir / "check"
        work.mkdir()
        (work / f"{DOMAIN}-issuing-ca.pem").write_text(pems[0])
        (work / f"{DOMAIN}-root-ca.pem").write_text(pems[1])
        openssl, ssh = tool("openssl", "openssl"), tool("ssh", "openssh-client")
        verify = [openssl, "verify", "-CAfile", f"{DOMAIN}-root-ca.pem", "-untrusted", f"{DOMAIN}-issuing-ca.pem"]
        say(f"trust anchor: domain {DOMAIN}'s root CA from the server's API ({domain['root_ca']['subject']})")
        say(f"for each DEVICE, in {work}:")
        show_command(f"ssh -F ../ssh_config DEVICE cat {CREDENTIAL} > DEVICE.pem  # zero-touch: {AGENT_STATE}/cert.pem")
        show_command(["openssl", *verify[1:], "DEVICE.pem"])

        rows, problems, fingerprints = [], [], set()
        # AOKI names a device after its IDevID: find it by the serial number the factory gave it.
        by_serial = {d.get("serial_number"): d for d in devices.values() if d.get("serial_number")}
        for name in HOSTS:
            device, result = devices.get(name), "-"
            if name in ZERO_TOUCH_HOSTS:
                device = by_serial.get("AOKI-%04d" % (ZERO_TOUCH_HOSTS.index(name) + 1))
            credential = (device or {}).get("credential") or {}
            try:
                if not device:
                    raise DemoError("the server does not know it")
                if device["status"] != "onboarded" or not credential:
                    raise DemoError(f"status {device['status']}, no credential on the server")
                cert = work / f"{name}.pem"
                path = f"{AGENT_STATE}/cert.pem" if name in ZERO_TOUCH_HOSTS else CREDENTIAL
                cert.write_text(capture([ssh, "-F", str(self.dir / "ssh_config"), name, "cat", path], "ssh"))
                out = capture([openssl, "x509", "-noout", "-fingerprint", "-sha256", "-in", cert.name], "openssl", work)
                fingerprint = out.strip().partition("=")[2].replace(":", "").lower()
                if fingerprint != credential["fingerprint_sha256"]:
                    raise DemoError("its certificate is not the one the server recorded")
                if fingerprint in fingerprints:
                    raise DemoError("it holds the same certificate as another device")
                fingerprints.add(fingerprint)
                proc = subprocess.run(
                    [*verify, cert.name],
                    cwd=work,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                line = (proc.stdout + proc.stderr).strip().replace("\n", " | ")
                say(line)
                if proc.returncode != 0:
                    raise DemoError(f"openssl verify: {line}")
                result = "OK"
            except (DemoError, subprocess.TimeoutExpired) as exc:
                result = "FAILED"
                problems.append(f"{name}: {exc}")
                say(style(f"{name}: {exc}", "31"))
            rows.append(
                [
                    name,
                    str(device["id"]) if device else "-",
                    device["onboarding_method"] if device else "-",
                    self.backends.get(name, "-"),
                    credential.get("serial_number", "-"),
                    credential.get("not_after", "-"),
                    result,
                ]
            )
        print()
        print(table(["HOST", "DEVICE ID", "METHOD", "BACKEND", "CERTIFICATE SERIAL", "EXPIRES (UTC)", "VERIFY"], rows))
        if problems:
            raise DemoError("; ".join(problems))
        print()
        say("Each device holds its own certificate (distinct serials),")
        say(f"issued by {domain['issuing_ca']['subject']} under {domain['root_ca']['subject']}.")

    # ---- 5
    def close_ssh_connections(self) -> None:
        """Close Ansible's persistent SSH connections (ControlPersist) to the device hosts."""
        ssh = shutil.which("ssh")
        for control in sorted((self.dir / "ssh-control").glob("*")) if ssh else []:
            try:
                subprocess.run(
                    [ssh, "-o", f"ControlPath={control}", "-O", "exit", "device"],
                    stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired):
                pass  # it ends by itself after ControlPersist (60 s)

    def testbed_down(self) -> bool:
        cmd = [sys.executable, str(TESTBED), "down", "--dir", str(self.dir)]
        show_command(cmd)
        for attempt in (1, 2, 3):
            if subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False).returncode == 0:
                return True
            if attempt < 3:
                # `down` is idempotent; the kernel may still be removing a namespace's veth pair
                say(f"tools/testbed.py down failed; trying again ({attempt + 1}/3)")
                time.sleep(1)
        return False

    def keep_hints(self) -> None:
        print()
        print("    The server and the device hosts are still up (--keep). Try:")
        first = next(iter(HOSTS))
        hints = [
            ("log in to a device", shlex.join(["ssh", "-F", str(self.dir / "ssh_config"), first])),
            ("look into its network namespace", f"ip netns exec {PREFIX}-{first} ip -brief address"),
            ("ask the server's API", self.curl("/api/v1/devices")),
            (
                "open the web pages (sign in as %s, password in %s)"
                % (self.server.get("operator", "admin"), self.server.get("operator_password_file", "?")),
                self.server.get("pages_url", "?"),
            ),
        ]
        for what, cmd in hints:
            say(f"# {what}")
            say(cmd)
        if self.playbook_cmd:
            say("# run the playbook again (idempotent: nothing changes)")
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.playbook_env.items())
            say(f"{env} {shlex.join(self.playbook_cmd)}")
        print("    Clean up with:")
        say(shlex.join([sys.executable, str(TESTBED), "down", "--dir", str(self.dir)]))


def read_backends(directory: Path) -> Dict[str, str]:
    """{host: backend} from the junit callback's report: the last task result that names a backend."""
    backends: Dict[str, str] = {}
    for report in sorted(directory.glob("*.xml")):
        try:
            cases = ET.parse(report).getroot().iter("testcase")  # noqa: S314 (our own report)
        except (ET.ParseError, OSError):
            continue
        for case in cases:
            host = re.match(r"\[([^\]]+)\]", case.get("name", ""))
            out = case.find("system-out")
            if not host or out is None or not out.text:
                continue
            try:
                result = json.loads(out.text)
            except ValueError:
                continue
            if isinstance(result, dict) and isinstance(result.get("backend"), str):
                backends[host.group(1)] = result["backend"]
    return backends


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="demo.py",
        description=__doc__.split("\n\n", maxsplit=1)[0],
        allow_abbrev=False,
        epilog="Run it with `make demo`.",
    )
    parser.add_argument("--keep", action="store_true", help="leave the server and the device hosts running")
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"state directory (default: {DEFAULT_DIR})")
    parser.add_argument("--port", type=int, default=PORT, help=f"the server's port (default: {PORT})")
    args = parser.parse_args(argv)

    started = time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    demo = Demo(Path(os.path.expanduser(args.dir)).absolute(), args.port, args.keep)
    print(
        style("Trustpoint demo", "1")
        + f": four SSH device hosts get their domain credentials from the bundled server (domain {DOMAIN!r}),"
        + " one of them zero-touch."
    )

    failure: Optional[str] = None
    interrupted = False
    try:
        try:
            demo.start()
            demo.onboard()
            demo.zero_touch()
            devices = demo.ask_server()
            demo.check_pages(devices)
            demo.check(devices)
        except DemoError as exc:
            failure = str(exc)
        except (KeyboardInterrupt, Interrupted) as exc:
            interrupted = True
            failure = f"interrupted ({str(exc) or 'Ctrl-C'})"
    finally:
        # Clean up whatever happened, without being interrupted half-way (the testbed inherits this).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        built = demo.touched and (demo.dir / "testbed-state.json").exists()
        cleanup_failed = False
        if args.keep and not interrupted and built:
            phase(6, "Clean up: skipped (--keep)")
            demo.keep_hints()
        elif built:
            phase(6, "Clean up (tools/testbed.py down)")
            demo.close_ssh_connections()
            cleanup_failed = not demo.testbed_down()
            if not cleanup_failed and failure is None:
                shutil.rmtree(demo.dir, ignore_errors=True)
        else:
            phase(6, "Clean up: nothing was started")

    elapsed = time.monotonic() - started
    print()
    if cleanup_failed:
        print(
            style("demo: FAILED to clean up", "1;31")
            + f"; finish it with: {sys.executable} {TESTBED} down --dir {demo.dir}",
            file=sys.stderr,
        )
    if failure is not None:
        verdict = "stopped" if interrupted else "FAILED"
        print(style(f"demo: {verdict} after {elapsed:.0f} s: {failure}", "1;31"), file=sys.stderr)
        if built and demo.dir.exists() and not args.keep:
            print(f"demo: logs kept in {demo.dir} (server/server.log, <host>/sshd.log)", file=sys.stderr)
        return 130 if interrupted else 1
    if cleanup_failed:
        return 1
    print(style(f"demo: OK in {elapsed:.0f} s", "1;32") + f" ({len(HOSTS)} devices onboarded into domain {DOMAIN!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
