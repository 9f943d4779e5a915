# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The settings: one declaration, three sources (file, environment, command line), clear refusals."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import BIN, REPO
from trustpoint_server import settings as config
from trustpoint_server.runtime import cli
from trustpoint_server.settings import Settings, SettingsError


def write(path, text, mode=0o600):
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_precedence_command_line_environment_file_default(tmp_path):
    path = write(tmp_path / "c.toml", 'data_dir = "/file"\nworkers = 3\nthreads = 5\nlisten = ["1.2.3.4:1"]\n')
    loaded = Settings.load(
        {"threads": 7, "public_url": None},
        environ={"TRUSTPOINT_WORKERS": "4", "TRUSTPOINT_LISTEN": "127.0.0.1:1, [::1]:2", "TRUSTPOINT_LOG_LEVEL": ""},
        config_file=path,
    )
    assert loaded.data_dir == "/file"  # file only
    assert loaded.workers == 4  # environment over file
    assert loaded.threads == 7  # command line over both
    assert loaded.listen == ("127.0.0.1:1", "[::1]:2")  # a list from the environment, as a tuple
    assert loaded.log_level == "info"  # an empty variable is unset: the default
    assert loaded.cmp_max_clock_skew == 600
    assert loaded.tls_san == ()


def test_config_file_from_the_environment(tmp_path):
    path = write(tmp_path / "c.toml", 'data_dir = "/d"\ntls_san = ["a.example"]\n')
    loaded = Settings.load({}, environ={"TRUSTPOINT_CONFIG": path})
    assert (loaded.data_dir, loaded.tls_san) == ("/d", ("a.example",))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('data_dir = "/d"\nlisten_port = 1\n', "unknown setting listen_port (known: data_dir, "),
        ('data_dir = "/d"\nworkers = "2"\n', "workers must be a whole number >= 0, not '2'"),
        ('data_dir = "/d"\nworkers = -1\n', "workers must be a whole number >= 0, not -1"),
        ('data_dir = "/d"\nlisten = "127.0.0.1:1"\n', "listen must be a list of strings"),
        ('data_dir = "/d"\nlog_level = "loud"\n', "log_level must be one of debug, info, warning, error, not 'loud'"),
        ("data_dir = /d\n", "is not valid TOML"),
        ("workers = 2\n", "no data directory: pass --data-dir, set TRUSTPOINT_DATA_DIR or data_dir"),
    ],
)
def test_a_bad_file_is_refused_with_what_is_wrong(tmp_path, text, message):
    path = write(tmp_path / "c.toml", text)
    with pytest.raises(SettingsError) as info:
        Settings.load({}, environ={}, config_file=path)
    assert message in str(info.value)
    if "no data directory" not in message:
        assert path in str(info.value)


def test_a_bad_environment_variable_is_named(tmp_path):
    with pytest.raises(SettingsError, match=r"\$TRUSTPOINT_CMP_MAX_CLOCK_SKEW: cmp_max_clock_skew must be an integer"):
        Settings.load({"data_dir": "/d"}, environ={"TRUSTPOINT_CMP_MAX_CLOCK_SKEW": "ten"})


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(SettingsError, match=r"cannot read the configuration file .*nothing\.toml: No such file"):
        Settings.load({}, environ={}, config_file=str(tmp_path / "nothing.toml"))


def test_a_database_password_readable_by_everyone_is_warned_about(tmp_path, caplog):
    url = 'database_url = "postgresql+psycopg://tp:secret@db/tp"\ndata_dir = "/d"\n'
    Settings.load({}, environ={}, config_file=write(tmp_path / "private.toml", url, 0o640))
    assert not caplog.records
    Settings.load({}, environ={}, config_file=write(tmp_path / "open.toml", url, 0o644))
    (record,) = caplog.records
    assert "holds a database password and every user can read it" in record.getMessage()
    assert "secret" not in record.getMessage()


def test_every_setting_is_an_option_of_its_commands():
    top = cli.parser()
    subparsers = next(action for action in top._actions if action.dest == "command").choices
    for field in config.fields():
        for command, sub in subparsers.items():
            if command not in cli.COMMANDS:
                continue  # a tool that takes no settings (aoki gen-test-certs)
            options = {option for action in sub._actions for option in action.option_strings}
            assert (config.option(field) in options) == (command in field.metadata["commands"]), (command, field.name)
            assert "--config" in options


def test_every_setting_is_documented():
    """docs/server.md's settings table has a row per setting naming its option and environment variable."""
    text = (REPO / "docs" / "server.md").read_text()
    rows = {}
    for row in re.findall(r"^\| `.*$", text, re.M):
        for name in re.findall(r"`(\w+)`", row.split(" | ")[0]):
            rows[name] = row
    for field in config.fields():
        assert field.name in rows, "docs/server.md lacks a settings row for %s" % field.name
        assert config.option(field) in rows[field.name]
        assert "TRUSTPOINT_" + field.name.upper() in rows[field.name]


def test_the_command_reads_the_file(tmp_path):
    """`trustpoint-server init --config FILE` takes the data directory and TLS names from the file."""
    data = tmp_path / "data"
    path = write(tmp_path / "c.toml", 'data_dir = "%s"\ntls_san = ["tp.example.test"]\n' % data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTPOINT_")}
    result = subprocess.run(
        [str(BIN / "trustpoint-server"), "init", "--config", path], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "tp.example.test" in result.stdout
    # trustpoint.db.writelock: init creates the first operator under the database's write lock.
    assert sorted(p.name for p in data.iterdir()) == [
        "admin-token", "operator-password", "tls-ca-key.vault", "tls-ca.pem", "tls-cert.pem", "tls-key.pem",
        "trustpoint.db", "trustpoint.db.writelock", "vault.key",
    ]  # fmt: skip
    result = subprocess.run(
        [str(BIN / "trustpoint-server"), "migrate", "--config", path, "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2 and "unrecognized arguments: --workers" in result.stderr


def test_availability_settings_and_their_least_values(tmp_path):
    """The deadlines, connection bound, budgets and free space (issue 11): defaults, environment, and a
    value below a setting's least refused from every source, the command line included."""
    loaded = Settings.load(
        {"data_dir": "/d", "auth_failure_budget": 3},
        environ={"TRUSTPOINT_HEADER_TIMEOUT": "2", "TRUSTPOINT_AUTH_LOCKOUT": "0"},
    )
    assert (loaded.header_timeout, loaded.auth_lockout, loaded.auth_failure_budget) == (2, 0, 3)
    assert (loaded.handshake_timeout, loaded.body_timeout, loaded.max_connections) == (10, 30, 4096)
    assert loaded.min_free_space == 64
    with pytest.raises(
        SettingsError, match=r"\$TRUSTPOINT_BODY_TIMEOUT: body_timeout must be a whole number >= 1, not 0"
    ):
        Settings.load({"data_dir": "/d"}, environ={"TRUSTPOINT_BODY_TIMEOUT": "0"})
    with pytest.raises(SettingsError, match=r"--max-connections: max_connections must be a whole number >= 1, not 0"):
        Settings.load({"data_dir": "/d", "max_connections": 0}, environ={})
    path = write(tmp_path / "c.toml", 'data_dir = "/d"\nhandshake_timeout = 0\n')
    with pytest.raises(SettingsError, match=r"handshake_timeout must be a whole number >= 1, not 0"):
        Settings.load({}, environ={}, config_file=path)


def test_relative_paths_are_taken_from_where_the_command_started(tmp_path, monkeypatch):
    """`--data-dir ./tp-data` (the README's quickstart): Flask's send_file resolved the relative path of an agent
    wheel against the code's directory, so GET /agent/<wheel> answered 500."""
    from trustpoint_server.app import create_app

    monkeypatch.chdir(tmp_path)
    subprocess.run([str(BIN / "trustpoint-server"), "init", "--data-dir", "tp-data"], check=True, capture_output=True)
    loaded = Settings.load({"data_dir": "./tp-data", "vault_key_file": "tp-data/vault.key"}, environ={})
    assert loaded.data_dir == str(tmp_path / "tp-data")
    assert loaded.vault_key_file == str(tmp_path / "tp-data" / "vault.key")
    assert loaded.database_url is None and loaded.public_url is None  # not paths: left alone
    wheel = tmp_path / "tp-data" / "agent-wheels" / "trustpoint_agent-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK wheel")
    answer = create_app(loaded).test_client().get("/agent/" + wheel.name, base_url="https://localhost")
    assert answer.status_code == 200 and answer.data == b"PK wheel"
