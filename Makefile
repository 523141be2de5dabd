# Task runner. Quick start: `make run` (install, train, export, serve) and `make test` (dev tools, test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
MODEL  ?= italy_power

.PHONY: install install-dev lock run train export serve test lint container-test bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# torch: TORCH=cpu (the default) installs the CPU build (torch==2.13.0+cpu) from PyTorch's CPU index, or
# a wheel in PIP_FIND_LINKS; PyPI has no +cpu build, so a machine that reaches neither fails here rather
# than pulling CUDA. TORCH=cuda installs PyPI's torch, which on Linux x86_64 is the CUDA build (several GB
# of nvidia-* libraries). It goes in alone and first (--no-deps: pip asks the extra index about torch
# only, and gives up on it after one retry where it is unreachable); the extras then find it installed.
TORCH ?= cpu
TORCH_cpu  := --extra-index-url https://download.pytorch.org/whl/cpu torch==2.13.0+cpu
TORCH_cuda := torch==2.13.0
TORCH_PIN   = $(or $(TORCH_$(TORCH)),$(error TORCH must be cpu or cuda, got '$(TORCH)'))
PIP_INSTALL = $(BIN)/pip install --quiet -c constraints.txt

$(VENV)/.torch-$(TORCH): $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-deps --force-reinstall --retries 1 $(TORCH_PIN)
	rm -f $(VENV)/.torch-* && touch $@

# `make run`: the runtime and training extras (train, export, serve); `make test`: the dev tools too.
$(VENV)/.installed: $(VENV)/.torch-$(TORCH) pyproject.toml constraints.txt
	$(PIP_INSTALL) -e '.[export]'
	$(BIN)/python -c 'from training import recurrence; recurrence.compiled()'  # the GRU's C++ loop, built once
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The serving image's lock: every package of the serve extra, pinned with its hashes (Dockerfile,
# --require-hashes). Run after changing the serve extra; tests/deploy/test_lock.py says when it is stale.
lock: install-dev
	$(BIN)/pip-compile --quiet --generate-hashes --extra serve --strip-extras --allow-unsafe \
	    --no-emit-index-url --no-emit-find-links -o requirements/serve.txt pyproject.toml

train: install
	$(BIN)/gru train --name $(MODEL) --overwrite

export: install
	$(BIN)/gru export --checkpoint runs/$(MODEL)/checkpoint.pt --name $(MODEL) --version 1 --overwrite

serve: install
	@echo "Try it from another terminal:"
	@echo "  curl -s localhost:$(PORT)/models/$(MODEL)/predict -H 'Content-Type: application/json' \\"
	@echo "    -d '{\"sequences\": [[-0.71,-1.18,-1.35,-1.59,-1.61,-1.35,-0.43,0.94,1.33,1.16,0.90,0.56,0.39,0.31,0.37,0.67,0.62,0.47,0.58,1.40,1.32,0.67,-0.18,-0.48]]}'"
	$(BIN)/gru serve --port $(PORT)

run: train export serve

# The docs site builds strictly: a broken link, a missing page or a stale generated reference fails.
test: install-dev
	$(BIN)/ruff check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy training export service bench gru_cli.py scripts/container_test.py scripts/docs_reference.py

# Serving benchmark against baselines in one run (needs wrk: apt-get install -y wrk). DURATION: s per level.
DURATION ?= 10
WORKERS  ?= 2
bench: install-dev
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m bench.run --duration $(DURATION) --workers $(WORKERS)

# Build the serving image with podman, run it, check it against in-process onnxruntime (docs/guides/deployment.md).
container-test: install-dev
	$(BIN)/python scripts/container_test.py

clean:
	rm -rf $(VENV) runs models .pytest_cache site
