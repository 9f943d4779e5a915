#!/usr/bin/env python
# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Podman containers as SSH hosts with a filesystem of their own, for the server role's tests.

The network-namespace hosts of tools/testbed.py share this machine's filesystem, so a role that
installs a service (a user, /opt, /etc, an init script) would install it here. These hosts are
containers from a locally built Debian image, each in a network namespace ``<prefix>-<host>`` on a
testbed bridge, reached over SSH with real host-key checking:

    podman_hosts.py image [--name localhost/trustpoint-debian:12]     # build once (debootstrap)
    podman_hosts.py up --dir DIR --prefix tps --bridge tpbr82 --subnet 169.254.82 \\
        --host sd1:31:systemd --host plain1:32:plain
    podman_hosts.py down --dir DIR

``systemd`` hosts boot systemd as PID 1; ``plain`` hosts run sshd under tini, with no service manager.
``up`` writes DIR/containers.json (name, address, container, kind) and adds the hosts' keys to
DIR/known_hosts (lines for other addresses stay); the controller key is DIR/id_ed25519, as for the
testbed. ``down`` removes only what DIR/podman-hosts-state.json records. Needs root, podman, runc and,
for ``image``, debootstrap (tools/setup-system.sh installs them).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbed
from testbed import TestbedError, Tools, log, read_json, run, write_file, write_json

IMAGE = "localhost/trustpoint-debian:12"
SUITE = "bookworm"
# What the image holds: systemd (PID 1 of the systemd hosts), sshd, tini (PID 1 of the plain hosts), and
# what the role finds installed instead of fetching it (these hosts reach no package mirror).
IMAGE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "tini", "python3", "python3-venv",
    "iproute2", "procps", "ca-certificates", "curl", "openssl", "python3-apt",
)  # fmt: skip
STATE_FILE = "podman-hosts-state.json"
KINDS = ("systemd", "plain")
# Podman 4.3 with crun cannot set RLIMIT_NOFILE here; runc can, given explicit limits.
PODMAN = ["podman", "--runtime", "runc"]  # resolved to absolute paths by podman()
ULIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
SSHD_DROP_IN = """# tools/podman_hosts.py: the host key is this container's own (bind-mounted)
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


def exe(name: str) -> str:
    path = shutil.which(name, path=testbed.SBIN_PATH)
    if path is None:
        raise TestbedError(f"{name} is not installed; run tools/setup-system.sh")
    return path


def podman(*args: str, check: bool = True, what: str = "") -> subprocess.CompletedProcess:
    return run([exe("podman"), *PODMAN[1:], *args], check=check, what=what or "podman " + args[0])


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        text = path.read_text()
        for block in text.split("\n\n"):
            if re.search(rf"^Suites:.*\b{SUITE}\b", block, re.M) and "security" not in block:
                found = re.search(r"^URIs:\s*(\S+)", block, re.M)
                if found:
                    return found.group(1)
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt").glob("sources.list.d/*.list"))]:
        if path.exists():
            found = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", path.read_text(), re.M)
            if found:
                return found.group(1)
    raise TestbedError(f"no Debian {SUITE} mirror in /etc/apt; pass --mirror URL")


IMAGE_LOCK = "/run/trustpoint-podman-image.lock"  # root-only directory: the tool runs as root


def cmd_image(args: argparse.Namespace) -> None:
    testbed.require_root()
    Tools(["podman", "runc", "tar"])
    # Test suites start Molecule's `server` scenario and the role tests at once: one builds, the other waits for it.
    lock = open(IMAGE_LOCK, "a")  # noqa: SIM115 - held until this process exits
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not args.force and podman("image", "exists", args.name, check=False).returncode == 0:
        log(f"image {args.name} exists")
        return
    mirror = args.mirror or debian_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tps-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap {SUITE} from {mirror} into {rootfs}")
        run(
            [
                exe("debootstrap"),
                "--variant=minbase",
                "--include=" + ",".join(IMAGE_PACKAGES),
                SUITE,
                str(rootfs),
                mirror,
            ],
            what="debootstrap",
        )
        # Every container gets its own host key (bind-mounted by `up`); none is baked into the image.
        for key in rootfs.glob("etc/ssh/ssh_host_*"):
            key.unlink()
        (rootfs / "etc/ssh/sshd_config.d/tps.conf").write_text(SSHD_DROP_IN)
        (rootfs / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
        # systemd creates a machine id at boot when the file is empty; no getty on a container.
        (rootfs / "etc/machine-id").write_text("")
        for unit in ("getty@tty1.service", "console-getty.service"):
            (rootfs / "etc/systemd/system" / unit).unlink(missing_ok=True)
            (rootfs / "etc/systemd/system" / unit).symlink_to("/dev/null")
        tar = subprocess.Popen([exe("tar"), "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [exe("podman"), *PODMAN[1:], "import", "--change", "CMD=/lib/systemd/systemd", "-", args.name],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise TestbedError(f"podman import failed: {imported.stderr.strip()}")
    log(f"built image {args.name} in {time.monotonic() - started:.0f} s")


class Container(testbed.Host):
    def __init__(self, spec: str, prefix: str, subnet: str) -> None:
        name, _sep, rest = spec.partition(":")
        octet, _sep, kind = rest.partition(":")
        kind = kind or "systemd"
        if kind not in KINDS:
            raise TestbedError(f"--host {spec!r}: the kind must be one of {', '.join(KINDS)}")
        super().__init__(*testbed.parse_host(f"{name}:{octet}"), prefix, subnet)
        self.kind = kind
        self.container = self.namespace

    def as_state(self) -> Dict[str, str]:
        return dict(super().as_state(), container=self.container, kind=self.kind)


def container_running(name: str) -> bool:
    proc = podman("inspect", "--format", "{{.State.Running}}", name, check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def remove_container(name: str) -> None:
    if podman("container", "exists", name, check=False).returncode == 0:
        podman("rm", "--force", "--time", "5", name, what=f"removing container {name}")


def start_container(tools: Tools, host: Container, directory: Path, bridge: str, image: str) -> None:
    ip = tools["ip"]
    ns = host.namespace
    run([ip, "netns", "add", ns], what=f"creating netns {ns}")
    run([ip, "-n", ns, "link", "set", "lo", "up"], what=f"{ns}: lo up")
    run([ip, "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns], what="veth")
    run([ip, "link", "set", host.veth, "master", bridge, "up"], what=f"attaching {host.veth}")
    run([ip, "-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0"], what=f"{ns}: address")
    run([ip, "-n", ns, "link", "set", "eth0", "up"], what=f"{ns}: eth0 up")
    hdir = directory / host.name
    mounts = [
        "--volume", f"{directory / 'id_ed25519.pub'}:/root/.ssh/authorized_keys:ro",
        "--volume", f"{hdir / 'ssh_host_ed25519_key'}:/etc/ssh/ssh_host_ed25519_key:ro",
        "--volume", f"{hdir / 'ssh_host_ed25519_key.pub'}:/etc/ssh/ssh_host_ed25519_key.pub:ro",
    ]  # fmt: skip
    common = [
        "run", "--detach", "--name", host.container, "--hostname", host.name,
        "--network", f"ns:/run/netns/{ns}", *ULIMITS, *mounts,
    ]  # fmt: skip
    if host.kind == "systemd":
        # Unit hardening (ProtectSystem, PrivateTmp, ...) builds mount namespaces: SYS_ADMIN.
        podman(*common, "--systemd=always", "--cap-add", "SYS_ADMIN", image, "/lib/systemd/systemd")
    else:
        podman(
            *common, "--systemd=false", image, "sh", "-c", "mkdir -p /run/sshd && exec tini -s -- /usr/sbin/sshd -D -e"
        )


def write_known_hosts(directory: Path, hosts: Sequence[Container]) -> None:
    """Replace the lines of these hosts' addresses in DIR/known_hosts, keep the others (the testbed's)."""
    path = directory / "known_hosts"
    ours = {h.address for h in hosts}
    lines = [
        line for line in (path.read_text().splitlines() if path.exists() else []) if line.split(" ")[0] not in ours
    ]
    for host in hosts:
        key = (directory / host.name / "ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"{host.address} {key[0]} {key[1]} {host.name}")
    write_file(path, "\n".join(lines) + "\n")


def cmd_up(args: argparse.Namespace) -> None:
    testbed.require_root()
    tools = Tools(["ip", "ssh-keygen", "podman", "runc"])
    directory = Path(os.path.abspath(args.dir))
    testbed.check_subnet(args.subnet)
    hosts = [Container(spec, args.prefix, args.subnet) for spec in args.host or ()]
    if not hosts:
        raise TestbedError("give at least one --host NAME:OCTET:KIND")
    if podman("image", "exists", args.image, check=False).returncode != 0:
        raise TestbedError(f"image {args.image} is missing: run `{sys.argv[0]} image` first")
    # No testbed.check_dir(): sshd checks the bind-mounted key's path inside the container, not this one.
    if not testbed.SAFE_PATH.match(str(directory)):
        raise TestbedError(f"--dir {directory}: use a path of letters, digits and ._/+@,=~- only")
    args.changed = True
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = read_json(directory / STATE_FILE) or {}
    state = {
        "bridge": args.bridge,
        "bridge_owned": bool(old.get("bridge_owned")) and old.get("bridge") == args.bridge,
        "hosts": [h.as_state() for h in hosts],
    }
    write_json(directory / STATE_FILE, state)  # before anything exists: `down` cleans up an interrupted `up`
    testbed.ensure_key(tools, directory / "id_ed25519", "trustpoint-testbed-controller")
    our_veth = re.compile(rf"^{re.escape(args.prefix)}-.+-h$")
    if not testbed.link_exists(tools, args.bridge):
        testbed.check_subnet_free(tools, args.bridge, testbed.check_subnet(args.subnet))
        state["bridge_owned"] = True
    testbed.ensure_bridge(tools, args.bridge, f"{args.subnet}.1", True, our_veth)
    write_json(directory / STATE_FILE, state)
    for host in hosts:
        hdir = directory / host.name
        hdir.mkdir(mode=0o700, exist_ok=True)
        testbed.ensure_key(tools, hdir / "ssh_host_ed25519_key", host.name)
        if container_running(host.container) and testbed.link_exists(tools, host.veth):
            log(f"{host.name}: already up ({host.container}, {host.address})")
            continue
        remove_container(host.container)
        testbed.teardown_host(tools, host.namespace, host.veth)
        log(f"{host.name}: starting {host.kind} container {host.container} ({host.address})")
        start_container(tools, host, directory, args.bridge, args.image)
    deadline = time.monotonic() + testbed.SSH_TIMEOUT
    for host in hosts:
        while not testbed.ssh_banner(host.address).startswith(testbed.SSH_BANNER):
            if not container_running(host.container) or time.monotonic() > deadline:
                logs = podman("logs", "--tail", "30", host.container, check=False)
                raise TestbedError(f"{host.name}: sshd does not answer:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.2)
    write_known_hosts(directory, hosts)
    write_json(directory / "containers.json", [dict(h.as_state()) for h in hosts])
    log(f"{len(hosts)} container(s) answer SSH")


def cmd_down(args: argparse.Namespace) -> None:
    testbed.require_root()
    directory = Path(os.path.abspath(args.dir))
    state = read_json(directory / STATE_FILE) if directory.is_dir() else None
    if not state:
        log(f"nothing recorded in {directory}; nothing to do")
        return
    tools = Tools(["ip", "podman", "runc"])
    for entry in state.get("hosts", []):
        remove_container(entry["container"])
        testbed.teardown_host(tools, entry["namespace"], entry["veth"])
        log(f"{entry['name']}: removed {entry['container']}")
    bridge = state.get("bridge")
    if bridge and state.get("bridge_owned") and testbed.link_exists(tools, bridge):
        ports = testbed.bridge_ports(tools, bridge)
        if ports:
            log(f"bridge {bridge} still has ports ({', '.join(ports)}); leaving it to their owner")
        else:
            testbed.delete_bridge(tools, bridge)
    (directory / STATE_FILE).unlink(missing_ok=True)
    (directory / "containers.json").unlink(missing_ok=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="podman_hosts.py", description=__doc__.split("\n\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    image = sub.add_parser("image", help="build the Debian image with debootstrap unless it exists")
    image.add_argument("--name", default=IMAGE, help=f"image name (default {IMAGE})")
    image.add_argument("--mirror", help="Debian mirror URL (default: the one this machine's apt uses)")
    image.add_argument("--force", action="store_true", help="build again although the image exists")
    up = sub.add_parser("up", help="start (or keep) the containers")
    up.add_argument("--dir", required=True, help="state directory (keys, known_hosts, containers.json)")
    up.add_argument("--prefix", default="tps", help="namespace and container name prefix (default: tps)")
    up.add_argument("--bridge", default="tpbr82", help="bridge to attach to, created if missing (default: tpbr82)")
    up.add_argument("--subnet", default="169.254.82", help="first three octets of the bridge's /24")
    up.add_argument("--image", default=IMAGE, help=f"image (default {IMAGE})")
    up.add_argument("--host", action="append", metavar="NAME:OCTET:KIND", help="KIND: systemd or plain (repeatable)")
    down = sub.add_parser("down", help="remove the containers recorded in DIR")
    down.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    handlers = {"image": cmd_image, "up": cmd_up, "down": cmd_down}
    try:
        handlers[args.command](args)
    except TestbedError as exc:
        print(f"podman_hosts: error: {exc}", file=sys.stderr)
        if getattr(args, "changed", False):
            print(f"podman_hosts: clean up with: {sys.argv[0]} down --dir {args.dir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
