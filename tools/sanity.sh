#!/usr/bin/env bash
# Copyright (c) Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# `ansible-test sanity` as `--docker` would run it, without a Docker engine (`make sanity`).
#
#  1. Copies the collection's files (`git ls-files -co --exclude-standard`: uncommitted new files count,
#     ignored ones don't) to build/sanity/ansible_collections/<namespace>/<name>; ansible-test refuses a
#     symlinked tree. The copy gets its own (empty) git repository so that ansible-test lists its files
#     there instead of asking the outer repository, which ignores build/. tests/output/ of the copy
#     (ansible-test's delegation venvs) is kept between runs, which keeps warm runs quick.
#  2. Exposes every target Python of the installed ansible-test (3.8-3.13 for ansible-core 2.19) that is
#     on this machine (pyenv builds, /usr/local/bin, /usr/bin) by name in build/sanity/bin, first on PATH.
#     Missing ones are skipped with a loud warning: the run then covers only the Pythons present.
#  3. Installs tests/utils/get_pip_stand_in.py as the get-pip bootstrap script ansible-test would
#     otherwise download (~/.ansible/test/cache/get_pip_<pip version>.py).
#  4. Runs `ansible-test sanity --venv --requirements --color no [ARGS...]` in the copy.
#
# Usage: tools/sanity.sh [extra ansible-test sanity options, e.g. --test compile -v]
# Environment: VENV (default .venv), SANITY_WORKDIR (default build/sanity).
set -euo pipefail

start=$SECONDS
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

min_python=3.8 # the collection's oldest supported Python (tests/config.yml, modules.python_requires)

say() { printf 'sanity.sh: %s\n' "$*"; }
loud() {
  local line='!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
  printf '%s\n' "$line" "!!! WARNING: $*" "$line"
}

venv="${VENV:-.venv}"
[[ $venv == /* ]] || venv="$repo/$venv"
py="$venv/bin/python"
ansible_test="$venv/bin/ansible-test"
if [[ ! -x $ansible_test ]]; then
  say "no $ansible_test yet: running 'make setup' first"
  make -C "$repo" setup
fi

# --- 0. shellcheck ----------------------------------------------------------------------------------
# The `shellcheck` sanity test passes silently without the program (tools/setup-system.sh installs it).
command -v shellcheck >/dev/null ||
  loud "shellcheck is not installed: the shellcheck sanity test checks nothing (run tools/setup-system.sh)."

# --- 1. the collection tree -------------------------------------------------------------------------
read -r namespace name < <("$py" -c '
import sys, yaml
with open("galaxy.yml") as f:
    g = yaml.safe_load(f)
print(g["namespace"], g["name"])
')
work="${SANITY_WORKDIR:-$repo/build/sanity}"
coll="$work/ansible_collections/$namespace/$name"
mkdir -p "$coll"

# Empty the previous copy, except for ansible-test's output and the copy's git repository.
find "$coll" -mindepth 1 -maxdepth 1 ! -name tests ! -name .git -exec rm -rf {} +
if [[ -d $coll/tests ]]; then
  find "$coll/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} +
fi

# Tracked and untracked-but-not-ignored files; tracked files deleted from the work tree are skipped.
git -C "$repo" ls-files -z -co --exclude-standard |
  while IFS= read -r -d '' f; do
    if [[ -e $f || -L $f ]]; then printf '%s\0' "$f"; fi
  done |
  tar --null --no-recursion -T - -cf - | tar -xf - -C "$coll"
[[ -d $coll/.git ]] || git -C "$coll" init -q
say "collection copy: $coll ($(git -C "$coll" ls-files -co --exclude-standard | wc -l) files)"

# --- 2. target Pythons ------------------------------------------------------------------------------
mapfile -t all_versions < <("$py" -c '
from ansible_test._util.target.common.constants import CONTROLLER_PYTHON_VERSIONS, REMOTE_ONLY_PYTHON_VERSIONS
print("\n".join(REMOTE_ONLY_PYTHON_VERSIONS + CONTROLLER_PYTHON_VERSIONS))
')
versions=()
for v in "${all_versions[@]}"; do
  if [[ "$(printf '%s\n' "$min_python" "$v" | sort -V | head -n1)" == "$min_python" ]]; then
    versions+=("$v")
  fi
done

# Prints a working python$1 that has venv and ensurepip (what ansible-test's --venv and the get-pip
# stand-in need), preferring the newest pyenv build.
find_python() {
  local v=$1 root c
  local candidates=()
  for root in "${PYENV_ROOT:-}" "$HOME/.pyenv"; do
    [[ -n $root && -d $root/versions ]] || continue
    while IFS= read -r c; do candidates+=("$c"); done < <(
      compgen -G "$root/versions/$v.*/bin/python$v" | grep -E "/versions/$v\.[0-9]+/" | sort -V -r
    )
  done
  candidates+=("/usr/local/bin/python$v" "/usr/bin/python$v")
  for c in "${candidates[@]}"; do
    [[ -x $c ]] || continue
    if "$c" -c "import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != tuple(map(int, '$v'.split('.'))))" \
      2>/dev/null; then
      printf '%s\n' "$c"
      return 0
    fi
  done
  return 1
}

bindir="$work/bin"
rm -rf "$bindir"
mkdir -p "$bindir"
found=()
missing=()
for v in "${versions[@]}"; do
  if p="$(find_python "$v")"; then
    ln -s "$p" "$bindir/python$v"
    found+=("$v")
    say "python$v -> $p"
  else
    missing+=("$v")
  fi
done
if ((${#missing[@]})); then
  loud "no usable interpreter (with venv and ensurepip) for Python ${missing[*]}:" \
    "sanity tests (compile, import) run only on Python ${found[*]:-<none>}." \
    "Install them (e.g. with pyenv) to cover every target Python ansible-core supports."
fi

# pyenv shims answer for every version, installed or not (`python3.8: command not found` -> FATAL), so
# they go off PATH: ansible-test finds exactly the interpreters linked above, and skips the others.
path_rest=""
IFS=: read -r -a path_dirs <<<"$PATH"
for d in "${path_dirs[@]}"; do
  [[ $d == */.pyenv/shims || $d == "$bindir" || $d == "$venv/bin" ]] && continue
  path_rest="${path_rest:+$path_rest:}$d"
done
export PATH="$bindir:$venv/bin:$path_rest"
# ansible-test sets the collection path itself; the Makefile's points at the (symlinked) repository.
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS

# --- 3. offline get-pip stand-in --------------------------------------------------------------------
mapfile -t pip_versions < <("$py" - "${versions[@]}" <<'EOF'
import re
import sys
import types

try:
    from ansible_test._internal.python_requirements import get_venv_packages

    found = {get_venv_packages(types.SimpleNamespace(version=v))["pip"] for v in sys.argv[1:]}
except Exception:  # an ansible-test whose internals moved: read the pinned version from its source
    import ansible_test

    src = open(ansible_test.__path__[0] + "/_internal/python_requirements.py").read()
    found = set(re.findall(r"pip='([0-9.]+)'", src))
print("\n".join(sorted(found)))
EOF
)
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
for pv in "${pip_versions[@]}"; do
  target="$cache/get_pip_${pv//./_}.py"
  if ! cmp -s tests/utils/get_pip_stand_in.py "$target"; then
    install -m 0644 tests/utils/get_pip_stand_in.py "$target"
    say "installed the get-pip stand-in as $target"
  fi
done

# --- 4. ansible-test --------------------------------------------------------------------------------
cmd=(ansible-test sanity --venv --requirements --color no "$@")
say "ansible-core $("$py" -c 'import ansible; print(ansible.__version__)'), target Pythons: ${found[*]:-<none>}"
say "running in $coll: ${cmd[*]}"
cd "$coll"
rc=0
"${cmd[@]}" || rc=$?
say "ansible-test exited with $rc after $((SECONDS - start)) s (Pythons: ${found[*]:-<none>}${missing[*]:+; MISSING: ${missing[*]}})"
exit "$rc"
