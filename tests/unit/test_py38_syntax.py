# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection's Python (everything under plugins/) and the device agent (agent/) must compile on
Python 3.8 and later.

ast.parse(source, feature_version=(3, 8)) rejects grammar that 3.8 lacks and that the running interpreter
knows how to flag: match statements (3.10), parenthesized context managers (3.9), except* (3.11); syntax
newer than the running interpreter (e.g. 3.12 type parameters) fails to parse anyway. It is best effort
and checks syntax only, so it does NOT catch: builtin generics or X | Y unions in annotations that are
evaluated at runtime (list[int] is valid 3.8 syntax; it fails only when evaluated, which
`from __future__ import annotations` avoids), standard library names added after 3.8 (str.removeprefix,
zoneinfo, ...), or relaxed decorator expressions (PEP 614, 3.9), which the 3.11 parser does not flag.
"""

from __future__ import annotations

import ast

import pytest
from conftest import REPO

PLUGINS = REPO / "plugins"
# The sources themselves: not the copies a wheel build leaves in agent/build (they come and go during a run).
SOURCES = sorted(PLUGINS.rglob("*.py")) + sorted((REPO / "agent" / "trustpoint_agent").rglob("*.py"))


def parse_as_38(source, filename="<snippet>"):
    return ast.parse(source, filename, feature_version=(3, 8))


def test_plugins_have_python_files():
    assert len(SOURCES) > 5, SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(REPO)) for p in SOURCES])
def test_plugin_parses_as_python_38(path):
    try:
        parse_as_38(path.read_text(encoding="utf-8"), str(path))
    except SyntaxError as exc:
        pytest.fail("%s is not Python 3.8 syntax: line %s: %s" % (path.relative_to(REPO), exc.lineno, exc.msg))


@pytest.mark.parametrize(
    "source",
    [
        "match (y := x):\n    case 1:\n        pass\n",
        "with (open('a') as f, open('b') as g):\n    pass\n",
        "try:\n    pass\nexcept* ValueError:\n    pass\n",
    ],
    ids=["match-with-walrus", "parenthesized-with", "except-star"],
)
def test_the_check_rejects_newer_syntax(source):
    """The check discriminates on this interpreter: each snippet is valid here but not 3.8 syntax."""
    ast.parse(source)
    with pytest.raises(SyntaxError):
        parse_as_38(source)
