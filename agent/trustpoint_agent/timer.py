# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""`trustpoint-agent install-timer`: run `trustpoint-agent renew` every day, without Ansible.

A systemd timer where systemd runs the machine (trustpoint-agent-renew.service + .timer, randomized
delay so that a fleet does not renew in the same second, Persistent= so a device that was off catches up),
else a cron entry (/etc/cron.d/trustpoint-agent, at a random time of day). Writing the same content again
changes nothing; it says what it did.

`uninstall-timer` (and `revoke`, once the revocation is recorded) removes both kinds: a decommissioned device
keeps nothing of Trustpoint scheduled. Removing what is already gone changes nothing.
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


class TimerError(OSError):
    """systemctl refused; the message holds its words."""


def systemd_running():
    return os.path.isdir("/run/systemd/system")


def _systemctl(*args, check=True):
    systemctl = shutil.which("systemctl") or "systemctl"
    result = subprocess.run([systemctl, *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        words = (result.stderr or result.stdout).strip() or "exit code %d" % result.returncode
        raise TimerError("systemctl %s failed: %s" % (" ".join(args), words))
    return result


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
            if changed:
                _systemctl("daemon-reload")
            _systemctl("enable", "--now", UNIT + ".timer")
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


def _unlink(path):
    """Delete path (a link itself, never its target); True when it was there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def uninstall(mode="auto", unit_dir=DEFAULT_UNIT_DIR, cron_file=DEFAULT_CRON_FILE):
    """Remove the timer install() wrote; returns sentences of what it did. mode auto removes both kinds, whichever
    systemd runs now: units written while it did not (an image being built) would start at the next boot."""
    if mode not in ("auto", "systemd", "cron"):
        raise ValueError("unknown timer mode %r (auto, systemd or cron)" % mode)
    done = []
    timer = os.path.join(unit_dir, UNIT + ".timer")
    if mode in ("auto", "systemd"):
        service = os.path.join(unit_dir, UNIT + ".service")
        # What `systemctl enable` links; removed by hand where systemd does not run.
        wanted = os.path.join(unit_dir, "timers.target.wants", UNIT + ".timer")
        running = systemd_running()
        if running and os.path.exists(timer):
            _systemctl("disable", "--now", UNIT + ".timer")
            done.append("stopped and disabled %s.timer" % UNIT)
        # The timer first: a crash after it leaves a service that nothing starts, which the next run removes.
        removed = [path for path in (timer, wanted, service) if _unlink(path)]
        if removed:
            done.append("removed %s" % ", ".join(removed))
            if running:
                _systemctl("daemon-reload")
                _systemctl("reset-failed", UNIT + ".service", check=False)  # not listed as failed forever
    if mode in ("auto", "cron") and _unlink(cron_file):
        done.append("removed %s" % cron_file)
    if not done:
        names = {"auto": "%s, %s" % (timer, cron_file), "systemd": timer, "cron": cron_file}
        done.append("no renewal timer to remove (%s)" % names[mode])
    return done
