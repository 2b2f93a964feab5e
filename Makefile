# The two commands of the README. Both bootstrap a fresh machine first (scripts/bootstrap.sh).
.PHONY: up test lint bootstrap proto bench

VENV := .venv/bin
ARGS ?=
PYTEST_ARGS ?=

up: bootstrap
	$(VENV)/aerplane up $(ARGS)

test: bootstrap
	$(VENV)/python -m pytest $(PYTEST_ARGS)

lint: bootstrap
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

bootstrap:
	@scripts/bootstrap.sh

proto: bootstrap
	$(VENV)/python scripts/gen_proto.py

bench: bootstrap
	$(VENV)/python bench/_table.py
