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
      - Base URL of the Trustpoint server, for example V(http://127.0.0.1:8080).
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
        system's trust store.
      - If not set, the environment variable E(TRUSTPOINT_CA_PATH) is used.
    type: path
  timeout:
    description:
      - Seconds to wait for each answer of the server.
    type: int
    default: 30
"""
