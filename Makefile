# The two commands of the README. Each creates .venv when missing, installs the project
# with the CPU torch constraint, fetches the offline default models, then runs.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.meteora-installed
METEORA := $(VENV)/bin/meteora
PYTEST_ARGS ?=

.PHONY: demo test models install lint bench clean wheel-check

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

models: $(STAMP)
	$(METEORA) models pull

# main job: PubMedQA benchmark on the first 100 official test questions with the offline
# defaults: BM25, dense (MiniLM), hybrid (RRF), and the default Reranker() — SmolLM2
# rationales on llama.cpp + the packaged evidence scorer — (5 min 25 s here with an empty
# model and cache home, package install and model conversion included),
# then a "where it wins / where it loses" line per view. Results go to runs/demo/, not
# over the committed ones.
demo: models
	$(METEORA) bench pubmedqa --split test --limit 100 --methods bm25,dense,hybrid,meteora --compare meteora:dense@3 --out runs/demo

# the committed results: every method incl. the SmolLM2 rationale pipeline (~10 min of
# rationale generation for PubMedQA and ~20 for BioASQ on a cold cache, then cached under
# $$METEORA_HOME). The "all" split holds the scorer's training questions, so it runs only
# methods without the scorer.
bench: models
	$(METEORA) bench pubmedqa --split all --threads 1 --methods bm25,dense,hybrid,meteora-query-only-no-scorer-w0,meteora-query-only-no-scorer-w1,meteora-query-only-no-scorer-w2
	$(METEORA) bench pubmedqa --split test --threads 2 --methods bm25,dense,hybrid,meteora,meteora-no-scorer,meteora-query-only,meteora-query-only-no-scorer,meteora-pairing,meteora-pooling,meteora-w2,meteora-query-only-w2,meteora-no-scorer-w2 --compare meteora:dense@3,meteora:meteora-no-scorer,meteora-query-only:dense@3,meteora:meteora-query-only
	$(METEORA) bench bioasq --split test --threads 2 --views evidence --methods bm25,dense,hybrid,meteora,meteora-no-scorer,meteora-query-only,meteora-query-only-no-scorer --compare meteora:dense@3,meteora:hybrid@3,meteora-query-only:dense@3,meteora:meteora-no-scorer
	$(PY) benchmarks/scorer_analysis.py --threads 2
	$(PY) benchmarks/retrieval_speed.py
	$(PY) benchmarks/rerank_latency.py --limit 10 --threads 2

# METEORA_REQUIRE_INSTALL_CHECK: the fresh-venv install check (tests/test_wheel.py) may not
# skip itself here; it fails instead
test: models
	METEORA_REQUIRE_INSTALL_CHECK=1 $(PY) -m pytest $(PYTEST_ARGS)

# sdist + wheel, twine check, sdist contents, then the wheel installed into a fresh venv
# outside the checkout with its dependencies resolved by pip (CPU torch constraint), where
# `meteora models pull`, the README quick start and `meteora doctor` run in an empty
# METEORA_HOME (~2 min on an idle machine; ~3.5 min on a loaded 2-core one; part of `make test`)
wheel-check: models
	METEORA_REQUIRE_INSTALL_CHECK=1 $(PY) -m pytest -q tests/test_wheel.py

lint: $(STAMP)
	$(VENV)/bin/ruff check meteora tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
