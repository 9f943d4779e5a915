# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTP in and out of each protocol (CMP, EST, CRLs): parse, call a service, encode."""
