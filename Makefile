# Two commands on a fresh machine:
#   make demo   set up .venv and train + test the baseline on the embedded synthetic dataset
#   make test   set up .venv (with the dev extra) and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build here; on a GPU machine set TORCH_SPEC="torch>=2.2,<2.15" to keep your CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test setup setup-dev clean FORCE

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# the torch spec installed last: rewritten (so setup reruns) only when TORCH_SPEC changes
$(VENV)/.torch-spec: $(BIN)/python FORCE
	@echo '$(TORCH_SPEC)' | cmp -s - $@ || echo '$(TORCH_SPEC)' > $@

$(VENV)/.setup: $(BIN)/python pyproject.toml $(VENV)/.torch-spec
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.setup-dev: $(VENV)/.setup
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.setup
setup-dev: $(VENV)/.setup-dev

demo: setup
	$(BIN)/tsda fit -c configs/experiment/synthetic_baseline.yaml

test: setup-dev
	WANDB_MODE=disabled $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
