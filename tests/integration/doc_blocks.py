# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The code blocks of the README and docs/*.md, for the tests that run them as written."""

from __future__ import annotations

import re
import subprocess

# Every script runs under bash's strict mode; what it started in the background ends with it (a script that
# started nothing has nothing to kill).
STRICT = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || :; wait' EXIT\n"


def section_blocks(path, title, language):
    """The `language` code blocks of the section whose heading starts with title in the Markdown file path, up to
    the next heading of its level or above (its subsections included)."""
    lines, level, fenced = [], None, False
    for line in path.read_text().splitlines(keepends=True):
        fenced ^= line.startswith("```")
        heading = None if fenced else re.match(r"(#+) (.*)\n", line)
        if heading and level is None and heading.group(2).startswith(title):
            level = len(heading.group(1))
        elif heading and level is not None and len(heading.group(1)) <= level:
            break
        elif level is not None:
            lines.append(line)
    assert level is not None, "%s has no section %r" % (path, title)
    return re.findall(r"```%s\n(.*?)```" % language, "".join(lines), re.S)


def run_strict(script, cwd, env=None, timeout=120):
    """The CompletedProcess (text) of script under STRICT in cwd."""
    return subprocess.run(
        ["bash", "-c", STRICT + script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
