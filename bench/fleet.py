#!/usr/bin/env python
# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fleet onboarding with Ansible: N real SSH device hosts onboarded by trustpoint.pki.onboard_devices.

    .venv/bin/python bench/fleet.py                       # N = 10 and 50, forks = N
    .venv/bin/python bench/fleet.py --hosts 20 --prefill 5000 --json out.json

For each N: tools/testbed.py brings up N device hosts (network namespaces with their own sshd, prefix tpf,
bridge tpbr80, 169.254.80.0/24) and the server (port 8480); the database is filled with --prefill devices
in another domain first. Then, with forks = N and pipelining on:

  1. the peer: a play of one ansible.builtin.ping per host, the floor of reaching N hosts with Ansible;
  2. onboard_devices on the fresh fleet (every host registers and enrolls);
  3. onboard_devices again: nothing changes (checked), the idempotent re-run.

It prints wall seconds (total and per device), controller CPU per device (ansible-playbook with its workers,
ssh clients and persistent ssh masters), server CPU per device, the rest of the machine's CPU (the device
hosts' module runs share the machine), and each run's ratio to the peer. Targets (issue 12, 2-core machine,
N = 50): onboarding under 90 s, the re-run under 45 s, controller CPU under 1 s per device. It prints MET or
NOT MET and exits 0 either way: it measures, it does not test. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
TESTBED = REPO / "tools" / "testbed.py"
PREFIX, BRIDGE, SUBNET, PORT = "tpf", "tpbr80", "169.254.80", 8480
DOMAIN = "bench"
FIRST_OCTET = 11
TARGETS = {"onboard": 90.0, "rerun": 45.0}  # seconds for N = 50
TARGET_CPU_PER_DEVICE = 1.0
PR_SET_CHILD_SUBREAPER = 36
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


def log(text: str) -> None:
    print(f"fleet: {text}", flush=True)


# --------------------------------------------------------------------------- CPU accounting


def become_subreaper() -> None:
    """Orphans (ssh's ControlPersist masters detach) become our children, so their CPU is ours to collect."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise BenchError("prctl(PR_SET_CHILD_SUBREAPER) failed")


def reap_children() -> float:
    """Wait for every child that ended; their CPU seconds (user + system, with their own reaped children)."""
    total = 0.0
    while True:
        try:
            pid, _status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return total
        if pid == 0:
            return total
        total += usage.ru_utime + usage.ru_stime


def proc_children() -> Dict[int, List[int]]:
    children: Dict[int, List[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_cpu(pid: int) -> float:
    """CPU seconds of a live process tree (its processes' own times, from /proc)."""
    children, total, todo = proc_children(), 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        todo.extend(children.get(current, []))
    return total


def machine_cpu() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def close_masters(directory: Path) -> None:
    """Ask ssh's persistent masters (ControlPersist) under directory to exit."""
    ssh = shutil.which("ssh") or "ssh"
    for control in directory.glob("*"):
        subprocess.run([ssh, "-o", f"ControlPath={control}", "-O", "exit", "x"], capture_output=True, check=False)


# --------------------------------------------------------------------------- the bench


class Fleet:
    def __init__(self, directory: Path, size: int, port: int) -> None:
        self.dir = directory
        self.size = size
        self.port = port
        self.server: Dict[str, Any] = {}
        self.token = ""

    def up(self) -> None:
        if FIRST_OCTET + self.size - 1 > 254:
            raise BenchError(f"at most {255 - FIRST_OCTET} hosts fit in {SUBNET}.0/24")
        cmd = [sys.executable, str(TESTBED), "up", "--dir", str(self.dir), "--prefix", PREFIX, "--bridge", BRIDGE,
               "--subnet", SUBNET, "--server-port", str(self.port), "--python-interpreter", sys.executable]  # fmt: skip
        for index in range(self.size):
            cmd += ["--host", f"d{index + 1}:{FIRST_OCTET + index}"]
        started = time.monotonic()
        if subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False).returncode != 0:
            raise BenchError("tools/testbed.py up failed; its message is above")
        self.server = json.loads((self.dir / "server.json").read_text())
        self.token = Path(self.server["token_file"]).read_text().strip()
        log(f"{self.size} device hosts and the server up in {time.monotonic() - started:.1f} s")

    def down(self) -> None:
        close_masters(self.dir / "cp")
        reap_children()
        subprocess.run([sys.executable, str(TESTBED), "down", "--dir", str(self.dir)], stdout=subprocess.DEVNULL,
                       check=False)  # fmt: skip

    def api(self, method: str, path: str, payload: Optional[dict] = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(  # noqa: S310 (the testbed server's https URL)
            self.server["api_url"] + "/api/v1" + path,
            data=data,
            method=method,
            headers={"Authorization": "Bearer " + self.token, "Content-Type": "application/json"},
        )
        context = ssl.create_default_context(cafile=self.server["ca_file"])
        handlers = (urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
        opener = urllib.request.build_opener(*handlers)
        with opener.open(request, timeout=60) as response:
            body = response.read()
        return json.loads(body) if body else None

    def prefill(self, count: int) -> None:
        """A filled database: count devices of another domain (pending: the playbook looks devices up by name,
        so their state does not matter, their number does)."""
        if count <= 0:
            return
        started = time.monotonic()
        self.api("POST", "/domains", {"name": "filler"})

        def register(index: int) -> None:
            device = {"name": f"filler-{index:06d}", "domain": "filler", "onboarding_method": "cmp_shared_secret"}
            self.api("POST", "/devices", device)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(register, range(count)))
        log(f"database filled with {count} devices of domain filler in {time.monotonic() - started:.1f} s")

    def playbook(self, name: str, target: str) -> Dict[str, Any]:
        """Run ansible-playbook; wall time, controller CPU (with ssh masters), server and machine CPU, recap."""
        secrets = self.dir / "secrets.yml"
        if not secrets.exists():
            fd = os.open(str(secrets), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"trustpoint_api_token: {json.dumps(self.token)}\n")
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.dir / "inventory.yml"),
               "-f", str(self.size), "-e", f"trustpoint_domain={DOMAIN}", "-e", "trustpoint_create_domain=true",
               "-e", f"trustpoint_server_url={self.server['api_url']}",
               "-e", f"trustpoint_enrollment_url={self.server['device_url']}",
               "-e", f"trustpoint_ca_path={self.server['ca_file']}", "-e", f"@{secrets}", target]  # fmt: skip
        env = dict(
            os.environ,
            ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.dir / "cp"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
            NO_PROXY="127.0.0.1," + SUBNET + ".1",
        )
        reap_children()
        server_before, machine_before = tree_cpu(self.server["pid"]), machine_cpu()
        started = time.monotonic()
        with open(self.dir / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)  # fmt: skip
            _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        # The persistent ssh masters hold CPU of this run too: end them, and count it.
        close_masters(self.dir / "cp")
        deadline = time.monotonic() + 5
        masters = 0.0
        while time.monotonic() < deadline:
            masters += reap_children()
            if not list((self.dir / "cp").glob("*")):
                break
            time.sleep(0.05)
        masters += reap_children()
        controller = usage.ru_utime + usage.ru_stime + masters
        server = tree_cpu(self.server["pid"]) - server_before
        machine = machine_cpu() - machine_before
        output = (self.dir / f"{name}.log").read_text(errors="replace")
        if proc.returncode != 0:
            raise BenchError(f"{name}: ansible-playbook exit {proc.returncode}:\n" + output[-3000:])
        recap = {}
        for line in output.splitlines():
            match = re.match(r"^(\S+)\s+: (ok=.*)$", line)
            if match:
                recap[match.group(1)] = {k: int(v) for k, v in (i.split("=") for i in match.group(2).split())}
        return {"wall": wall, "controller_cpu": controller, "server_cpu": server,
                "rest_cpu": max(0.0, machine - controller - server), "recap": recap}  # fmt: skip

    def check_onboarded(self) -> None:
        devices = self.api("GET", f"/devices?domain={DOMAIN}")
        onboarded = [d for d in devices if (d["credential"] or {}).get("status") == "active"]
        if len(onboarded) != self.size:
            raise BenchError(f"{len(onboarded)} of {self.size} devices are onboarded with an active credential")


def measure(directory: Path, size: int, port: int, prefill: int) -> Dict[str, Any]:
    if directory.exists():
        subprocess.run([sys.executable, str(TESTBED), "down", "--dir", str(directory)], stdout=subprocess.DEVNULL,
                       check=False)  # fmt: skip
        shutil.rmtree(directory)
    directory.mkdir(mode=0o700, parents=True)
    fleet = Fleet(directory, size, port)
    try:
        fleet.up()
        fleet.prefill(prefill)
        (directory / "ping.yml").write_text(
            "- name: Peer\n  hosts: devices\n  gather_facts: false\n  tasks:\n"
            "    - name: Ping\n      ansible.builtin.ping:\n"
        )
        results = {"peer": fleet.playbook("peer", str(directory / "ping.yml"))}
        results["onboard"] = fleet.playbook("onboard", "trustpoint.pki.onboard_devices")
        fleet.check_onboarded()
        results["rerun"] = fleet.playbook("rerun", "trustpoint.pki.onboard_devices")
        changed = {host: r["changed"] for host, r in results["rerun"]["recap"].items() if r["changed"]}
        if changed:
            raise BenchError(f"the re-run changed something: {changed}")
        return results
    finally:
        fleet.down()


def report(size: int, results: Dict[str, Any]) -> List[str]:
    lines = [f"N = {size} device hosts, forks = {size}"]
    header = f"  {'run':8} {'wall s':>7} {'s/device':>9} {'ctl CPU s/dev':>14} {'srv CPU ms/dev':>15} "
    header += f"{'rest CPU s/dev':>15} {'x peer':>7}  target"
    lines.append(header)
    peer = results["peer"]["wall"]
    for run in ("peer", "onboard", "rerun"):
        r = results[run]
        target = ""
        if run in TARGETS and size == 50:
            met = r["wall"] < TARGETS[run] and r["controller_cpu"] / size < TARGET_CPU_PER_DEVICE
            target = f"{'MET' if met else 'NOT MET'} (< {TARGETS[run]:.0f} s, < {TARGET_CPU_PER_DEVICE:.0f} s CPU/dev)"
        lines.append(
            f"  {run:8} {r['wall']:7.1f} {r['wall'] / size:9.2f} {r['controller_cpu'] / size:14.2f} "
            f"{1000 * r['server_cpu'] / size:15.1f} {r['rest_cpu'] / size:15.2f} {r['wall'] / peer:7.1f}  {target}"
        )
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--hosts", default="10,50", help="comma-separated fleet sizes N (default 10,50)")
    parser.add_argument("--prefill", type=int, default=2000, help="devices of another domain in the database first")
    parser.add_argument("--port", type=int, default=PORT, help=f"the server's port (default {PORT})")
    parser.add_argument("--dir", default="~/.cache/trustpoint-bench-fleet", help="state directory")
    parser.add_argument("--json", help="write the measurements to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("fleet: run as root (the device hosts are network namespaces)", file=sys.stderr)
        return 1
    become_subreaper()
    directory = Path(os.path.expanduser(args.dir)).absolute()
    load = os.getloadavg()[0]
    log(f"load average before: {load:.2f} on {os.cpu_count()} CPUs (other work on the machine skews the numbers)")
    all_results, lines = {}, []
    try:
        for size in (int(n) for n in args.hosts.split(",")):
            log(f"N = {size}")
            all_results[size] = measure(directory / str(size), size, args.port, args.prefill)
            lines += report(size, all_results[size])
    except BenchError as exc:
        print(f"fleet: FAILED: {exc}", file=sys.stderr)
        return 1
    print()
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({str(k): v for k, v in all_results.items()}, indent=2) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
