# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install when the package metadata changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# A real Triton server for the integration tests, in a venv of its own: nvidia-pytriton
# ships the tritonserver binary (python backend only) and needs numpy<2, which the main
# venv cannot have. Only the server and its python-backend models run from it.
TRITON_VENV ?= .venv-triton
TRITON_REQS := nvidia-pytriton==0.7.0 numpy<2 onnxruntime
TRITON_STAMP := $(TRITON_VENV)/.installed-$(shell echo '$(TRITON_REQS)' | cksum | cut -d' ' -f1)

.PHONY: demo test lint install triton-venv system-deps clean help

help:
	@echo "make demo   set up and run the end-to-end demo (embedded ONNX Runtime, one machine)"
	@echo "make test   set up and run the whole test suite (lint included)"
	@echo "make lint   ruff on the code"
	@echo "make clean  remove the virtual environments and caches"

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[torch,test,experiments]'
	rm -f $(VENV)/.installed-*
	touch $@

$(TRITON_STAMP):
	$(PYTHON) -m venv $(TRITON_VENV)
	echo '*' > $(TRITON_VENV)/.gitignore
	$(TRITON_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(foreach r,$(TRITON_REQS),'$(r)')
	rm -f $(TRITON_VENV)/.installed-*
	touch $@

install: $(STAMP)

triton-venv: $(TRITON_STAMP)

demo: $(STAMP)
	$(BIN)/edgesplit demo

# mypy on every package, and --strict on the core (edgesplit without its app layer) and wire.
CORE := $(filter-out edgesplit/__main__.py,$(wildcard edgesplit/*.py)) edgesplit/schemas edgesplit/release
MYPY_STRICT := $(BIN)/mypy --strict $(CORE) wire

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(MYPY_STRICT)

# The shaped-link tests drive `ip` and `tc` (iproute2) and `iptables` (100% loss) as root,
# and the GPU check's script is linted with shellcheck: install them where they are missing.
system-deps:
	@command -v ip >/dev/null && command -v tc >/dev/null && command -v iptables >/dev/null \
	  && command -v shellcheck >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq iproute2 iptables shellcheck >/dev/null; \
	  else echo "note: iproute2, iptables or shellcheck is missing; their tests will say so"; fi; }

test: $(STAMP) $(TRITON_STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(MYPY_STRICT)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(TRITON_VENV) .pytest_cache .ruff_cache .hypothesis
