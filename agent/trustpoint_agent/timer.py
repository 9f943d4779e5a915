# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""`trustpoint-agent install-timer`: run `trustpoint-agent renew` every day, without Ansible.

A systemd timer where systemd runs the machine (trustpoint-agent-renew.service + .timer, randomized
delay so that a fleet does not renew in the same second, Persistent= so a device that was off catches up),
else a cron entry (/etc/cron.d/trustpoint-agent, at a random time of day). Writing the same content again
changes nothing; it says what it did.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import subprocess

UNIT = "trustpoint-agent-renew"
DEFAULT_UNIT_DIR = "/etc/systemd/system"
DEFAULT_CRON_FILE = "/etc/cron.d/trustpoint-agent"

SERVICE = """\
# Written by trustpoint-agent install-timer: renew the device's Trustpoint credential when it is due.
[Unit]
Description=Renew the Trustpoint domain credential when it is due
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart={command}
PrivateTmp=true
NoNewPrivileges=true
"""

TIMER = """\
# Written by trustpoint-agent install-timer.
[Unit]
Description=Renew the Trustpoint domain credential when it is due (daily)

[Timer]
OnCalendar=daily
RandomizedDelaySec=6h
Persistent=true

[Install]
WantedBy=timers.target
"""

CRON = """\
# Written by trustpoint-agent install-timer: renew the device's Trustpoint credential when it is due.
{minute} {hour} * * * root {command} >/dev/null 2>&1
"""


def systemd_running():
    return os.path.isdir("/run/systemd/system")


def _write(path, content):
    """Write content to path unless it holds it already; True when it wrote."""
    try:
        with open(path) as handle:
            if handle.read() == content:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
        os.fchmod(handle.fileno(), 0o644)  # whatever the umask: systemd and cron read them
    os.replace(tmp, path)
    return True


def install(renew_argv, mode="auto", unit_dir=DEFAULT_UNIT_DIR, cron_file=DEFAULT_CRON_FILE, enable=True):
    """Install the timer running renew_argv (the renew command line); returns sentences of what it did."""
    command = " ".join(shlex.quote(part) for part in renew_argv)
    if mode == "auto":
        mode = "systemd" if systemd_running() else "cron"
    done = []
    if mode == "systemd":
        service = os.path.join(unit_dir, UNIT + ".service")
        timer = os.path.join(unit_dir, UNIT + ".timer")
        changed = _write(service, SERVICE.format(command=command))
        changed = _write(timer, TIMER) or changed
        done.append(("wrote %s and %s" % (service, timer)) if changed else "%s is up to date" % timer)
        if enable and systemd_running():
            systemctl = shutil.which("systemctl") or "systemctl"
            if changed:
                subprocess.run([systemctl, "daemon-reload"], check=True)
            subprocess.run([systemctl, "enable", "--now", UNIT + ".timer"], check=True, capture_output=True)
            done.append("enabled and started %s.timer" % UNIT)
        elif enable:
            done.append("systemd is not running: enable it later with `systemctl enable --now %s.timer`" % UNIT)
    elif mode == "cron":
        previous = None
        try:
            with open(cron_file) as handle:
                previous = handle.read()
        except FileNotFoundError:
            pass
        # Keep the time of day chosen before (idempotent); a new entry gets a random one.
        minute, hour = random.randrange(60), random.randrange(24)  # noqa: S311 (spreading load, not security)
        if previous:
            fields = [line.split() for line in previous.splitlines() if line and not line.startswith("#")]
            if fields and len(fields[0]) > 2:
                minute, hour = fields[0][0], fields[0][1]
        content = CRON.format(minute=minute, hour=hour, command=command)
        done.append(("wrote %s" % cron_file) if _write(cron_file, content) else "%s is up to date" % cron_file)
    else:
        raise ValueError("unknown timer mode %r (auto, systemd or cron)" % mode)
    return done
