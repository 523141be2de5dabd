# Task runner. Quick start: `make run` (install, train, export, serve) and `make test` (install, test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
MODEL  ?= italy_power

.PHONY: install run train export serve test lint container-test bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# Constraints pin torch to the CPU build (an unpinned torch pulls a multi-GB CUDA build).
$(VENV)/.installed: $(BIN)/activate pyproject.toml constraints.txt
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

train: install
	$(BIN)/gru train --name $(MODEL)

export: install
	$(BIN)/gru export --checkpoint runs/$(MODEL)/checkpoint.pt --name $(MODEL) --version 1 --overwrite

serve: install
	@echo "Try it from another terminal:"
	@echo "  curl -s localhost:$(PORT)/models/$(MODEL)/predict -H 'Content-Type: application/json' \\"
	@echo "    -d '{\"sequences\": [[-0.71,-1.18,-1.35,-1.59,-1.61,-1.35,-0.43,0.94,1.33,1.16,0.90,0.56,0.39,0.31,0.37,0.67,0.62,0.47,0.58,1.40,1.32,0.67,-0.18,-0.48]]}'"
	$(BIN)/gru serve --port $(PORT)

run: train export serve

# The docs site builds strictly: a broken link, a missing page or a stale generated reference fails.
test: install
	$(BIN)/ruff check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy training export service bench gru_cli.py scripts/container_test.py scripts/docs_reference.py

# Serving benchmark against baselines in one run (needs wrk: apt-get install -y wrk). DURATION: s per level.
DURATION ?= 10
WORKERS  ?= 2
bench: install
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m bench.run --duration $(DURATION) --workers $(WORKERS)

# Build the serving image with podman, run it, check it against in-process onnxruntime (docs/guides/deployment.md).
container-test: install
	$(BIN)/python scripts/container_test.py

clean:
	rm -rf $(VENV) runs models .pytest_cache site
