# The two commands of the README. Both install first (tools/install.sh reuses the venv when
# tools/requirements.txt is unchanged), then run.
SHELL := /bin/bash
VENV ?= $(CURDIR)/tools/venv
export SPRUNE_VENV := $(VENV)
PYTEST_ARGS ?= -q

.PHONY: install demo test clean-demo

install:
	bash tools/install.sh

demo: install
	source $(VENV)/bin/activate && cd egs/mini_minds/ic1 && ./run.sh

test: install
	source $(VENV)/bin/activate && python -m pytest $(PYTEST_ARGS) test

clean-demo:   # only the demo recipe: other mini recipes keep their (long) experiments
	rm -rf egs/mini_minds/ic1/data egs/mini_minds/ic1/exp egs/mini_minds/ic1/dump
