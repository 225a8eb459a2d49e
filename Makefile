# Set-up and entry points; the README's two commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RANKS ?= 2

.PHONY: install install-test run lint test bench

$(BIN)/hpcqnn: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

# the test extras, torch (TorchConnector's test) and qiskit-ibm-runtime (fake devices), on top of the package
$(VENV)/.test-extras: $(BIN)/hpcqnn
	$(BIN)/python -m pip install -q -e ".[test,torch,ibm]"
	touch $@

install: $(BIN)/hpcqnn

install-test: $(VENV)/.test-extras

run: install
	$(BIN)/mpiexec -n $(RANKS) $(BIN)/hpcqnn train jobs/iris_quick.toml --out runs/iris_quick-$$(date +%Y%m%d-%H%M%S)

bench: install
	$(BIN)/mpiexec -n $(RANKS) $(BIN)/hpcqnn bench --qubits 8 --cuts 1..3 --queries 20 \
		--out runs/bench-$$(date +%Y%m%d-%H%M%S)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/mypy hpcqnn

test: lint
	$(BIN)/python -m pytest -q -ra tests
