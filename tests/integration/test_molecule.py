# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run every Molecule scenario (molecule/<scenario>/molecule.yml) as one pytest test.

CI counts pytest results, so each `molecule test -s <scenario>` is a parametrized test here. The
scenarios build real SSH hosts from network namespaces (tools/testbed.py) and Podman containers
(tools/podman_hosts.py, the `server` scenario), which needs root.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))
TAIL_LINES = 80
MAX_CAUSES = 60
CAUSE = re.compile(r"^(FAILED |E +\w*(Error|Exception)\b|fatal:|failed:|\[ERROR\]|CRITICAL|ERROR )")


@pytest.mark.molecule
@pytest.mark.skipif(os.geteuid() != 0, reason="Molecule scenarios build network namespaces: run as root")
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str) -> None:
    collections = REPO / "build" / "collections"
    if not (collections / "ansible_collections" / "trustpoint" / "pki" / "galaxy.yml").exists():
        pytest.fail(f"{collections}/ansible_collections/trustpoint/pki is missing: run `make setup`", pytrace=False)
    venv_bin = Path(sys.executable).parent
    molecule = venv_bin / "molecule"
    if not molecule.exists():
        molecule = Path(shutil.which("molecule") or "molecule")
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    env["PATH"] = os.pathsep.join([str(venv_bin), env.get("PATH", "")])
    env.setdefault("ANSIBLE_FORCE_COLOR", "0")
    env["PY_COLORS"] = "0"
    env["NO_COLOR"] = "1"

    proc = subprocess.run(
        [str(molecule), "test", "-s", scenario],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stdout.splitlines()
        # The cause usually sits before the cleanup/destroy output: collect the failure lines too.
        causes = [line for line in lines if CAUSE.search(line)][-MAX_CAUSES:]
        pytest.fail(
            f"molecule test -s {scenario} failed (exit {proc.returncode})\n"
            + "--- failure lines:\n"
            + "\n".join(causes)
            + f"\n--- last {TAIL_LINES} lines:\n"
            + "\n".join(lines[-TAIL_LINES:]),
            pytrace=False,
        )
