# grokphase: `make demo` runs the main job on built-in defaults, `make test` runs the test suite,
# `make mutants` the mutation check (every planted wrong formula must fail the fast tests),
# `make docs` the documentation site (mkdocs build --strict: any warning is an error) into site/.
# Each creates .venv if it is missing and install the package (with its test extra) into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.grokphase-installed

.PHONY: demo test mutants docs install bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	GROKPHASE=$(BIN)/grokphase bash theory/teacher_student_demo.sh
	GROKPHASE=$(BIN)/grokphase bash theory/modular_demo.sh
	$(BIN)/grokphase run sims/modular_grok_quick.toml
	$(BIN)/grokphase run sims/fig2_quick.toml

# one pytest-xdist worker per core (at most 8), whole files per worker so that a module's fixtures
# (solved theories, simulated ensembles) are computed once
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses=8 --dist loadfile

mutants: $(STAMP)
	$(BIN)/python tests/mutants/run.py

DOCS_STAMP := $(VENV)/.grokphase-docs-installed

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/python -m mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_theory_ts.py

clean:
	rm -rf $(VENV) results .pytest_cache site
