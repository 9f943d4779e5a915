# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The process: command line, WSGI serving, TLS, secrets at rest."""
