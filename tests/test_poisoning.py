"""The poisoning benchmark, its poison generators and the offline defences (fast, tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meteora.bench.poison_gen import (
    FAMILIES,
    WRONG_ANSWER,
    counterfactual,
    injection,
    make_poison,
    trim_words,
)
from meteora.bench.poisoning import PoisoningConfig, detection_metrics, poison_benchmark
from meteora.datasets.pubmedqa import RetrievalBenchmark
from meteora.defences import FEATURES, PAIR_WEIGHTS, PerplexityDefence, PoisonCheck, poison_features
from meteora.errors import InvalidInputError
from meteora.training.poison_check import PoisonCheckSettings, choose_thresholds, poison_examples
from meteora.types import Passage
from meteora.verifier import verify_with

EVIDENCE = ("Mortality was significantly lower in the treated group (12% vs 25%, p < 0.01). "
            "Length of stay increased by 2 days (OR 2.5).")


def _fluency(texts):
    """A stand-in LM: texts with 'not' or 'decreased' read less fluently."""
    return [-1.0 - 0.5 * t.count(" not ") - 0.5 * t.count("decreased") for t in texts]


def toy_pubmedqa(n: int = 10) -> RetrievalBenchmark:
    corpus, queries, abstract, evidence, answers = [], {}, {}, {}, {}
    for i in range(n):
        d = f"{1000 + i}"
        texts = [f"Background on topic {i}: disease {i} is common in adults.",
                 f"We studied {40 + i} patients with disease {i} in a cohort.",
                 f"Outcome {i} increased significantly in treated patients (p < 0.01) compared with controls."]
        for pos, t in enumerate(texts):
            corpus.append(Passage(t, id=f"{d}-{pos}", doc_id=d, position=pos))
        queries[d] = f"Does treatment improve outcome {i} in disease {i}?"
        abstract[d] = {f"{d}-{p}": 1 for p in range(3)}
        evidence[d] = {f"{d}-2": 1}
        answers[d] = {"final_decision": "yes" if i % 2 else "no", "long_answer": "It helps."}
    qids = list(queries)
    return RetrievalBenchmark(name="pubmedqa", corpus=corpus, queries=queries,
                              qrels={"abstract": abstract, "evidence": evidence},
                              splits={"test": qids[: n // 2], "train": qids[n // 2:], "all": qids}, answers=answers)


# --------------------------------------------------------------------------- generators
def test_counterfactual_reverses_direction_significance_and_effects():
    out = counterfactual(EVIDENCE, seed=1)
    assert "not significantly higher" in out and "decreased" in out
    assert "25% vs 12%" in out and "OR 0.40" in out and "p < 0.01" not in out
    assert out == counterfactual(EVIDENCE, seed=1)  # deterministic
    assert counterfactual(EVIDENCE, seed=1, family="train") != out  # other rules


def test_counterfactual_without_rule_adds_reversing_sentence():
    assert counterfactual("Cells were counted.", answer="yes").endswith("do not support the hypothesis.")
    assert counterfactual("Cells were counted.", answer="no").endswith("strongly support the hypothesis.")


def test_injection_pushes_the_wrong_answer_and_is_seeded():
    for family in FAMILIES:
        texts = {injection("Does X help?", "yes", seed=s, family=family, topic="X is a drug. More.") for s in range(20)}
        assert len(texts) > 1
        assert all(f" {WRONG_ANSWER['yes']}" in t and "X is a drug." in t for t in texts)
    assert injection("Does X help?", "no", seed=3) == injection("Does X help?", "no", seed=3)


def test_generators_refuse_bad_input():
    with pytest.raises(InvalidInputError):
        counterfactual("  ")
    with pytest.raises(InvalidInputError):
        injection("q?", "perhaps")
    with pytest.raises(InvalidInputError):
        make_poison("rumour", question="q?", answer="yes", evidence="e")
    with pytest.raises(InvalidInputError):
        counterfactual("text", family="dev")


def test_trim_words_keeps_whole_sentences_near_target():
    text = " ".join(f"Sentence {i} has five words." for i in range(60))
    out = trim_words(text)
    assert 100 <= len(out.split()) <= 105 and out.endswith(".")


# --------------------------------------------------------------------------- insertion + metrics
def test_poison_benchmark_inserts_after_gold_deterministically():
    bench = toy_pubmedqa()
    qids = bench.query_ids("all")
    poisoned, records = poison_benchmark(bench, qids, fraction=0.3, seed=7)
    again, records2 = poison_benchmark(bench, qids, fraction=0.3, seed=7)
    assert records == records2 and len(records) == 3
    assert {r.kind for r in records} == {"counterfactual", "injection"}
    assert len(poisoned.corpus) == len(bench.corpus) + 3
    for r in records:
        doc = poisoned.doc_passages(r.qid)
        ids = [p.id for p in doc]
        assert ids.index(r.passage_id) == ids.index(r.gold_id) + 1
        assert [p.position for p in doc] == list(range(len(doc)))
    assert poisoned.qrels == bench.qrels
    assert poison_benchmark(bench, qids, fraction=0.3, seed=8)[1] != records


def test_detection_metrics_toy_case():
    inputs = {"q1": ["g1", "p1"], "q2": ["g2", "x"], "q3": ["p3"]}
    flagged = {"q1": ["p1"], "q2": ["g2"], "q3": []}
    kinds = {"p1": "injection", "p3": "counterfactual"}
    m = detection_metrics(inputs, flagged, kinds, {"q1": ["g1"], "q2": ["g2"], "q3": []})
    assert (m["true_positives"], m["false_positives"], m["false_negatives"]) == (1, 1, 1)
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["F1"] == 0.5
    assert m["gold_seen"] == 2 and m["gold_dropped"] == 1 and m["clean_dropped_rate"] == pytest.approx(1 / 3)
    empty = detection_metrics({"q": ["a"]}, {}, {}, {"q": ["a"]})
    assert empty["precision"] is None and empty["recall"] is None and empty["gold_dropped_rate"] == 0.0


def test_choose_thresholds_respects_gold_drop_bound():
    labels = np.array([1, 0, 1, 0])
    gold = np.array([False, True, False, False])
    probs = {"a": np.array([0.95, 0.9, 0.0, 0.7]), "b": np.array([0.0, 0.0, 0.8, 0.1])}
    strict = choose_thresholds(probs, labels, gold, 0.0)
    assert strict["thresholds"] == {"a": 0.95, "b": 0.8} and strict["F1"] == 1.0
    loose = choose_thresholds({"a": probs["a"]}, labels, gold, 1.0)
    assert loose["gold_dropped_rate"] <= 1.0 and loose["recall"] == 0.5


def test_config_validation():
    with pytest.raises(InvalidInputError):
        PoisoningConfig(defences=["magic"]).validate()
    with pytest.raises(InvalidInputError):
        PoisoningConfig(fraction=0.0).validate()
    with pytest.raises(InvalidInputError):
        PoisoningConfig(llm_limit=0).validate()


# --------------------------------------------------------------------------- defences
def test_features_see_instructions_and_contradicting_twins():
    inj = injection("Does aspirin prevent stroke?", "yes", seed=0)
    f = poison_features("Does aspirin prevent stroke?", inj)
    assert f["quoted_question"] == 1.0 and f["imperative"] >= 1
    clean = poison_features("Does aspirin prevent stroke?", EVIDENCE)
    assert clean["imperative"] == 0 and clean["number_density"] > f["number_density"]
    cf = counterfactual(EVIDENCE, seed=1)
    g = poison_features("q?", cf, [EVIDENCE, "Unrelated background."], logprob=_fluency)
    assert g["twin_overlap"] > 0.6 and g["twin_contradicts"] == 1.0 and g["polarity_diff"] >= 2
    assert g["twin_less_fluent"] > 0 and g["twin_more_fluent"] == 0
    assert set(g) == set(FEATURES)


@pytest.mark.parametrize("weights", [None, PAIR_WEIGHTS])
def test_packaged_check_flags_injection_and_keeps_clean_evidence(weights):
    check = PoisonCheck.from_pretrained(weights, logprob=_fluency)
    q = "Does treatment improve outcome 3 in disease 3?"
    inj = Passage(injection(q, "yes", seed=2, topic="Disease 3 is common in adults."), "p")
    gold = Passage(EVIDENCE, "g")
    res = verify_with(check, q, [gold, inj])
    assert res.accepted_ids == ["g"] and res.rejected_ids == ["p"]
    assert res.verdicts["p"].flag_types == ["INSTRUCTION"]
    assert res.verdicts["p"].confidence >= check.thresholds["instruction"]


def test_pair_gate_flags_only_the_less_fluent_twin():
    head = {"name": "contradiction", "features": ["twin_overlap"], "mean": [0.0], "std": [1.0], "coef": [5.0],
            "intercept": 0.0, "threshold": 0.5}
    gold, cf = Passage(EVIDENCE, "g", doc_id="d", position=0), Passage(counterfactual(EVIDENCE, seed=1), "p", doc_id="d", position=1)
    both = PoisonCheck({"heads": [{**head, "gate": "twin_contradicts"}]}, corpus=[gold, cf], logprob=_fluency)
    assert verify_with(both, "q?", [gold, cf]).rejected_ids == ["g", "p"]  # the gate alone cannot tell them apart
    pair = PoisonCheck({"heads": [{**head, "gate": "twin_less_fluent"}]}, corpus=[gold, cf], logprob=_fluency)
    res = verify_with(pair, "q?", [gold, cf])
    assert res.rejected_ids == ["p"] and res.verdicts["p"].flag_types == ["CONTRADICTION"]


def test_check_weights_are_validated(tmp_path):
    with pytest.raises(InvalidInputError):
        PoisonCheck({"features": ["nope"], "mean": [0], "std": [1], "coef": [1], "intercept": 0, "threshold": 0.5})
    with pytest.raises(InvalidInputError):
        PoisonCheck({"features": ["modal"], "mean": [0], "std": [0], "coef": [1], "intercept": 0, "threshold": 0.5})
    with pytest.raises(InvalidInputError):
        PoisonCheck({"heads": []})
    (tmp_path / "model.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInputError):
        PoisonCheck.from_pretrained(tmp_path)


def test_perplexity_defence_calibrates_on_clean_text():
    clean = [f"Outcome {i} increased in treated patients." for i in range(20)]
    d = PerplexityDefence.calibrate(_fluency, clean, quantile=0.9)
    assert d.threshold == pytest.approx(np.e)
    assert not d("q?", Passage(clean[0], "a"), []).flagged
    assert d("q?", Passage("It was not decreased, not at all.", "b"), []).flagged
    with pytest.raises(InvalidInputError):
        PerplexityDefence(_fluency, float("nan"))


def test_training_rows_come_from_train_questions_only():
    bench = toy_pubmedqa()
    settings = PoisonCheckSettings(fraction=0.6)
    x, y, meta = poison_examples(bench, bench.query_ids("train"), settings, logprob=_fluency)
    assert x.shape == (len(meta), len(FEATURES)) and y.sum() == 3
    with pytest.raises(Exception, match="test questions"):
        poison_examples(bench, bench.query_ids("test"), settings)


# --------------------------------------------------------------------------- CLI, tiny models
def _write_pubmedqa(folder, n=12):
    rows, truth = {}, {}
    for i in range(n):
        pmid = str(2000 + i)
        rows[pmid] = {
            "QUESTION": f"Does drug {i} reduce pain {i} after surgery?",
            "CONTEXTS": [f"Pain {i} after surgery is frequent and drug {i} is cheap.",
                         f"We randomised {50 + i} patients to drug {i} or placebo.",
                         f"Pain {i} was significantly lower with drug {i} (p < 0.01; 20% vs 45%)."],
            "LABELS": ["BACKGROUND", "METHODS", "RESULTS"], "MESHES": [], "YEAR": "2010",
            "LONG_ANSWER": f"Drug {i} reduces pain.", "final_decision": "yes" if i % 3 else "no",
        }
        if i < n // 2:
            truth[pmid] = rows[pmid]["final_decision"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ori_pqal.json").write_text(json.dumps(rows), encoding="utf-8")
    (folder / "test_ground_truth.json").write_text(json.dumps(truth), encoding="utf-8")


def test_cli_runs_every_defence_on_a_tiny_corpus(tmp_path, monkeypatch, tiny_st_dir, tiny_llama_dir, capsys):
    from meteora.cli import main

    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    data = tmp_path / "data" / "pubmedqa"
    _write_pubmedqa(data)
    out = tmp_path / "res" / "poisoning.json"
    rc = main(["-q", "bench", "poisoning", "--attack", "same-document", "--data", str(data),
               "--embedding-model", str(tiny_st_dir),
               "--scorer", "none", "--lm", str(tiny_llama_dir), "--verifier-model", str(tiny_llama_dir),
               "--backend", "transformers", "--llm-limit", "2", "--candidates", "5", "--out", str(out),
               "--fraction", "0.5"])
    assert rc == 0
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["protocol"]["poisoned_questions"] == 3 and len(res["poison"]) == 3
    assert set(res["runs"]) >= {"clean", "poisoned", "perplexity", "learned", "llm"}
    assert res["runs"]["llm"]["questions"] == 2 and res["defences"]["llm"]["questions"] == 2
    assert "poisoning" in res["command"] and res["attack"] == "same-document"
    for run in res["runs"].values():
        assert 0.0 <= run["selection_evidence"]["F1"] <= 1.0
    assert "sel F1" in capsys.readouterr().out
