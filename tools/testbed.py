#!/usr/bin/env python
# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bring real SSH device hosts up and down on this machine, for Molecule and `make demo`.

Each device host is a network namespace ``<prefix>-<host>`` on a private bridge with its own
``sshd`` under ``tini`` in fresh UTS, mount and PID namespaces: its own address, hostname and PID 1,
and bind-mounted private directories (``/etc/trustpoint`` and ``/var/lib/trustpoint`` by default)
backed by ``DIR/<host>/...``, and its own home for root (``DIR/<host>/home``, empty shell start-up files).
The rest of the filesystem is the machine's.

    testbed.py up --dir DIR --prefix tpm --bridge tpbr77 --subnet 169.254.77 \\
        --host device1:11 --host device2:12 [--server-port 8470]
    testbed.py down --dir DIR

``up`` writes DIR/hosts.json, DIR/known_hosts, DIR/id_ed25519, DIR/ssh_config (``ssh -F``) and
DIR/inventory.yml (group ``devices``), and with ``--server-port P`` starts ``trustpoint-server``
(HTTPS on 127.0.0.1:P and <bridge>:P, its TLS certificate naming the bridge address; plain HTTP
for CMP on <bridge>:P+1) and writes DIR/server.json (api_url, device_url, cmp_plain_url, ca_file,
token_file, data_dir, pid). ``down`` removes only what DIR/testbed-state.json records.
Both are idempotent. Needs root, iproute2, util-linux, tini and openssh-server.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

STATE_FILE = "testbed-state.json"
DEFAULT_PRIVATE_DIRS = ("/etc/trustpoint", "/var/lib/trustpoint")
SSH_BANNER = b"SSH-2.0-OpenSSH"
SSH_TIMEOUT = 30.0
SERVER_TIMEOUT = 30.0
IFNAMSIZ = 15  # longest Linux interface name
# sshd's AuthorizedKeysFile and ssh_config take paths unquoted (and expand %); keep paths plain.
SAFE_PATH = re.compile(r"^[A-Za-z0-9._/+@,=~-]+$")
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


class TestbedError(Exception):
    """An expected failure: printed as one message, exit code 1, no traceback."""


def log(msg: str) -> None:
    print(f"testbed: {msg}", flush=True)


def warn(msg: str) -> None:
    print(f"testbed: warning: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- commands and processes


REQUIRED_TOOLS = {  # program: Debian package
    "ip": "iproute2",
    "unshare": "util-linux",
    "mount": "mount",
    "hostname": "hostname",
    "tini": "tini",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "sh": "dash",
}


class Tools:
    """Absolute paths of the programs the testbed runs (resolved once, checked up front)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.paths: Dict[str, str] = {}
        missing = []
        for name in names:
            path = shutil.which(name, path=SBIN_PATH)
            if path is None:
                missing.append(f"{name} (Debian package {REQUIRED_TOOLS.get(name, name)})")
            else:
                self.paths[name] = path
        if missing:
            raise TestbedError("missing tools: " + ", ".join(missing) + "; install them (tools/setup-system.sh does)")

    def __getitem__(self, name: str) -> str:
        return self.paths[name]


def run(cmd: Sequence[str], *, check: bool = True, what: str = "") -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise TestbedError(f"{what or 'command'} failed: {shlex.join(cmd)}: {detail}")
    return proc


def pid_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # state is the field after the parenthesised command name
    return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X")


def pid_cmdline(pid: int) -> List[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def wait_gone(pids: Sequence[int], timeout: float) -> List[int]:
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if pid_alive(p)]
    return alive


def signal_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(empty log {path})"


# --------------------------------------------------------------------------- configuration


class Host:
    def __init__(self, name: str, octet: int, prefix: str, subnet: str) -> None:
        self.name = name
        self.octet = octet
        self.address = f"{subnet}.{octet}"
        self.namespace = f"{prefix}-{name}"
        self.veth = f"{prefix}-{name}-h"

    def as_state(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "namespace": self.namespace,
            "veth": self.veth,
        }


def parse_host(spec: str) -> tuple:
    name, sep, octet = spec.partition(":")
    if not sep or not NAME.match(name) or not octet.isdigit():
        raise TestbedError(f"--host {spec!r}: expected NAME:OCTET, e.g. device1:11")
    number = int(octet)
    if not 2 <= number <= 254:
        raise TestbedError(f"--host {spec!r}: the last octet must be 2..254 (.1 is the bridge)")
    return name, number


def check_subnet(subnet: str) -> ipaddress.IPv4Network:
    try:
        parts = subnet.split(".")
        if len(parts) != 3:
            raise ValueError(subnet)
        return ipaddress.IPv4Network(f"{subnet}.0/24")
    except ValueError:
        raise TestbedError(f"--subnet {subnet!r}: expected the first three octets of a /24, e.g. 169.254.77") from None


def check_dir(path: Path) -> None:
    """sshd's StrictModes refuses AuthorizedKeysFile below group/world-writable directories."""
    if not SAFE_PATH.match(str(path)):
        raise TestbedError(f"--dir {path}: use a path of letters, digits and ._/+@,=~- only")
    for part in [path, *path.parents]:
        if not part.exists():
            continue
        st = part.stat()
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise TestbedError(
                f"--dir {path}: {part} is group/world-writable or not owned by root, and sshd "
                "(StrictModes) refuses authorized keys below it; use a directory such as "
                "~/.cache/trustpoint-testbed or one inside the repository"
            )
        if str(part) == os.path.expanduser("~"):
            break


# --------------------------------------------------------------------------- state


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise TestbedError(f"cannot read {path}: {exc}") from None


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_file(path, json.dumps(data, indent=2) + "\n")


def load_state(directory: Path) -> Optional[Dict[str, Any]]:
    state = read_json(directory / STATE_FILE)
    source = directory / STATE_FILE
    if state is None:
        # Fall back to hosts.json (state file lost): hosts only, never the bridge.
        hosts = read_json(directory / "hosts.json")
        if not hosts:
            return None
        source = directory / "hosts.json"
        state = {"hosts": hosts, "bridge": None, "bridge_owned": False}
    try:
        for entry in state["hosts"]:
            entry.setdefault("veth", entry["namespace"] + "-h")
            entry.setdefault("name", entry["namespace"])
    except (KeyError, TypeError, AttributeError):
        raise TestbedError(f"{source} is malformed; remove it or fix it by hand") from None
    return state


# --------------------------------------------------------------------------- network


def netns_exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


def link_exists(tools: Tools, name: str) -> bool:
    return run([tools["ip"], "link", "show", "dev", name], check=False).returncode == 0


def netns_pids(tools: Tools, ns: str) -> List[int]:
    if not netns_exists(ns):
        return []
    proc = run([tools["ip"], "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def bridge_ports(tools: Tools, bridge: str) -> List[str]:
    proc = run([tools["ip"], "-j", "link", "show", "master", bridge], check=False)
    try:
        return [link["ifname"] for link in json.loads(proc.stdout or "[]")]
    except ValueError:
        return []


def teardown_host(tools: Tools, ns: str, veth: str) -> None:
    """Kill the namespace's processes, delete the netns and the host-side veth (each if present)."""
    pids = netns_pids(tools, ns)
    if pids:
        # tini is PID 1 of the host: when it dies the kernel kills the PID namespace. The
        # `unshare --fork` parent ignores SIGTERM, hence the SIGKILL round.
        signal_pids(pids, signal.SIGTERM)
        left = wait_gone(pids, 5.0)
        if left:
            signal_pids(left, signal.SIGKILL)
            left = wait_gone(left, 3.0)
        if left:
            warn(f"{ns}: processes still alive after SIGKILL: {left}")
    if netns_exists(ns):
        run([tools["ip"], "netns", "del", ns], what=f"deleting netns {ns}")
    # Delete the veth explicitly: orphaned TCP sockets can keep a deleted namespace (and so the
    # pair) alive for minutes, and the next `ip link add` would fail with "File exists".
    if link_exists(tools, veth):
        proc = run([tools["ip"], "link", "del", veth], check=False)
        # The kernel removes the pair itself once the namespace is gone, possibly in between.
        if proc.returncode != 0 and "Cannot find device" not in proc.stderr:
            raise TestbedError(f"deleting veth {veth} failed: {proc.stderr.strip()}")


def check_subnet_free(tools: Tools, bridge: str, network: ipaddress.IPv4Network) -> None:
    proc = run([tools["ip"], "-j", "-4", "addr", "show"], what="listing addresses")
    for link in json.loads(proc.stdout or "[]"):
        if link.get("ifname") == bridge:
            continue
        for addr in link.get("addr_info", []):
            iface = ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}")
            if iface.network.overlaps(network):
                raise TestbedError(
                    f"address in use: {network} overlaps {iface} on interface {link['ifname']}; choose another --subnet"
                )


def ensure_bridge(tools: Tools, bridge: str, gateway: str, owned_before: bool, our_veth: re.Pattern) -> bool:
    """Create (or adopt a leftover of ours) the bridge; return True when it is ours to delete."""
    ip = tools["ip"]
    owned = owned_before
    if link_exists(tools, bridge):
        info = json.loads(run([ip, "-j", "-d", "link", "show", "dev", bridge]).stdout)[0]
        kind = info.get("linkinfo", {}).get("info_kind")
        if kind != "bridge":
            raise TestbedError(f"interface {bridge} exists and is a {kind or 'non-bridge'}; choose --bridge")
        foreign = [p for p in bridge_ports(tools, bridge) if not our_veth.match(p)]
        if foreign and not owned:
            raise TestbedError(f"bridge {bridge} is in use by other interfaces ({', '.join(foreign)}); choose --bridge")
        if not owned:
            log(f"adopting leftover bridge {bridge}")
            owned = True
    else:
        run([ip, "link", "add", bridge, "type", "bridge"], what=f"creating bridge {bridge}")
        owned = True
    addrs = json.loads(run([ip, "-j", "-4", "addr", "show", "dev", bridge]).stdout or "[]")
    present = {a["local"] for link in addrs for a in link.get("addr_info", [])}
    if gateway not in present:
        run([ip, "addr", "add", f"{gateway}/24", "dev", bridge], what=f"addressing bridge {bridge}")
    run([ip, "link", "set", bridge, "up"], what=f"starting bridge {bridge}")
    return owned


# --------------------------------------------------------------------------- hosts


def ensure_key(tools: Tools, key: Path, comment: str) -> None:
    pub = key.with_name(key.name + ".pub")
    if not key.exists():
        pub.unlink(missing_ok=True)
        run(
            [tools["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
            what=f"generating {key}",
        )
    elif not pub.exists():
        out = run([tools["ssh-keygen"], "-y", "-f", str(key)], what=f"reading {key}").stdout
        write_file(pub, out.strip() + f" {comment}\n")
    os.chmod(key, 0o600)


def write_home(hdir: Path) -> None:
    """HOST/home: root's home on the host, with empty shell start-up files, and HOST/passwd naming it."""
    home = hdir / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    for name in (".bashrc", ".profile"):
        write_file(home / name, "# the device host's own, empty: tools/testbed.py\n", 0o644)
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[0] == "root":
            fields[5] = str(home)
        lines.append(":".join(fields))
    write_file(hdir / "passwd", "\n".join(lines) + "\n", 0o644)


def sshd_config(host: Host, directory: Path) -> str:
    hdir = directory / host.name
    return "\n".join(
        [
            f"# {host.name}: generated by tools/testbed.py",
            f"ListenAddress {host.address}",
            "Port 22",
            f"HostKey {hdir}/ssh_host_ed25519_key",
            "PidFile none",
            f"AuthorizedKeysFile {directory}/id_ed25519.pub",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "MaxStartups 64:30:128",
            "MaxSessions 64",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ]
    )


def host_running(tools: Tools, host: Host, config: Path) -> bool:
    """Our sshd (started with this DIR's config) runs in the namespace and the veth is there."""
    if not link_exists(tools, host.veth):
        return False
    for pid in netns_pids(tools, host.namespace):
        cmd = pid_cmdline(pid)
        # tini's argv ends in "sshd -D -e -f <config>" (sshd itself rewrites its process title)
        if cmd and os.path.basename(cmd[0]) == "tini" and str(config) in cmd and pid_alive(pid):
            return True
    return False


def start_host(tools: Tools, host: Host, directory: Path, bridge: str, private_dirs: Sequence[str]) -> subprocess.Popen:
    ip = tools["ip"]
    hdir = directory / host.name
    ns = host.namespace
    run([ip, "netns", "add", ns], what=f"creating netns {ns}")
    run([ip, "-n", ns, "link", "set", "lo", "up"], what=f"{ns}: lo up")
    run(
        [ip, "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
        what=f"creating veth {host.veth}",
    )
    run([ip, "link", "set", host.veth, "master", bridge, "up"], what=f"attaching {host.veth}")
    run([ip, "-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0"], what=f"{ns}: address")
    run([ip, "-n", ns, "link", "set", "eth0", "up"], what=f"{ns}: eth0 up")

    q = shlex.quote
    script = [f"set -e; {q(tools['hostname'])} {q(host.name)}"]
    for target in private_dirs:
        script.append(f"{q(tools['mount'])} --bind {q(str(hdir) + target)} {q(target)}")
    # root's home is the host's own (passwd seen through a bind mount): the machine's shell start-up files
    # (pyenv init in ~/.bashrc costs 0.28 s per SSH command) and ~/.ansible stay out of device timings.
    script.append(f"{q(tools['mount'])} --bind {q(str(hdir / 'passwd'))} /etc/passwd")
    script.append(f"exec {q(tools['tini'])} -s -- {q(tools['sshd'])} -D -e -f {q(str(hdir / 'sshd_config'))}")
    cmd = [
        ip, "netns", "exec", ns,
        tools["unshare"], "--uts", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
        tools["sh"], "-c", "; ".join(script),
    ]  # fmt: skip
    with open(hdir / "sshd.log", "wb") as logf:
        # own session, no inherited pipes: the caller (Ansible's command module) must not wait
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
        )


def ssh_banner(address: str, timeout: float = 1.0) -> bytes:
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            return sock.recv(256)
    except OSError:
        return b""


def wait_for_sshd(
    tools: Tools, hosts: Sequence[Host], directory: Path, started: Optional[Dict[str, subprocess.Popen]] = None
) -> None:
    """Wait for every host's SSH banner; fail at once when a host's sshd has exited.

    A host started by this run is judged by its own process: right after the start, `ip netns exec`
    has not yet entered the namespace, so an empty namespace does not mean sshd died.
    """
    started = started or {}
    deadline = time.monotonic() + SSH_TIMEOUT
    waiting = list(hosts)
    while waiting:
        for host in list(waiting):
            if ssh_banner(host.address).startswith(SSH_BANNER):
                waiting.remove(host)
            elif (
                started[host.name].poll() is not None if host.name in started else not netns_pids(tools, host.namespace)
            ):
                raise TestbedError(
                    f"sshd of {host.name} exited; {directory / host.name / 'sshd.log'}:\n"
                    + tail(directory / host.name / "sshd.log")
                )
        if waiting and time.monotonic() > deadline:
            details = "\n".join(
                f"--- {h.name} ({h.address}):\n{tail(directory / h.name / 'sshd.log')}" for h in waiting
            )
            raise TestbedError(f"sshd not answering after {SSH_TIMEOUT:.0f} s:\n{details}")
        if waiting:
            time.sleep(0.2)


# --------------------------------------------------------------------------- generated files


def ssh_common_args(directory: Path) -> str:
    return f"-o UserKnownHostsFile={directory}/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"


def write_outputs(hosts: Sequence[Host], directory: Path, python: str) -> None:
    known = []
    for host in hosts:
        key = (directory / host.name / "ssh_host_ed25519_key.pub").read_text().split()
        known.append(f"{host.address} {key[0]} {key[1]} {host.name}")
    write_file(directory / "known_hosts", "\n".join(known) + "\n")

    write_json(
        directory / "hosts.json",
        [{"name": h.name, "address": h.address, "namespace": h.namespace} for h in hosts],
    )

    blocks = ["# generated by tools/testbed.py; use with: ssh -F <this file> <host>"]
    for host in hosts:
        blocks.append(
            "\n".join(
                [
                    f"Host {host.name} {host.address}",
                    f"    HostName {host.address}",
                    "    User root",
                    "    Port 22",
                    f"    IdentityFile {directory}/id_ed25519",
                    "    IdentitiesOnly yes",
                    f"    UserKnownHostsFile {directory}/known_hosts",
                    "    GlobalKnownHostsFile /dev/null",
                    "    StrictHostKeyChecking yes",
                    "    BatchMode yes",
                ]
            )
        )
    write_file(directory / "ssh_config", "\n\n".join(blocks) + "\n")

    j = json.dumps  # JSON strings are YAML strings
    lines = [
        "# generated by tools/testbed.py",
        "all:",
        "  children:",
        "    devices:",
        "      hosts:",
    ]
    for host in hosts:
        lines += [
            f"        {host.name}:",
            f"          ansible_host: {j(host.address)}",
            "          ansible_user: root",
            f"          ansible_ssh_private_key_file: {j(str(directory / 'id_ed25519'))}",
            f"          ansible_ssh_common_args: {j(ssh_common_args(directory))}",
            # one SSH command per module instead of three (put, run, delete)
            "          ansible_pipelining: true",
        ]
        if python:
            # explicit: interpreter discovery over SSH may find e.g. a pyenv shim on root's PATH
            lines.append(f"          ansible_python_interpreter: {j(python)}")
    write_file(directory / "inventory.yml", "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- enrollment server


def server_executable() -> str:
    beside = Path(sys.executable).parent / "trustpoint-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("trustpoint-server")
    if found:
        return found
    raise TestbedError(
        f"trustpoint-server not found next to {sys.executable} or on PATH; "
        "install the project into the virtualenv (make setup)"
    )


def healthz(url: str, ca_file: Optional[Path] = None, timeout: float = 2.0) -> bool:
    """GET url/healthz answers 200; an https URL is verified with ca_file."""
    handlers: List[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # never via a proxy
    if url.startswith("https:"):
        if ca_file is None or not ca_file.exists():
            return False
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(ca_file))))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(f"{url}/healthz", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def server_pid(server_dir: Path) -> Optional[int]:
    """The pid in server.pid when that process is alive and is our server for this data dir."""
    try:
        pid = int((server_dir / "server.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    cmd = pid_cmdline(pid)
    if pid_alive(pid) and "run" in cmd and str(server_dir) in cmd:
        return pid
    return None


def check_port_free(address: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            raise TestbedError(
                f"address in use: cannot bind {address}:{port} ({exc.strerror}); choose another "
                "--server-port or stop what listens there"
            ) from None


def stop_server(directory: Path) -> None:
    server_dir = directory / "server"
    pid = server_pid(server_dir)
    if pid is not None:
        log(f"stopping trustpoint-server (pid {pid})")
        # started in its own session: signal the whole group (WSGI workers included)
        try:
            group = os.getpgid(pid) == pid
        except ProcessLookupError:
            group = False

        def kill(sig: int) -> None:
            with contextlib.suppress(ProcessLookupError):
                if group:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)

        kill(signal.SIGTERM)
        if wait_gone([pid], 10.0):
            warn(f"trustpoint-server (pid {pid}) ignored SIGTERM; sending SIGKILL")
            kill(signal.SIGKILL)
            wait_gone([pid], 3.0)
    (server_dir / "server.pid").unlink(missing_ok=True)
    (directory / "server.json").unlink(missing_ok=True)


def start_server(directory: Path, gateway: str, port: int, mdns: bool = False) -> None:
    """HTTPS on 127.0.0.1:port (controller) and gateway:port (devices), plain HTTP for CMP on gateway:port+1;
    with mdns, AOKI advertised over mDNS on the bridge (devices find the server by themselves)."""
    server_dir = directory / "server"
    server_dir.mkdir(mode=0o700, exist_ok=True)
    logfile = server_dir / "server.log"
    ca_file = server_dir / "tls-ca.pem"
    info = {
        "api_url": f"https://127.0.0.1:{port}",
        "device_url": f"https://{gateway}:{port}",
        "cmp_plain_url": f"http://{gateway}:{port + 1}",
        "ca_file": str(ca_file),
        "token_file": str(server_dir / "admin-token"),
        "data_dir": str(server_dir),
        "pages_url": f"https://127.0.0.1:{port}/ui/",
        "operator": "admin",
        "operator_password_file": str(server_dir / "operator-password"),
    }
    previous = read_json(directory / "server.json") or {}
    pid = server_pid(server_dir)
    same_addresses = all(previous.get(key) == info[key] for key in ("device_url", "cmp_plain_url"))
    if pid is not None and same_addresses and healthz(info["api_url"], ca_file):
        log(f"trustpoint-server already running (pid {pid}) on port {port}")
        write_json(directory / "server.json", dict(info, pid=pid))
        return
    stop_server(directory)
    check_port_free("127.0.0.1", port)
    check_port_free(gateway, port)
    check_port_free(gateway, port + 1)

    exe = server_executable()
    # The TLS certificate names the bridge address, which devices connect to (besides loopback).
    init = run([exe, "init", "--data-dir", str(server_dir), "--tls-san", gateway], check=False)
    if init.returncode != 0:
        raise TestbedError(
            f"trustpoint-server init failed (exit {init.returncode}):\n{(init.stdout + init.stderr).strip()}"
        )
    cmd = [
        exe, "run", "--data-dir", str(server_dir),
        "--listen", f"127.0.0.1:{port}", "--listen", f"{gateway}:{port}",
        "--listen-plain", f"{gateway}:{port + 1}",
    ]  # fmt: skip
    if mdns:
        cmd += ["--mdns-interface", gateway, "--mdns-instance", f"AOKI Owner Service {directory.name}"[:63]]
    log(f"starting trustpoint-server: HTTPS on 127.0.0.1:{port} and {gateway}:{port}, HTTP on {gateway}:{port + 1}")
    with open(logfile, "wb") as logf:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
        )
    write_file(server_dir / "server.pid", f"{proc.pid}\n")

    deadline = time.monotonic() + SERVER_TIMEOUT
    while not (healthz(info["api_url"], ca_file) and healthz(info["cmp_plain_url"])):
        if proc.poll() is not None:
            (server_dir / "server.pid").unlink(missing_ok=True)
            raise TestbedError(f"trustpoint-server exited with {proc.returncode}; {logfile}:\n{tail(logfile)}")
        if time.monotonic() > deadline:
            stop_server(directory)
            raise TestbedError(
                f"trustpoint-server not healthy after {SERVER_TIMEOUT:.0f} s "
                f"(GET {info['api_url']}/healthz, {info['cmp_plain_url']}/healthz); {logfile}:\n{tail(logfile)}"
            )
        time.sleep(0.2)
    write_json(directory / "server.json", dict(info, pid=proc.pid))
    log(f"trustpoint-server healthy (pid {proc.pid})")


# --------------------------------------------------------------------------- commands


def require_root() -> None:
    if os.geteuid() != 0:
        raise TestbedError("must run as root (network namespaces, bridges and bind mounts need it)")


def cmd_up(args: argparse.Namespace) -> None:
    require_root()
    tools = Tools(list(REQUIRED_TOOLS))
    directory = Path(os.path.abspath(args.dir))
    network = check_subnet(args.subnet)
    gateway = f"{args.subnet}.1"
    prefix, bridge = args.prefix, args.bridge
    if not NAME.match(prefix):
        raise TestbedError(f"--prefix {prefix!r}: use lowercase letters, digits and '-'")
    if len(bridge) > IFNAMSIZ or not re.match(r"^[A-Za-z0-9_.-]+$", bridge):
        raise TestbedError(f"--bridge {bridge!r}: at most {IFNAMSIZ} characters of [A-Za-z0-9_.-]")
    if not args.host:
        raise TestbedError("give at least one --host NAME:OCTET")
    hosts = [Host(n, o, prefix, args.subnet) for n, o in map(parse_host, args.host)]
    for attr in ("name", "octet"):
        values = [getattr(h, attr) for h in hosts]
        dupes = sorted({str(v) for v in values if values.count(v) > 1})
        if dupes:
            raise TestbedError(f"duplicate host {attr}: {', '.join(dupes)}")
    for host in hosts:
        if len(host.veth) > IFNAMSIZ:
            raise TestbedError(
                f"interface name {host.veth!r} is longer than {IFNAMSIZ}; shorten --prefix or the host name"
            )
    private_dirs = list(args.private_dir or DEFAULT_PRIVATE_DIRS)
    for target in private_dirs:
        if not target.startswith("/") or not SAFE_PATH.match(target) or target == "/":
            raise TestbedError(f"--private-dir {target!r}: expected an absolute path")

    check_dir(directory)
    check_subnet_free(tools, bridge, network)
    if args.server_port and server_pid(directory / "server") is None:
        check_port_free("127.0.0.1", args.server_port)  # fail before building anything

    # From here on the machine changes: on failure, `down --dir DIR` cleans up.
    args.changed = True
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_dir(directory)

    # Forget (tear down) whatever an earlier `up` in this DIR built that this one does not want.
    old = load_state(directory) or {}
    wanted = {h.namespace for h in hosts}
    for entry in old.get("hosts", []):
        if entry["namespace"] not in wanted:
            if netns_exists(entry["namespace"]) or link_exists(tools, entry["veth"]):
                log(f"removing {entry['namespace']} (no longer wanted)")
            teardown_host(tools, entry["namespace"], entry["veth"])
    owned = bool(old.get("bridge_owned")) and old.get("bridge") == bridge
    if old.get("bridge") and old.get("bridge") != bridge and old.get("bridge_owned"):
        delete_bridge(tools, old["bridge"])

    # Record the names before creating anything, so `down` can clean up an interrupted `up`.
    state = {
        "prefix": prefix,
        "bridge": bridge,
        "bridge_owned": owned,
        "subnet": args.subnet,
        "private_dirs": private_dirs,
        "hosts": [h.as_state() for h in hosts],
    }
    write_json(directory / STATE_FILE, state)

    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    ensure_key(tools, directory / "id_ed25519", "trustpoint-testbed-controller")
    for target in private_dirs:
        Path(target).mkdir(mode=0o755, parents=True, exist_ok=True)  # mount points on the machine
    for host in hosts:
        hdir = directory / host.name
        hdir.mkdir(mode=0o700, exist_ok=True)
        for target in private_dirs:
            Path(str(hdir) + target).mkdir(mode=0o755, parents=True, exist_ok=True)
        ensure_key(tools, hdir / "ssh_host_ed25519_key", host.name)
        write_home(hdir)
        config = hdir / "sshd_config"
        write_file(config, sshd_config(host, directory), 0o600)
        test = run([tools["sshd"], "-t", "-f", str(config)], check=False)
        if test.returncode != 0:
            raise TestbedError(f"{config} is invalid: {(test.stderr or test.stdout).strip()}")

    our_veth = re.compile(rf"^{re.escape(prefix)}-.+-h$")
    state["bridge_owned"] = ensure_bridge(tools, bridge, gateway, owned, our_veth)
    write_json(directory / STATE_FILE, state)

    started: Dict[str, subprocess.Popen] = {}
    for host in hosts:
        config = directory / host.name / "sshd_config"
        if host_running(tools, host, config):
            log(f"{host.name}: already up ({host.namespace}, {host.address})")
            continue
        teardown_host(tools, host.namespace, host.veth)  # leftovers of an interrupted run
        log(f"{host.name}: starting ({host.namespace}, {host.address})")
        started[host.name] = start_host(tools, host, directory, bridge, private_dirs)

    wait_for_sshd(tools, hosts, directory, started)
    write_outputs(hosts, directory, args.python_interpreter)
    log(f"{len(hosts)} host(s) answer SSH; inventory: {directory / 'inventory.yml'}")

    if args.server_port:
        start_server(directory, gateway, args.server_port, args.server_mdns)
    else:
        stop_server(directory)  # a server of an earlier `up --server-port` is no longer wanted


def delete_bridge(tools: Tools, bridge: str) -> None:
    if not link_exists(tools, bridge):
        return
    run([tools["ip"], "link", "del", bridge], what=f"deleting bridge {bridge}")
    log(f"deleted bridge {bridge}")


def cmd_down(args: argparse.Namespace) -> None:
    require_root()
    directory = Path(os.path.abspath(args.dir))
    state = load_state(directory) if directory.is_dir() else None
    if state is None:
        log(f"nothing recorded in {directory}; nothing to do")
        return
    tools = Tools(["ip"])
    stop_server(directory)
    for entry in state.get("hosts", []):
        present = netns_exists(entry["namespace"]) or link_exists(tools, entry["veth"])
        teardown_host(tools, entry["namespace"], entry["veth"])
        if present:
            log(f"{entry['name']}: removed {entry['namespace']}")
    bridge = state.get("bridge")
    if bridge and state.get("bridge_owned") and link_exists(tools, bridge):
        ports = bridge_ports(tools, bridge)
        if ports:
            warn(f"bridge {bridge} still has ports ({', '.join(ports)}); leaving it")
        else:
            delete_bridge(tools, bridge)
    log("down")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="testbed.py", description=__doc__.split("\n\n", maxsplit=1)[0], allow_abbrev=False
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create (or keep) the hosts, optionally start the server")
    up.add_argument("--dir", required=True, help="state directory (keys, configs, logs, inventory)")
    up.add_argument("--prefix", default="tpm", help="namespace name prefix (default: tpm)")
    up.add_argument("--bridge", default="tpbr77", help="bridge name (default: tpbr77)")
    up.add_argument("--subnet", default="169.254.77", help="first three octets (default: 169.254.77)")
    up.add_argument("--host", action="append", metavar="NAME:OCTET", help="a host, e.g. device1:11 (repeatable)")
    up.add_argument(
        "--private-dir",
        action="append",
        metavar="PATH",
        help=f"private per-host directory (repeatable; default: {' '.join(DEFAULT_PRIVATE_DIRS)})",
    )
    up.add_argument(
        "--python-interpreter",
        default="/usr/bin/python3",
        metavar="PATH",
        help="ansible_python_interpreter in inventory.yml (default: /usr/bin/python3; '' to omit)",
    )
    up.add_argument(
        "--server-port",
        type=int,
        metavar="PORT",
        help="also start trustpoint-server: HTTPS on PORT, plain HTTP for CMP on PORT+1",
    )
    up.add_argument(
        "--server-mdns",
        action="store_true",
        help="the server also advertises AOKI (_aoki._tcp) over mDNS on the bridge",
    )
    down = sub.add_parser("down", help="stop the server and remove the hosts recorded in DIR")
    down.add_argument("--dir", required=True, help="state directory given to `up`")
    args = parser.parse_args(argv)
    if getattr(args, "server_port", None) is not None and not 1 <= args.server_port <= 65534:
        parser.error("--server-port must be 1..65534 (PORT+1 is the plain-HTTP CMP port)")

    try:
        if args.command == "up":
            cmd_up(args)
        else:
            cmd_down(args)
    except TestbedError as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        if getattr(args, "changed", False):
            print(f"testbed: clean up with: {sys.argv[0]} down --dir {args.dir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("testbed: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
