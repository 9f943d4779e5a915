# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""trustpoint-agent: onboard this device into a Trustpoint PKI by itself, and keep its credential renewed.

    trustpoint-agent aoki                          zero-touch: find the owner (mDNS), check it, enroll
    trustpoint-agent onboard --url URL --token T   guided: the command the operator was shown
    trustpoint-agent renew                         renew the credential when it is due
    trustpoint-agent status                        what the device holds
    trustpoint-agent install-timer                 renew daily (systemd timer or cron)
    trustpoint-agent uninstall-timer               renew no more: remove that timer
    trustpoint-agent revoke                        decommission: revoke the credential, delete its key, remove the timer

Exit codes: 0 done, 1 failed (the message says why), 2 wrong usage, 3 `aoki` does not onboard a device that was
decommissioned (without --force). `renew` on a revoked device exits 0 without contacting the server: a timer left
behind is harmless.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time

from trustpoint_core import deps
from trustpoint_core.cmp_message import DEVICE_REVOCATION_REASONS
from trustpoint_core.errors import TrustpointError

from . import files, timer

log = logging.getLogger("trustpoint_agent")

FACTORY_DIR = "/etc/trustpoint-agent"
STATE_DIR = "/var/lib/trustpoint-agent"
# Back-off between AOKI rounds: from FIRST_WAIT doubling to MAX_WAIT seconds, with jitter (a plant full of
# devices powered on together must not ask the server in lockstep).
# cmd_aoki's exit code for a decommissioned device: the service unit counts it as done and does not restart it.
REVOKED = 3
FIRST_WAIT = 5
MAX_WAIT = 300


def _agent(args, factory=False):
    from .onboarding import Agent, Factory

    state = files.StateDir(args.state_dir).ensure()
    provisioning = None
    if factory:
        base = args.factory_dir
        provisioning = Factory(
            args.idevid or os.path.join(base, "idevid.pem"),
            args.idevid_key or os.path.join(base, "idevid.key"),
            args.idevid_chain or os.path.join(base, "idevid-chain.pem"),
            args.owner_truststore or os.path.join(base, "owner-truststore.pem"),
        )
    return Agent(state, provisioning, args.key_type, args.timeout, args.max_owner_depth, args.retries)


def cmd_aoki(args):
    from .discovery import Candidate, discover

    agent = _agent(args, factory=True)
    if not args.force and agent.valid_credential() is not None:
        print("already onboarded (%s); --force onboards again" % agent.state.path)
        return 0
    named = [Candidate(args.url, *_host_port(args.url), {})] if args.url else None  # a wrong --url is no retry
    wait, attempt = FIRST_WAIT, 0
    while True:
        if _decommissioned(agent, args):
            return REVOKED
        attempt += 1
        try:
            if named:
                candidates = named
            else:
                candidates = discover(args.discovery_timeout, args.interface)
                log.info("mDNS: %d owner service(s): %s", len(candidates), ", ".join(map(repr, candidates)) or "none")
            with agent.state.locked():
                if _decommissioned(agent, args):  # revoked while this round looked for the server
                    return REVOKED
                print(agent.aoki(candidates, args.protocol))
            return 0
        except Exception as exc:  # the device keeps trying: nobody is there to start it again
            if isinstance(exc, (TrustpointError, files.FilesError, OSError)):
                log.error("%s", exc)
            else:
                log.exception("unexpected error (please report it)")
            if args.attempts and attempt >= args.attempts:
                print("trustpoint-agent: %s" % (exc if str(exc) else type(exc).__name__), file=sys.stderr)
                return 1
        pause = min(wait, MAX_WAIT) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not security)
        log.info("trying again in %.0f s", pause)
        time.sleep(pause)
        wait *= 2


def _decommissioned(agent, args):
    """A decommissioned device does not come back by itself: at its next boot, or while aoki waited for the server
    (`trustpoint-agent revoke` ran meanwhile). --force onboards it again."""
    if args.force or not agent.revoked():
        return False
    print(
        "trustpoint-agent: the device was decommissioned at %s (trustpoint-agent revoke); --force onboards it again"
        % agent.revoked(),
        file=sys.stderr,
    )
    return True


def _host_port(url):
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("--url must be an https:// URL, e.g. https://trustpoint.example:8443")
    return parts.hostname, parts.port or 443


def cmd_onboard(args):
    _host_port(args.url)
    agent = _agent(args)
    if not args.force and agent.valid_credential() is not None:
        print("already onboarded (%s); --force onboards again with the token" % agent.state.path)
        return 0
    # `--token -`: from standard input, so that the token never shows in the process list.
    token = sys.stdin.readline().strip() if args.token == "-" else args.token  # noqa: S105 ("-" is not a password)
    if not token:
        raise ValueError("--token -: standard input holds no token")
    with agent.state.locked():
        print(agent.onboard(args.url, token, args.cacert))
    return 0


def cmd_renew(args):
    agent = _agent(args)
    with agent.state.locked():
        print(agent.renew(args.force, args.renew_before_days))
    return 0


def cmd_revoke(args):
    if not os.path.isdir(args.state_dir):  # a mistyped --state-dir must not be recorded as a decommissioned device
        raise files.FilesError("nothing to revoke: %s does not exist (the agent never ran here)" % args.state_dir)
    agent = _agent(args)
    with agent.state.locked():
        print(agent.revoke(args.reason))
    # Here, not in the role: a device decommissioned by hand must not renew either. Only once the revocation is
    # recorded (now, or by an earlier run that stopped before this): until then the credential needs its renewal.
    for line in timer.uninstall("auto", args.unit_dir, args.cron_file):
        print(line)
    return 0


def cmd_status(args):
    report = _agent(args).status(args.renew_before_days)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    elif not report["onboarded"]:
        print("not onboarded%s" % (": " + report["problem"] if "problem" in report else ""))
    else:
        certificate = report["certificate"]
        print("onboarded with %s at %s (%s)" % (report["method"], report["server"], report["protocol"]))
        print("credential %s, serial %s" % (certificate["subject"], certificate["serial_number"]))
        print(
            "valid until %s (%.1f days)%s"
            % (certificate["not_after"], report["days_left"], "; renewal due" if report["renewal_due"] else "")
        )
    return 0 if report["onboarded"] else 1


def cmd_install_timer(args):
    # The options of the program come before the command (argparse: `renew --state-dir` is refused).
    program = [args.program] if args.program else _program()
    command = [*program, "--state-dir", os.path.abspath(args.state_dir), "--key-type", args.key_type, "renew"]
    if args.renew_before_days is not None:
        command += ["--renew-before-days", str(args.renew_before_days)]
    for line in timer.install(command, args.mode, args.unit_dir, args.cron_file, not args.no_enable):
        print(line)
    return 0


def cmd_uninstall_timer(args):
    for line in timer.uninstall(args.mode, args.unit_dir, args.cron_file):
        print(line)
    return 0


def _program():
    """This program's argv: its absolute path (the console script), or `python -m trustpoint_agent.cli`."""
    argv0 = os.path.abspath(sys.argv[0])
    if os.path.basename(argv0) == "trustpoint-agent" and os.access(argv0, os.X_OK):
        return [argv0]
    return [sys.executable, "-m", "trustpoint_agent.cli"]


def parser():
    top = argparse.ArgumentParser(prog="trustpoint-agent", description=__doc__.split("\n\n", maxsplit=1)[0])
    top.add_argument("--state-dir", default=STATE_DIR, help="the device's credential and state (default %(default)s)")
    top.add_argument("--key-type", default="ecdsa-p256", help="the key the device generates (default %(default)s)")
    top.add_argument(
        "--timeout",
        type=int,
        default=30,
        help="seconds each step of an HTTPS request may take; a whole request at most twice that (default %(default)s)",
    )
    top.add_argument(
        "--retries",
        type=int,
        default=3,
        help="send a request again this many times when its answer is lost (after 1, 2, 4 s; default %(default)s)",
    )
    top.add_argument("--max-owner-depth", type=int, default=2, help=argparse.SUPPRESS)
    top.add_argument("-v", "--verbose", action="store_true", help="say what happens")
    sub = top.add_subparsers(dest="command", required=True)

    aoki = sub.add_parser("aoki", help="zero-touch onboarding with the IDevID (AOKI); retries until onboarded")
    aoki.add_argument("--factory-dir", default=FACTORY_DIR, help="the factory provisioning (default %(default)s)")
    aoki.add_argument("--idevid", help="IDevID certificate (default FACTORY/idevid.pem)")
    aoki.add_argument("--idevid-key", help="its private key (default FACTORY/idevid.key)")
    aoki.add_argument("--idevid-chain", help="its intermediates (default FACTORY/idevid-chain.pem, if present)")
    aoki.add_argument("--owner-truststore", help="the owner's trust anchor(s) (default FACTORY/owner-truststore.pem)")
    aoki.add_argument("--url", help="the owner service (https://host:port) instead of finding it over mDNS")
    aoki.add_argument("--interface", action="append", metavar="ADDRESS", help="browse mDNS on this IPv4 address only")
    aoki.add_argument("--discovery-timeout", type=float, default=5.0, help="seconds to listen for servers")
    aoki.add_argument("--protocol", choices=("auto", "est", "cmp"), default="auto", help="how to enroll")
    aoki.add_argument("--attempts", type=int, default=0, help="give up after N rounds (default 0: never)")
    aoki.add_argument("--force", action="store_true", help="onboard again although a valid credential is there")
    aoki.set_defaults(func=cmd_aoki)

    onboard = sub.add_parser("onboard", help="guided onboarding with the one-time token the operator was shown")
    onboard.add_argument("--url", required=True, help="the Trustpoint server (https://host:port)")
    onboard.add_argument("--token", required=True, help="the one-time onboarding token ('-': read it from stdin)")
    onboard.add_argument("--cacert", help="the server's TLS CA certificate, for a token that pins none")
    onboard.add_argument("--force", action="store_true", help="onboard again although a valid credential is there")
    onboard.set_defaults(func=cmd_onboard)

    renew = sub.add_parser("renew", help="renew the credential (new key) when it is within its renewal window")
    renew.add_argument("--force", action="store_true", help="renew now, due or not")
    renew.set_defaults(func=cmd_renew)

    revoke = sub.add_parser("revoke", help="revoke the credential (CMP rr signed with it) and delete its key")
    revoke.add_argument(
        "--reason",
        choices=DEVICE_REVOCATION_REASONS,
        default="cessationOfOperation",
        help="the CRL reason (default %(default)s; keyCompromise when the key may be known to others)",
    )
    revoke.set_defaults(func=cmd_revoke)
    _timer_paths(revoke, "the renewal timer's units, removed after the revocation")

    status = sub.add_parser("status", help="what the device holds; exit code 0 when it has a valid credential")
    status.add_argument("--json", action="store_true", help="as JSON")
    status.set_defaults(func=cmd_status)

    for command in (renew, status):
        command.add_argument(
            "--renew-before-days", type=float, help="renew when fewer days remain (default: a third of the lifetime)"
        )

    install = sub.add_parser("install-timer", help="renew daily without Ansible: a systemd timer or a cron entry")
    install.add_argument(
        "--mode", choices=("auto", "systemd", "cron"), default="auto", help="auto: systemd where it runs, else cron"
    )
    _timer_paths(install, "where the systemd units go")
    install.add_argument("--program", help="the trustpoint-agent command the timer runs (default: this one)")
    install.add_argument("--renew-before-days", type=float, help="passed on to renew")
    install.add_argument("--no-enable", action="store_true", help="write the units, do not enable them")
    install.set_defaults(func=cmd_install_timer)

    uninstall = sub.add_parser("uninstall-timer", help="remove what install-timer wrote (units or cron entry)")
    uninstall.add_argument(
        "--mode", choices=("auto", "systemd", "cron"), default="auto", help="auto: both kinds, whichever is there"
    )
    _timer_paths(uninstall, "where the systemd units are")
    uninstall.set_defaults(func=cmd_uninstall_timer)
    return top


def _timer_paths(command, unit_dir_help):
    command.add_argument("--unit-dir", default=timer.DEFAULT_UNIT_DIR, help="%s (default %%(default)s)" % unit_dir_help)
    command.add_argument(
        "--cron-file", default=timer.DEFAULT_CRON_FILE, help="the cron entry's file (default %(default)s)"
    )


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "aoki" else logging.WARNING,
        format="%(asctime)s trustpoint-agent: %(message)s",
    )
    missing, _trace = deps.missing()
    if missing:
        print("trustpoint-agent: missing Python libraries: %s" % ", ".join(missing), file=sys.stderr)
        return 1
    os.umask(0o077)
    try:
        return args.func(args)
    except (TrustpointError, files.FilesError, OSError) as exc:
        print("trustpoint-agent: %s" % exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        print("trustpoint-agent: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
