"""The evidence scorer (cross-encoder + LoRA adapter) and its trainer, on tiny random models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meteora.datasets.pubmedqa import RetrievalBenchmark
from meteora.errors import InvalidInputError, ModelNotFoundError, TrainingDataError
from meteora.types import Passage


def _toy_pubmedqa(n: int = 8) -> RetrievalBenchmark:
    """A PubMedQA-shaped benchmark: n abstracts of 3 chunks; chunk 1 is the RESULTS chunk."""
    topics = ["aspirin", "statin", "insulin", "vaccine", "ibuprofen", "metformin", "warfarin", "heparin",
              "lithium", "digoxin"]
    corpus, queries, ev, ab, answers, labels = [], {}, {}, {}, {}, {}
    for d in range(n):
        t = topics[d % len(topics)]
        doc = f"{1000 + d}"
        texts = [f"{t} is widely used in clinics.", f"{t} reduced events by {10 + d} percent (p<0.05).",
                 f"patients received {t} or placebo."]
        for i, text in enumerate(texts):
            corpus.append(Passage(text, id=f"{doc}-{i}", doc_id=doc, position=i))
            labels[f"{doc}-{i}"] = ["BACKGROUND", "RESULTS", "METHODS"][i]
        queries[doc] = f"does {t} reduce events?"
        ev[doc] = {f"{doc}-1": 1}
        ab[doc] = {f"{doc}-{i}": 1 for i in range(3)}
        answers[doc] = {"final_decision": "yes", "long_answer": f"{t} reduces events."}
    qids = list(queries)
    return RetrievalBenchmark(
        name="pubmedqa", corpus=corpus, queries=queries, qrels={"abstract": ab, "evidence": ev},
        splits={"test": qids[-2:], "train": qids[:-2], "all": qids}, answers=answers, section_labels=labels,
    )


def test_scorer_untrained_head_gives_probabilities(tiny_st_dir):
    from meteora.scorer import EvidenceScorer

    sc = EvidenceScorer(None, base=str(tiny_st_dir), batch_size=2)
    probs = sc.score("does aspirin work?", ["aspirin helped", "dogs bark", "fluids"])
    assert probs.shape == (3,) and probs.dtype == np.float32
    assert np.all((probs > 0) & (probs < 1))
    batch = sc.score_batch(["does aspirin work?", "q2"], [["aspirin helped", "dogs bark", "fluids"], ["x"]])
    np.testing.assert_allclose(batch[0], probs, rtol=1e-5, atol=1e-6)
    assert batch[1].shape == (1,)
    assert sc.calibration == {}
    assert sc.score("q", []).shape == (0,)


def test_scorer_bad_input(tiny_st_dir, tmp_path):
    from meteora.scorer import EvidenceScorer

    sc = EvidenceScorer(None, base=str(tiny_st_dir))
    with pytest.raises(InvalidInputError, match="list of passage texts"):
        sc.score("q", "a single string")
    with pytest.raises(InvalidInputError, match=r"pairs\[0\]"):
        sc.logits([("q", 3)])
    with pytest.raises(InvalidInputError, match="passage lists for 1 queries"):
        sc.evidence_logits(["q"], [["a"], ["b"]])
    with pytest.raises(InvalidInputError, match="is a string"):
        sc.evidence_logits(["q"], ["abc"])
    with pytest.raises(InvalidInputError, match="batch_size"):
        EvidenceScorer(None, base=str(tiny_st_dir), batch_size=0)
    with pytest.raises(ModelNotFoundError, match="adapter_config.json"):
        EvidenceScorer(tmp_path, base=str(tiny_st_dir))


def test_calibrate_selection_picks_a_grid_point_with_the_real_selector(tiny_encoder):
    from meteora.training.scorer import BAND_GRID, WEIGHT_GRID, calibrate_selection

    bench = _toy_pubmedqa()
    emb = tiny_encoder.encode([p.text for p in bench.corpus])

    class Oracle:  # a scorer that knows the results chunks
        calls = 0

        def evidence_logits(self, queries, passage_lists):
            self.calls += 1
            return [np.array([3.0 if "reduced" in p else -3.0 for p in ps]) for ps in passage_lists]

    oracle = Oracle()

    # every chunk is a candidate, so each pool holds whole documents and the scorer is read
    # for every grid point (with a random tiny encoder a top-6 may hold no two chunks of one
    # document, and then the scorer is rightly never asked)
    cal = calibrate_selection(bench, bench.splits["train"][:4], oracle, tiny_encoder, emb, candidates=len(bench.corpus))
    assert cal["evidence_weight"] in WEIGHT_GRID and cal["evidence_band"] in BAND_GRID
    assert len(cal["grid"]) == len(WEIGHT_GRID) * len(BAND_GRID)
    best = max(g["objective"] for g in cal["grid"])
    assert cal["objective"] == best and 0.0 <= best <= 1.0
    assert {"F1_evidence", "F1_abstract"} <= set(cal["grid"][0])
    assert oracle.calls == len(cal["grid"])  # every grid point ran the Reranker's own scoring path


def test_scorer_examples_refuse_test_questions_and_other_datasets():
    from meteora.training.scorer import ScorerSettings, scorer_examples

    bench = _toy_pubmedqa()
    with pytest.raises(TrainingDataError, match="test questions"):
        scorer_examples(bench, bench.splits["test"], ScorerSettings())
    other = RetrievalBenchmark(name="bioasq", corpus=bench.corpus, queries=bench.queries,
                               qrels=bench.qrels, splits={"all": list(bench.queries)})
    with pytest.raises(TrainingDataError, match="evaluation set"):
        scorer_examples(other, ["1000"], ScorerSettings())
    rows = scorer_examples(bench, ["1000"], ScorerSettings(in_document_label=0.25))
    labels = sorted(r["label"] for r in rows)
    # 3 chunks (1 evidence, 2 in-document) + the conclusion as an extra positive
    assert labels == [0.25, 0.25, 1.0, 1.0]


def test_settings_validation():
    from meteora.training.scorer import ScorerSettings

    with pytest.raises(InvalidInputError, match="batch_size"):
        ScorerSettings(batch_size=0)
    with pytest.raises(InvalidInputError, match="in_document_label"):
        ScorerSettings(in_document_label=1.5)
    with pytest.raises(InvalidInputError, match="dev_fraction"):
        ScorerSettings(dev_fraction=1.0)


@pytest.mark.slow
def test_train_scorer_writes_a_small_reproducible_adapter(tiny_st_dir, tmp_path):
    from meteora.scorer import EvidenceScorer
    from meteora.training.scorer import ScorerSettings, train_scorer

    bench = _toy_pubmedqa()
    out = tmp_path / "scorer"
    settings = ScorerSettings(epochs=2, batch_size=4, hard_negatives=1, dev_fraction=0.34, lr=1e-3)
    prov = train_scorer(out, settings, benchmark=bench, base=str(tiny_st_dir), command="test")
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "provenance.json"} <= files
    assert all(p.stat().st_size < 2_000_000 for p in out.iterdir())
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert not Path(cfg["base_model_name_or_path"]).is_absolute()
    saved = json.loads((out / "provenance.json").read_text())
    assert saved["split"]["test_questions_used"] == 0
    assert saved["split"]["train_questions"] + saved["split"]["dev_questions"] == 6
    assert saved["seed"] == 0 and saved["command"] == "test"
    assert saved == json.loads(json.dumps(prov))
    # reloading the adapter gives a trained scorer that differs from the untrained head
    sc = EvidenceScorer(out, base=str(tiny_st_dir))
    fresh = EvidenceScorer(None, base=str(tiny_st_dir))
    q, ps = bench.queries["1000"], [p.text for p in bench.doc_passages("1000")]
    assert not np.allclose(sc.logits([(q, p) for p in ps]), fresh.logits([(q, p) for p in ps]))
    assert sc.calibration == {k: saved["calibration"][k] for k in ("evidence_weight", "evidence_band")}
    logits = sc.evidence_logits([q], [ps])[0]
    np.testing.assert_allclose(sc.score(q, ps), 1 / (1 + np.exp(-logits)), rtol=1e-5)
    # never replaces what it did not write
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="exists"):
        train_scorer(foreign, settings, benchmark=bench, base=str(tiny_st_dir))
    with pytest.raises(InvalidInputError, match="not a scorer folder"):
        train_scorer(foreign, settings, benchmark=bench, base=str(tiny_st_dir), overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_scorer_remembers_pairs(tiny_st_dir):
    from meteora.scorer import EvidenceScorer

    sc = EvidenceScorer(None, base=str(tiny_st_dir), cache_size=3)
    first = sc.logits([("q", "a"), ("q", "b")])
    assert sc.stats == {"hits": 0, "misses": 2}
    again = sc.logits([("q", "b"), ("q", "c"), ("q", "a")])
    assert sc.stats == {"hits": 2, "misses": 3}
    np.testing.assert_array_equal(again[[2, 0]], first)
    sc.logits([("q", "d"), ("q", "e")])  # bounded: the oldest pairs are forgotten
    assert len(sc.cache) == 3
    off = EvidenceScorer(None, base=str(tiny_st_dir), cache_size=0)
    off.logits([("q", "a")]), off.logits([("q", "a")])
    assert off.stats["hits"] == 0


def test_scorer_logits_persist_in_a_cache_file_keyed_by_the_scorer(tiny_st_dir, tmp_path):
    from meteora.errors import UnsafeOverwriteError
    from meteora.scorer import EvidenceScorer

    path = tmp_path / "logits.sqlite"
    first = EvidenceScorer(None, base=str(tiny_st_dir), cache_path=path)
    lg = first.logits([("q", "a"), ("q", "b")])
    again = EvidenceScorer(None, base=str(tiny_st_dir), cache_path=path)  # a new process, the same file
    np.testing.assert_array_equal(again.logits([("q", "b"), ("q", "a")]), lg[[1, 0]])
    assert again.stats == {"hits": 2, "misses": 0}
    other = EvidenceScorer(None, base=str(tiny_st_dir), max_length=16, cache_path=path)  # another scorer identity
    assert other.identity != first.identity
    other.logits([("q", "a")])
    assert other.stats == {"hits": 0, "misses": 1}
    again.clear_cache()  # memory only: the file keeps them
    again.logits([("q", "a")])
    assert again.stats == {"hits": 1, "misses": 0}
    user_file = tmp_path / "notes.sqlite"
    user_file.write_text("not a database")
    with pytest.raises(UnsafeOverwriteError):
        EvidenceScorer(None, base=str(tiny_st_dir), cache_path=user_file)
    assert user_file.read_text() == "not a database"
