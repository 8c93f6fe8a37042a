# Lookalike segmentation — developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Demo scale comes from configs/demo.yaml; `make demo CUSTOMERS=5000` overrides it.
CUSTOMERS ?=
PYTEST_ARGS ?=
# Where the bento lock finds torch's CPU build (`make bento-lock TORCH_SOURCE="--find-links DIR"` offline).
TORCH_INDEX := https://download.pytorch.org/whl/cpu
TORCH_SOURCE ?= --extra-index-url $(TORCH_INDEX) --index-strategy unsafe-best-match

.DEFAULT_GOAL := help
.PHONY: help install redis demo test test-unit test-integration test-e2e lint typecheck fmt clean \
        bench-features bench-materialize bench-train bench-faiss bench-weekly bench-weekly-spark bench-serving \
        bench-distill bento-lock bento gpu-wheels gpu-check

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS=":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

# torch first: the local CPU wheel satisfies the project's range, so pip never pulls CUDA.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python -a -x $(BIN)/pip || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create the virtualenv and install the project (pinned)

redis: ## install redis-server (Debian package) if it is missing; tests start their own on loopback
	@command -v redis-server >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@redis-server --version

demo: install ## run the whole system end to end on the synthetic base (embedded defaults)
	$(BIN)/lookalike demo --config configs/demo.yaml $(if $(CUSTOMERS),customers=$(CUSTOMERS))

test: install redis ## install and run the whole test suite (unit, integration, e2e)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install ## fast unit tests only
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

test-integration: install redis ## integration tests (Spark, Feast, Redis, MLflow)
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

test-e2e: install redis ## end-to-end pipeline tests
	$(BIN)/python -m pytest -m e2e $(PYTEST_ARGS)

lint: install ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/mypy lookalike spark_jobs training index_builder serving

fmt: install ## format with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bento-lock: install ## re-pin serving/requirements.lock.txt (the bento's requirements) from pyproject + constraints
	{ sed -n '1,3p' serving/requirements.lock.txt; echo "--extra-index-url $(TORCH_INDEX)"; \
	  $(BIN)/python -m uv pip compile pyproject.toml -c constraints.txt $(TORCH_SOURCE) --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 --no-header --no-annotate --allow-unsafe --quiet; \
	} > serving/requirements.lock.txt.tmp && mv serving/requirements.lock.txt.tmp serving/requirements.lock.txt

bento: install ## build the BentoML bento (then `bentoml containerize lookalike:latest`, see serving/README.md)
	$(BIN)/bentoml build -f serving/bentofile.yaml .

bench-features: install ## Spark feature build, 1M customers (see bench/README.md)
	$(BIN)/python bench/bench_features.py

bench-materialize: install redis ## online store materialization throughput
	$(BIN)/python bench/bench_materialize.py

bench-train: install ## training throughput and convergence
	$(BIN)/python bench/bench_train.py

bench-faiss: install ## FAISS index+search, n=100k, k=10
	$(BIN)/python bench/bench_faiss.py

bench-weekly: install ## end-to-end weekly inference, 1M anchors + 2M customers
	$(BIN)/python bench/bench_weekly.py

bench-weekly-spark: install ## weekly assignment, local engine vs --engine spark on local[2], same data
	$(BIN)/python bench/bench_weekly_spark.py

bench-serving: install redis ## /assign latency and throughput on loopback
	$(BIN)/python bench/bench_serving.py

# The lent GPU machine has no network: carry faiss and pydantic (stage configs) in .whl/
# (git-ignored, <= 64 MiB; about 35 MB). Versions from constraints.txt.
GPU_WHEELS := faiss-cpu pydantic pydantic-core annotated-types typing-inspection typing-extensions
gpu-wheels: ## download the wheels bench/gpu_check.sh needs (CPython 3.12, x86-64) into .whl/
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -c constraints.txt -d .whl $(GPU_WHEELS)

gpu-check: ## CPU vs GPU FAISS + weekly inference side by side (run on a CUDA machine; no venv needed)
	bash bench/gpu_check.sh

bench-distill: install ## teacher-student vs plain student, test F1, 20k demo base, 3 seeds
	$(BIN)/python bench/bench_distill.py --customers 20000 epochs=4 sampling.pairs_per_epoch=30000 \
		sampling.natural_pairs=100000 knn_max_queries=2000 threads=1

clean: ## remove generated data and artifacts (keeps the virtualenv)
	rm -rf data artifacts mlruns mlartifacts mlflow.db feature_repo/data
