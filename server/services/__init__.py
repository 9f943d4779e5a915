# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The rules every protocol, the API and the pages share: devices, domains and CAs, identity, trust."""
