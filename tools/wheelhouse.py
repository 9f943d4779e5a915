#!/usr/bin/env python
# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Download the wheels the service needs into a directory, for hosts without a package index.

    tools/wheelhouse.py DIR [--python-version 3.11] [--platform manylinux2014_x86_64]

DIR then holds every dependency of the service (with the PostgreSQL driver) and setuptools (to build the
service's own wheel): the trustpoint_server role's `trustpoint_server_wheelhouse`. Run it where PyPI is
reachable, for the Python version and platform of the hosts (default: this Python's), and copy DIR to the
controller. pip's cache makes a second run quick.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("postgresql",)
BUILD = ("setuptools>=77",)


def requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in EXTRAS:
        wanted += project["optional-dependencies"][extra]
    return [line.split("#", 1)[0].strip() for line in wanted] + list(BUILD)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--python-version", help="the hosts' Python, e.g. 3.11 (default: this one's)")
    parser.add_argument("--platform", action="append", help="pip's --platform (repeatable; default: this machine)")
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    command += ["--dest", str(args.dir), "--only-binary", ":all:"]
    if args.python_version:
        command += ["--python-version", args.python_version]
    for platform in args.platform or ():
        command += ["--platform", platform]
    args.dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([*command, *requirements()], check=False)
    if result.returncode == 0:
        print("%s: %d wheels" % (args.dir, len(list(args.dir.glob("*.whl")))))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
