# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The oldest cryptography each part allows, declared in several files, kept in step (issue 16).

The core's floor (deps.CRYPTOGRAPHY_FLOOR) is the oldest cryptography whose X.509 parser was compared with pyasn1 for
what cmp_der's extraCerts check takes (tests/unit/test_cmp_der.py, run on each version from the floor on) and that
passes the core's unit tests: cryptography 37 read OBJECT IDENTIFIERs with arcs not in their shortest form (cmp_der
now refuses them itself) and parsed RFC 4514 names in reverse order (a device's subject reversed). The
device agent ships the core and declares the same floor; the server and the execution environment may ask for more
(the server needs x509.verification's extension policies, 45), never for less. Lowering a floor means running those
tests on the older version first.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import REPO
from trustpoint_core import deps

# Where each part declares its cryptography requirement, and a pattern for its floor.
DECLARED = {
    "server (pyproject.toml)": ("pyproject.toml", r'^\s*"cryptography>=(\d+)[^"]*",'),
    "agent (agent/pyproject.toml)": ("agent/pyproject.toml", r'^\s*"cryptography>=(\d+)[^"]*",'),
    "execution environment (meta/ee-requirements.txt)": ("meta/ee-requirements.txt", r"^cryptography>=(\d+)"),
    "core (deps.py)": ("plugins/module_utils/deps.py", r"^CRYPTOGRAPHY_FLOOR = (\d+)$"),
}


def floor(part):
    path, pattern = DECLARED[part]
    found = re.findall(pattern, (REPO / path).read_text(), re.MULTILINE)
    assert len(found) == 1, "%s: expected one cryptography floor matching %r, found %s" % (path, pattern, found)
    return int(found[0])


def test_the_core_floor_is_the_one_deps_reports():
    assert floor("core (deps.py)") == deps.CRYPTOGRAPHY_FLOOR
    assert deps.REQUIREMENTS["cryptography"] == "cryptography >= %d" % deps.CRYPTOGRAPHY_FLOOR


def test_the_agent_declares_the_core_floor():
    """The agent is the core on a device: a lower floor would install a cryptography cmp_der was not compared with, a
    higher one would refuse devices the Ansible modules serve."""
    assert floor("agent (agent/pyproject.toml)") == deps.CRYPTOGRAPHY_FLOOR


@pytest.mark.parametrize("part", ["server (pyproject.toml)", "execution environment (meta/ee-requirements.txt)"])
def test_no_part_allows_less_than_the_core(part):
    assert floor(part) >= deps.CRYPTOGRAPHY_FLOOR


@pytest.mark.parametrize(("version", "major"), [("45.0.7", 45), ("37.0.4", 37), ("3.4.8", 3), ("46.0.0.dev1", 46)])
def test_major_version(version, major):
    assert deps.major_version(version) == major


# A cryptography older than the floor, imported in a fresh interpreter in its place.
_OLD_CRYPTOGRAPHY = """
import json, sys, types
sys.modules["cryptography"] = types.SimpleNamespace(__version__="37.0.4")
from trustpoint_core import deps
print(json.dumps([deps.missing()[0], deps.missing("cryptography")[0], deps.missing("pyasn1")[0]]))
"""


def test_an_older_cryptography_counts_as_missing():
    """It imports, but the core was not tested with it (cryptography 37 reverses an RFC 4514 subject): the modules'
    `auto` backend takes openssl, `python` fails and the agent refuses, each naming the version found."""
    done = subprocess.run([sys.executable, "-c", _OLD_CRYPTOGRAPHY], capture_output=True, text=True, check=True)
    everything, alone, pyasn1 = json.loads(done.stdout)
    wanted = "cryptography >= %d, found 37.0.4" % deps.CRYPTOGRAPHY_FLOOR
    assert everything == [wanted] and alone == [wanted]
    assert pyasn1 == []


def test_this_cryptography_is_not_missing():
    assert deps.missing() == ([], "")


def test_the_modules_document_the_floor():
    """What a module's `requirements` promise is what deps.missing() accepts."""
    documented = {
        path.name: re.findall(r"C\(cryptography >= (\d+)\)", path.read_text())
        for path in sorted((REPO / "plugins" / "modules").glob("*.py"))
    }
    documented = {name: found for name, found in documented.items() if found}
    assert documented, "no module documents its cryptography requirement"
    assert {name: {int(major) for major in found} for name, found in documented.items()} == {
        name: {deps.CRYPTOGRAPHY_FLOOR} for name in documented
    }
