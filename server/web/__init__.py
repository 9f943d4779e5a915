# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The REST API (and, later, the operator pages) over the same services."""
