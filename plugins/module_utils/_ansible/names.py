# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to the collection: allow-lists of names (allowed_names) as the server stores them, so that the device
and domain modules compare what is wanted with what is there. The server checks the entries."""

from __future__ import annotations

PLACEHOLDER = "{device}"


def normalise(entries):
    """TYPE:VALUE entries as the server keeps them: the type in upper case, DNS names in lower case, no repeats."""
    result = []
    for entry in entries or ():
        kind, sep, name = entry.partition(":")
        kind = kind.strip().upper()
        if kind == "DNS":
            name = name.lower().replace(PLACEHOLDER.lower(), PLACEHOLDER)
        normalised = "%s%s%s" % (kind, sep, name)
        if normalised not in result:
            result.append(normalised)
    return result
