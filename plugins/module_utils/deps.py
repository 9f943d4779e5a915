# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Third-party libraries of the core, imported guardedly.

The core also runs on devices through Ansible, where these libraries may be missing: importing a
core module never fails, and callers ask `missing()` what is absent before using the Python code
paths (the Ansible modules turn that into `missing_required_lib`).
"""

from __future__ import annotations

import traceback

# The oldest cryptography (major version) the core is tested with; agent/pyproject.toml declares the same, the
# server more (tests/unit/test_dependency_floors.py). cmp_der reads extraCerts with pyasn1 below it (issue 16).
CRYPTOGRAPHY_FLOOR = 38

REQUIREMENTS = {
    "cryptography": "cryptography >= %d" % CRYPTOGRAPHY_FLOOR,
    "pyasn1": "pyasn1 >= 0.6.1",
    "pyasn1_alt_modules": "pyasn1-alt-modules >= 0.4.10",
}

_ERRORS = {}
_FOUND = None  # the version of the cryptography imported


def major_version(version):
    """The major version of a version string ("45.0.7" -> 45, "3.4.8" -> 3)."""
    return int(version.split(".")[0])


try:
    import cryptography
except ImportError:
    _ERRORS["cryptography"] = traceback.format_exc()
else:
    # An older one imports but is wrong where it matters: cryptography 37 reads an RFC 4514 subject in reverse
    # order (tests/unit/test_dependency_floors.py). Callers then take it as missing (the openssl backend, or a
    # message naming the version found).
    _FOUND = getattr(cryptography, "__version__", "0")
    if major_version(_FOUND) < CRYPTOGRAPHY_FLOOR:
        _ERRORS["cryptography"] = "cryptography %s is older than %d, the oldest the core is tested with" % (
            _FOUND,
            CRYPTOGRAPHY_FLOOR,
        )

try:
    import pyasn1  # noqa: F401  pylint: disable=unused-import
except ImportError:
    _ERRORS["pyasn1"] = traceback.format_exc()

try:
    import pyasn1_alt_modules  # noqa: F401  pylint: disable=unused-import
except ImportError:
    _ERRORS["pyasn1_alt_modules"] = traceback.format_exc()


def missing(*names):
    """Return (requirement strings, traceback) of the named libraries that cannot be imported (or, cryptography,
    are older than the floor).

    Without names, all the core's libraries are checked.
    """
    names = names or tuple(REQUIREMENTS)
    absent = [name for name in names if name in _ERRORS]
    requirements = [REQUIREMENTS[name] for name in absent]
    if "cryptography" in absent and _FOUND is not None:
        requirements[absent.index("cryptography")] += ", found %s" % _FOUND
    return requirements, "\n".join(_ERRORS[name] for name in absent)
