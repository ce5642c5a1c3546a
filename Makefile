# The two set-up commands of the README: `make demo` and `make test`.
# Each installs what it needs: a virtual environment, and (for tests) the real peers.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit unit-pure compile pure peers bench fuzz clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ng911 demo

peers:
	./scripts/install-peers.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench scripts

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest

# the sans-I/O core, the location readers, the elements, LoST and the fuzz tests again on the
# pure-Python build (the full suite ran on the compiled one): both builds stay working
unit-pure: $(STAMP)
	NG911_PURE=1 $(VENV)/bin/pytest tests/sip tests/location tests/elements tests/lost tests/net tests/resilience/test_fuzz_smoke.py \
	  tests/resilience/test_fuzz_regressions.py tests/test_compiled.py

# the mypyc build of the sans-I/O core (README "Compiled build"): extension modules beside
# their sources, which Python prefers; `make pure` removes them. `make demo` runs whichever
# is there. `make test` compiles first, and fails when compiling fails.
compile: $(STAMP)
	$(PY) scripts/compile.py

pure:
	python3 scripts/compile.py --clean

test: $(STAMP) peers lint typecheck compile unit unit-pure

# every benchmark (rig.py and loadgen.py are their shared helpers; the fuzz storm has its
# own target), then issue 16's goals table gathered from their results (bench/goals.py)
bench: $(STAMP)
	for b in bench/*.py; do \
	  case $$b in bench/rig.py|bench/loadgen.py|bench/fuzz.py|bench/goals.py) continue;; esac; \
	  $(PY) $$b || exit 1; done
	$(PY) bench/goals.py

# a seeded storm of 1,000,000 mutated inputs against running elements (not part of `make test`)
fuzz: $(STAMP)
	$(PY) bench/fuzz.py

clean: pure
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
