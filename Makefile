# Two commands do all the set-up on a fresh machine with Python 3.11+ and make:
#   make demo   the main job: a chaos run of the example agent on SQLite
#   make test   installs what the tests need and runs them
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DSN    ?= $(WAYPOINT_DSN)

.PHONY: install demo test lint bench clean \
        run_migrations revert_migrations add_migration show_current_db_head show_db_heads

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job: crash the example research agent at every step and phase,
# resume each crash in a fresh runtime, print the crash matrix; non-zero on a
# violation. (python -m examples.agent_with_llm_mock shows one real SIGKILL.)
demo: $(STAMP)
	$(BIN)/waypoint chaos examples.agent_with_llm_mock:research_agent \
		--arg '"heat pumps in old houses"'

test: $(STAMP)
	$(BIN)/python -m pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# DBOS Transact is installed here for the comparison only; it is never a
# dependency of waypoint-sdk.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python -m bench.run

# Schema migrations (the same as `waypoint db ...`); DSN=... or WAYPOINT_DSN.
run_migrations: $(STAMP)
	$(BIN)/waypoint db upgrade $(if $(DSN),--dsn $(DSN))

revert_migrations: $(STAMP)
	$(BIN)/waypoint db downgrade $(if $(DSN),--dsn $(DSN))

add_migration: $(STAMP)
	@test -n "$(MSG)" || { echo 'usage: make add_migration MSG="what it changes"'; exit 2; }
	$(BIN)/waypoint db revision -m "$(MSG)"

show_current_db_head: $(STAMP)
	$(BIN)/waypoint db current $(if $(DSN),--dsn $(DSN))

show_db_heads: $(STAMP)
	$(BIN)/waypoint db heads

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
