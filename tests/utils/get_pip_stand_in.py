# Copyright (c) Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Offline stand-in for the get-pip.py bootstrap script that ansible-test downloads.

``ansible-test ... --venv`` creates virtual environments without pip and bootstraps pip into them by
running ``get-pip.py`` fetched from a CI host that is not reachable from every machine. ansible-test
uses ``~/.ansible/test/cache/get_pip_<pip version with underscores>.py`` instead when that file
exists; ``tools/sanity.sh`` copies this script there.

ansible-test runs it (through its ``quiet_pip.py`` wrapper, with ``runpy``) as::

    python get_pip_24_2.py --disable-pip-version-check pip==24.2 --no-setuptools --no-wheel

This stand-in installs the pip bundled with the interpreter (``ensurepip``), which needs no network,
then lets that pip install the requested packages (``pip==24.2``) from the configured index.
``--no-setuptools``/``--no-wheel`` are get-pip options that pip itself does not know: they are dropped
(``ensurepip`` installs neither package on the Pythons ansible-test supports).
"""

from __future__ import annotations

import subprocess
import sys

GET_PIP_ONLY_OPTIONS = ("--no-setuptools", "--no-wheel", "--no-pip")


def main(argv=None):
    """Bootstrap pip with ensurepip, then install the requested packages with it."""
    args = list(sys.argv[1:] if argv is None else argv)
    pip_args = [arg for arg in args if arg not in GET_PIP_ONLY_OPTIONS]

    commands = [[sys.executable, "-m", "ensurepip", "--default-pip"]]
    if any(not arg.startswith("-") for arg in pip_args):
        commands.append([sys.executable, "-m", "pip", "install", *pip_args])

    for command in commands:
        returncode = subprocess.call(command)
        if returncode:
            sys.stderr.write(f"get-pip stand-in: {' '.join(command)} failed with exit code {returncode}\n")
            return returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
