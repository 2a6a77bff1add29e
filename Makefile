# Two commands: `make serve` and `make test`. Both set up .venv (and, as root, the apt
# packages and the pinned Node 22 the tests need) on first use.
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.keyhand-installed
ARGS  ?=

.PHONY: install serve test lint typecheck unit conformance conformance-auth clean

$(STAMP): pyproject.toml scripts/bootstrap.sh scripts/node-tools.sh
	KEYHAND_WITH_NODE=1 bash scripts/bootstrap.sh
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(BIN)/keyhand serve $(ARGS)

lint: install
	$(BIN)/ruff check gateway vault tools tests bench examples
	$(BIN)/ruff format --check gateway vault tools tests bench examples

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

conformance: install
	bash scripts/conformance.sh

conformance-auth: install
	bash scripts/conformance-auth.sh

test: lint typecheck conformance conformance-auth unit

clean:
	rm -rf $(VENV) .tools
