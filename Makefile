# Two commands on a fresh machine:
#   make demo   set up .venv and train + test the baseline on the embedded synthetic dataset
#   make test   set up .venv (with the dev extra) and run the test suite
#   make lint   ruff and mypy (the dev extra)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build here; on a GPU machine set TORCH_SPEC="torch>=2.4,<2.15" to keep your CUDA build.
TORCH_SPEC ?= torch==2.13.0

# setup-gpu: the CUDA build of the same torch (pip's local version label, e.g. 2.13.0+cu128) from
# PyTorch's index, replacing the CPU wheel, then the project with the dev extra; needs the internet.
CUDA_TAG ?= cu128
TORCH_GPU_SPEC ?= torch==2.13.0+$(CUDA_TAG)
TORCH_GPU_INDEX ?= https://download.pytorch.org/whl/$(CUDA_TAG)

.PHONY: demo test test-fast lint docs setup setup-dev setup-docs setup-gpu clean FORCE

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

$(VENV)/.setup-docs: $(VENV)/.setup
	$(BIN)/pip install --quiet -e ".[docs]"
	touch $@

setup: $(VENV)/.setup
setup-dev: $(VENV)/.setup-dev
setup-docs: $(VENV)/.setup-docs

# On a GPU machine: `make setup-gpu`, then `bash benchmarks/gpu_check.sh`. The stamps are kept as
# `make setup` writes them: TORCH_SPEC (torch==2.13.0) is met by 2.13.0+cu128, so later `make
# setup` / `make test` keep the CUDA build.
setup-gpu: $(BIN)/python
	$(BIN)/python -m pip install --quiet --index-url $(TORCH_GPU_INDEX) "$(TORCH_GPU_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@echo '$(TORCH_SPEC)' > $(VENV)/.torch-spec
	touch $(VENV)/.setup $(VENV)/.setup-dev
	$(BIN)/python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU:', torch.cuda.is_available() and torch.cuda.get_device_name())"

demo: setup
	$(BIN)/tsda fit -c configs/experiment/synthetic_baseline.yaml

test: setup-dev
	WANDB_MODE=disabled $(BIN)/python -m pytest -q --durations=15

# the tests not marked slow (the end-to-end campaigns, DDP, notebooks, compilation are): a quick check while coding
test-fast: setup-dev
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m "not slow" --durations=10

# ruff (lint + formatting, [tool.ruff]) and mypy ([tool.mypy]: tsda/), configured in pyproject.toml
lint: setup-dev
	$(BIN)/ruff check tsda tests benchmarks && $(BIN)/ruff format --check tsda tests benchmarks && $(BIN)/mypy

# the documentation site (mkdocs.yml, docs/) into site/; --strict: any warning fails the build
docs: setup-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) runs site
