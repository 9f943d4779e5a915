# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # How a module reaches the Trustpoint server. PRIVATE to the collection.
    DOCUMENTATION = r"""
options:
  server_url:
    description:
      - Base URL of the Trustpoint server, for example V(https://trustpoint.example.com:8443) (C(trustpoint-server run)
        serves HTTPS on port 8443 by default). Its plain-HTTP listener (C(--listen-plain)) serves CMP only, and the
        REST API answers 403 there.
      - If not set, the environment variable E(TRUSTPOINT_URL) is used.
    type: str
    required: true
  validate_certs:
    description:
      - Verify the server's TLS certificate when O(server_url) is an C(https) URL.
      - Only set this to V(false) on a lab network you control.
      - If not set, the environment variable E(TRUSTPOINT_VALIDATE_CERTS) is used.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA certificates to trust for the server's TLS certificate, instead of the
        system's trust store, for example C(tls-ca.pem) in the server's data directory (unless it serves a
        certificate of another CA).
      - The module fails when the file cannot be read, naming it.
      - If not set, the environment variable E(TRUSTPOINT_CA_PATH) is used.
    type: path
  timeout:
    description:
      - Seconds to wait for each answer of the server.
    type: int
    default: 30
"""
