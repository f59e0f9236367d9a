# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Each creates the virtualenv, installs the project and fetches the real models it needs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EDGEBENCH_CACHE ?= $(HOME)/.cache/edgebench
export EDGEBENCH_CACHE

STAMP := $(VENV)/.installed
MODELS := $(EDGEBENCH_CACHE)/models/.fetched

# Test processes: the suite is mostly waiting on child processes and services, so two keep 2 cores busy; each takes
# whole test files (--dist loadfile), so a module's shared fixture (a fleet run, a set of reports) is built once.
TEST_WORKERS ?= 2

NATIVE_BUILD ?= native/build
NATIVE_DEPS ?= $(EDGEBENCH_CACHE)/native
LLAMA_CACHE ?= $(EDGEBENCH_CACHE)/llama.cpp

.PHONY: demo demo-stop test lint bench install models clean native native-test native-bench llm llm-tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(MODELS): scripts/fetch_models.py $(STAMP)
	$(BIN)/python scripts/fetch_models.py
	touch $(MODELS)

models: $(MODELS)

demo: $(STAMP) $(MODELS) llm
	sh scripts/ensure_services.sh
	$(BIN)/python scripts/demo.py

demo-stop: $(STAMP)
	$(BIN)/python scripts/demo.py --stop

# The C++ harness (docs/native.md): pinned runtime headers/libraries fetched into the cache once, then CMake, through
# ccache (its cache under EDGEBENCH_CACHE, paths taken relative to the checkout): a fresh clone reuses the objects.
export CCACHE_DIR ?= $(EDGEBENCH_CACHE)/ccache
export CCACHE_BASEDIR ?= $(CURDIR)
native: $(STAMP)
	sh scripts/ensure_services.sh
	$(BIN)/python native/fetch_deps.py --cache $(NATIVE_DEPS) --python $(BIN)/python
	cmake -S native -B $(NATIVE_BUILD) -DCMAKE_BUILD_TYPE=Release -DEDGEBENCH_DEPS_DIR=$(NATIVE_DEPS) \
		$$(command -v ccache >/dev/null && echo -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
	cmake --build $(NATIVE_BUILD) -j 2

native-test: native $(MODELS)
	cd $(NATIVE_BUILD) && ctest --output-on-failure

# llama.cpp for GGUF models (docs/dependencies.md): built once per version and CPU into the cache (1.5-3 min on 2 cores),
# then llama-cpp-python's Python part installed against it; well under a second once done. llm-tools adds llama-bench.
llm: $(STAMP)
	$(BIN)/python scripts/build_llama.py --cache $(LLAMA_CACHE) --python $(BIN)/python

llm-tools: $(STAMP)
	$(BIN)/python scripts/build_llama.py --cache $(LLAMA_CACHE) --python $(BIN)/python --tools

test: $(STAMP) $(MODELS) native-test llm
	sh scripts/ensure_services.sh
	$(BIN)/ruff check agent server dashboards tests bench scripts
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP) $(MODELS)
	$(BIN)/python bench/engine_overhead.py

native-bench: native $(MODELS)
	$(BIN)/python bench/native_overhead.py

lint: $(STAMP)
	$(BIN)/ruff check agent server dashboards tests bench scripts

clean:
	rm -rf $(VENV) build *.egg-info $(NATIVE_BUILD)
