# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # The management API's credential. PRIVATE to the collection.
    DOCUMENTATION = r"""
options:
  api_token:
    description:
      - Bearer token of the Trustpoint management API. C(trustpoint-server init) writes the first
        one to C(<data dir>/admin-token).
      - If not set, the environment variable E(TRUSTPOINT_API_TOKEN) is used. The module fails when neither is
        set.
    type: str
notes:
  - These modules talk to the server's REST API. Run them on the controller (C(delegate_to) V(localhost)),
    not on the devices.
"""
