# The two commands of the README. Each creates .venv when missing, installs the project
# with the CPU torch constraint, fetches the offline default models, then runs.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.meteora-installed
METEORA := $(VENV)/bin/meteora
PYTEST_ARGS ?=

.PHONY: demo test models install lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

models: $(STAMP)
	$(METEORA) models pull

# main job: PubMedQA retrieval benchmark on the 500 official test questions, offline defaults
demo: models
	$(METEORA) bench pubmedqa --split test

test: models
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check meteora tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
