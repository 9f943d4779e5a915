# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""server/errors.py: an unexpected error answers 500 without a traceback, in the protocol's format
(EST: text/plain, RFC 7030; the API: JSON)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import BIN
from trustpoint_server.app import create_app
from trustpoint_server.protocols import est
from trustpoint_server.settings import Settings


@pytest.fixture
def client(tmp_path):
    subprocess.run(
        [str(BIN / "trustpoint-server"), "init", "--data-dir", str(tmp_path)], check=True, capture_output=True
    )
    app = create_app(Settings(data_dir=str(tmp_path)))
    yield app.test_client()
    app.extensions["trustpoint"].engine.dispose()


def test_unexpected_error_in_est_is_text_plain(client, monkeypatch):
    def broken(name):
        raise RuntimeError("a bug")

    monkeypatch.setattr(est, "_domain", broken)
    response = client.get("/.well-known/est/some-domain/cacerts", base_url="https://localhost")
    assert response.status_code == 500
    assert response.content_type == "text/plain; charset=utf-8"
    assert response.get_data(as_text=True) == "internal server error; the server log has the details\n"


def test_unexpected_error_in_the_api_is_json(client, tmp_path, monkeypatch):
    token = (tmp_path / "admin-token").read_text().strip()
    monkeypatch.setattr("trustpoint_server.services.pki.domain_json", lambda domain: 1 / 0)
    client.post("/api/v1/domains", json={"name": "d"}, headers={"Authorization": "Bearer " + token})
    response = client.get("/api/v1/domains", headers={"Authorization": "Bearer " + token})
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal server error; the server log has the details", "status": 500}
