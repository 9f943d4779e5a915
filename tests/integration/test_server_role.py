# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The trustpoint_server role's files and checks, without a host: what it renders and what it refuses.

The unit is checked by `systemd-analyze verify`, the init script by `sh -n` and shellcheck, the
configuration file by the service's own `trustpoint-server settings`. Bad variables fail before any
change with a message that names them. (Molecule's `server` scenario deploys the role for real.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap

import pytest
from conftest import BIN, REPO

ROLE = REPO / "roles" / "trustpoint_server"


def playbook(tmp_path, tasks, **variables):
    """Run tasks on localhost with the role's defaults and vars; (returncode, output)."""
    variables.setdefault("trustpoint_server_install_dir", str(tmp_path / "opt"))
    variables.setdefault("trustpoint_server_config_dir", str(tmp_path / "etc"))
    path = tmp_path / "play.yml"
    path.write_text(
        textwrap.dedent(
            """\
            - hosts: localhost
              connection: local
              gather_facts: false
              vars_files: [%s, %s]
              vars:
                ansible_python_interpreter: "{{ ansible_playbook_python }}"
                ansible_facts: {service_mgr: systemd, os_family: Debian}
                __trustpoint_server_manager: "{{ trustpoint_server_service_manager | replace('auto', 'systemd') }}"
              tasks: %s
            """
        )
        % (ROLE / "defaults" / "main.yml", ROLE / "vars" / "main.yml", json.dumps(tasks))
    )
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(path), "-e", json.dumps(variables)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def render(tmp_path, template, **variables):
    dest = tmp_path / template.replace(".j2", "")
    tasks = [{"ansible.builtin.template": {"src": str(ROLE / "templates" / template), "dest": str(dest)}}]
    returncode, output = playbook(tmp_path, tasks, **variables)
    assert returncode == 0, output
    return dest


def fake_service(tmp_path):
    command = tmp_path / "opt" / "venv" / "bin" / "trustpoint-server"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)


@pytest.mark.parametrize(("port", "capability"), [(8443, "CapabilityBoundingSet=\n"), (443, "CAP_NET_BIND_SERVICE")])
def test_the_unit_verifies_and_binds_low_ports_only_when_asked(tmp_path, port, capability):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing; run tools/setup-system.sh (Debian package systemd)")
    fake_service(tmp_path)
    unit = render(tmp_path, "trustpoint-server.service.j2", trustpoint_server_listen=["0.0.0.0:%d" % port])
    text = unit.read_text()
    assert capability in text
    for line in (
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/trustpoint-server",
    ):
        assert line + "\n" in text
    assert (
        "ExecStart=%s/opt/venv/bin/trustpoint-server run --config %s/etc/server.toml\n" % (tmp_path, tmp_path) in text
    )
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_the_init_script_is_valid_shell(tmp_path):
    script = render(tmp_path, "trustpoint-server.init.j2")
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True, check=False).returncode == 0
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is missing; run tools/setup-system.sh")
    result = subprocess.run([shellcheck, "-s", "sh", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_the_configuration_file_is_one_the_service_accepts(tmp_path):
    config = render(
        tmp_path,
        "server.toml.j2",
        trustpoint_server_listen_plain=["0.0.0.0:8080"],
        trustpoint_server_database_url='postgresql+psycopg://tp:pa"ss@db/tp',
        trustpoint_server_settings={"workers": 3, "est_default_domain": "plant1"},
    )
    result = subprocess.run(
        [str(BIN / "trustpoint-server"), "settings", "--config", str(config)],
        capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for line in (
        'data_dir = "/var/lib/trustpoint-server"',
        'listen = ["0.0.0.0:8443"]',
        'listen_plain = ["0.0.0.0:8080"]',
        'tls_san = ["localhost"]',
        "workers = 3",
        'est_default_domain = "plant1"',
        'database_url = "postgresql+psycopg://tp:***@db/tp"',
    ):
        assert line in result.stdout.splitlines(), result.stdout


def test_an_unknown_setting_fails_before_the_file_is_replaced(tmp_path):
    """The template task validates with `trustpoint-server settings`: the old file stays."""
    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "server.toml"
    config.write_text("# the old one\n")
    shutil.copytree(BIN.parent, tmp_path / "opt" / "venv", symlinks=True, ignore=lambda *_: ["lib", "include"])
    tasks = [
        {
            "ansible.builtin.template": {
                "src": str(ROLE / "templates" / "server.toml.j2"),
                "dest": str(config),
                "validate": "%s settings --config %%s" % (BIN / "trustpoint-server"),
            }
        }
    ]
    returncode, output = playbook(tmp_path, tasks, trustpoint_server_settings={"listen_port": 1})
    assert returncode != 0
    assert "unknown setting listen_port" in output
    assert config.read_text() == "# the old one\n"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"trustpoint_server_listen": ["8443"]}, "trustpoint_server_listen and trustpoint_server_listen_plain must"),
        ({"trustpoint_server_listen": [], "trustpoint_server_listen_plain": []}, "must hold at least one address"),
        ({"trustpoint_server_tls_cert_src": "/etc/hostname"}, "trustpoint_server_tls_cert_src and"),
        ({"trustpoint_server_database_url": "mysql://x/y"}, "trustpoint_server_database_url must be empty"),
        ({"trustpoint_server_tls_san": ["tp.example.com", "plant 1"]}, "trustpoint_server_tls_san must hold DNS names"),
        ({"trustpoint_server_service_manager": "sysvinit", "ansible_facts": {"service_mgr": "x", "os_family": "EL"}},
         "sysvinit is supported on Debian hosts only"),
        ({"trustpoint_server_primary_host": "nowhere"}, "must be a host of the inventory"),
        ({"trustpoint_server_wheelhouse": "/nonexistent"}, "trustpoint_server_wheelhouse a directory"),
    ],
)  # fmt: skip
def test_bad_variables_fail_first_with_their_names(tmp_path, variables, message):
    tasks = [{"ansible.builtin.include_tasks": str(ROLE / "tasks" / "validate.yml")}]
    returncode, output = playbook(tmp_path, tasks, **variables)
    assert returncode != 0, output
    assert message in " ".join(output.split()), output
    assert not (tmp_path / "opt").exists() and not (tmp_path / "etc").exists()


def test_good_variables_pass(tmp_path):
    tasks = [{"ansible.builtin.include_tasks": str(ROLE / "tasks" / "validate.yml")}]
    returncode, output = playbook(tmp_path, tasks, trustpoint_server_listen=["[::]:8443", "10.0.0.1:443"])
    assert returncode == 0, output


def test_fetch_brings_the_operator_password_when_asked(tmp_path):
    """trustpoint_server_fetch_dir takes the admin token and the TLS trust anchor; with
    trustpoint_server_fetch_operator_password also the first operator's password (0600); a primary without one
    fails naming the variable."""
    data = tmp_path / "data"
    subprocess.run([str(BIN / "trustpoint-server"), "init", "--data-dir", str(data)], check=True, capture_output=True)
    fetched = tmp_path / "fetched"
    tasks = [{"ansible.builtin.include_tasks": str(ROLE / "tasks" / "fetch.yml")}]
    common = {"trustpoint_server_data_dir": str(data), "trustpoint_server_fetch_dir": str(fetched)}
    returncode, output = playbook(tmp_path, tasks, **common)
    assert returncode == 0, output
    host = fetched / "localhost"
    assert sorted(p.name for p in host.iterdir()) == ["admin-token", "tls-ca.pem"]

    returncode, output = playbook(tmp_path, tasks, trustpoint_server_fetch_operator_password=True, **common)
    assert returncode == 0, output
    assert (host / "operator-password").read_bytes() == (data / "operator-password").read_bytes()
    assert (host / "operator-password").stat().st_mode & 0o777 == 0o600
    assert (host / "admin-token").stat().st_mode & 0o777 == 0o600

    (data / "operator-password").unlink()
    returncode, output = playbook(tmp_path, tasks, trustpoint_server_fetch_operator_password=True, **common)
    assert returncode != 0
    assert "trustpoint_server_fetch_operator_password: %s/operator-password does not exist" % data in output
