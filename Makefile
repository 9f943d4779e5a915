# The two commands a newcomer needs: `make demo` and `make test` (README.md).
# Both set up what they need first: Debian packages, the virtualenv, the collection path.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
COLLECTIONS := $(CURDIR)/build/collections
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test lint sanity pytest ansible-lint clean agent-wheel

setup: $(VENV)/.installed $(COLLECTIONS)/ansible_collections/trustpoint/pki

$(VENV)/.installed: pyproject.toml tools/setup-system.sh
	tools/setup-system.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# ansible-playbook and Molecule find the collection through this path; the repository root is it.
$(COLLECTIONS)/ansible_collections/trustpoint/pki:
	mkdir -p $(dir $@)
	ln -sfn $(CURDIR) $@

demo: setup
	$(PY) tools/demo.py

# The four suites are independent: they run side by side (their output comes in one piece per suite, at its end),
# and pytest runs its test files on PYTEST_WORKERS processes (most of its time is spent waiting on servers,
# SSH hosts and containers, not on the CPU).
PYTEST_WORKERS ?= 4
test: setup
	$(MAKE) --no-print-directory --jobs=4 --output-sync=target --keep-going lint sanity pytest ansible-lint

PYTHON_DIRS := $(wildcard plugins server agent tests tools bench)

lint:
	$(VENV)/bin/ruff check $(PYTHON_DIRS)
	$(VENV)/bin/ruff format --check $(PYTHON_DIRS)

sanity:
	tools/sanity.sh

pytest:
	$(VENV)/bin/pytest --numprocesses=$(PYTEST_WORKERS) --durations=30

ansible-lint:
	$(VENV)/bin/ansible-lint --offline --profile production

# The device agent's wheel (agent/pyproject.toml), for `trustpoint-server run` to serve at /agent/: copy it
# to DATA/agent-wheels (or --agent-wheels DIR), with its dependencies' wheels for sites without an index.
AGENT_WHEELS ?= dist/agent
agent-wheel: setup
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir $(AGENT_WHEELS) ./agent
	@ls $(AGENT_WHEELS)/trustpoint_agent-*.whl

clean:
	rm -rf build dist tests/output *.egg-info
