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
# rationales on llama.cpp + the learned cut with the packaged evidence scorer — (5 min 25 s here with an empty
# model and cache home, package install and model conversion included),
# then a "where it wins / where it loses" line per view. Results go to runs/demo/, not
# over the committed ones.
demo: models
	$(METEORA) bench pubmedqa --split test --limit 100 --methods bm25,dense,hybrid,meteora --compare meteora:dense@3 --out runs/demo

# the committed results: every method incl. the SmolLM2 rationale pipeline (rationales
# come from $$METEORA_HOME's cache after the first run: ~10 min of generation for PubMedQA
# and ~20 for BioASQ on a cold cache; scorer logits are cached there too). The default
# pipeline and its ablations run on the evaluation splits only (PubMedQA test, BioASQ dev =
# 8B); the "all" split holds the learned cut's and the scorer's training questions, so it
# runs only retrieval and the untrained elbow.
BENCH_KS := 1,2,3,4,5,6,7,8,10,16,32
BENCH_METHODS := bm25,dense,hybrid,meteora,meteora-query-only,meteora-no-scorer,meteora-query-only-no-scorer,meteora-band,meteora-query-only-band,meteora-elbow,meteora-no-defence,meteora-query-only-no-defence
BENCH_COMPARE := meteora:best,meteora:meteora-query-only,meteora:hybrid,meteora:meteora-band,meteora-query-only:best,meteora:meteora-no-defence
bench: models
	$(METEORA) bench pubmedqa --split all --threads 1 --cut elbow --methods bm25,dense,hybrid,meteora-query-only-no-scorer-w0,meteora-query-only-no-scorer-w1,meteora-query-only-no-scorer-w2
	$(METEORA) bench pubmedqa --split test --threads 2 --ks $(BENCH_KS) --methods $(BENCH_METHODS),meteora-w2,meteora-query-only-w2,meteora-band-w2 --compare $(BENCH_COMPARE),meteora-w2:meteora-query-only-w2,meteora-w2:meteora-band-w2
	$(METEORA) bench bioasq --split dev --threads 2 --ks $(BENCH_KS) --methods $(BENCH_METHODS) --compare $(BENCH_COMPARE)
	$(PY) benchmarks/scorer_analysis.py --threads 2
	$(PY) benchmarks/retrieval_speed.py
	$(PY) benchmarks/rerank_latency.py --limit 10 --threads 2 --compare-cut band

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
