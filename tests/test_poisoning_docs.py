"""The added-document attack families and the new-document poisoning benchmark (tiny
models, a toy PubMedQA): the user path with each defence, the per-family metrics and
the trained-on / held-out split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_bench import BagOfWordsModel
from test_poisoning import _write_pubmedqa, toy_pubmedqa

from meteora.bench.attack_text import parse_question, stance_sentence
from meteora.bench.attacks import (
    FAMILIES,
    HELDOUT_FAMILIES,
    TRAIN_FAMILIES,
    AttackRecord,
    lm_attacks,
    make_attack,
    target_stance,
)
from meteora.bench.poisoning_docs import NewDocumentConfig, attack_documents, run_new_document
from meteora.embeddings.encoder import Encoder
from meteora.errors import InvalidInputError

REC = AttackRecord("q1", "Does aspirin reduce stroke risk in older adults?", "yes",
                   ["Stroke is common in older adults.", "We followed 900 adults for 5 years.",
                    "Aspirin lowered stroke risk (HR 0.7, 95% CI 0.6-0.8; p < 0.001)."], "Aspirin helps.")


class PValueScorer:
    def evidence_logits(self, queries, passage_lists):
        return [np.array([2.0 if "p <" in t or "p =" in t else -1.0 for t in ps]) for ps in passage_lists]


def test_families_split_into_trained_on_and_held_out():
    assert set(TRAIN_FAMILIES) | set(HELDOUT_FAMILIES) == set(FAMILIES)
    assert not set(TRAIN_FAMILIES) & set(HELDOUT_FAMILIES)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "lm"])
def test_every_rule_family_writes_a_seeded_on_topic_document_pushing_the_wrong_answer(family):
    docs = make_attack(family, REC, seed=3)
    assert docs == make_attack(family, REC, seed=3) and docs != make_attack(family, REC, seed=4)
    text = " ".join(docs).lower()
    assert ("stroke" in text or "aspirin" in text) and len(text.split()) > 15
    assert not any(w in text for w in ("ignore previous", "ai system", "instruction"))
    if family == "multichunk":
        assert 3 <= len(docs) <= 4
    if family == "study_paraphrase":
        assert REC.question.lower().rstrip("?") not in text


def test_the_attacker_pushes_the_other_decision_and_the_grammar_reads():
    assert target_stance(REC, 0) == "no"
    c = parse_question(REC.question)
    assert (c.aux, c.subject) == ("does", "aspirin")
    assert stance_sentence(REC.question, "no") == "aspirin does not reduce stroke risk in older adults"
    with pytest.raises(InvalidInputError, match="not rule-written"):
        make_attack("lm", REC)


def test_lm_family_uses_the_lm_complete_path_sampled_and_seeded():
    class Echo:
        def __init__(self):
            self.calls = []

        def complete(self, prompts, **kw):
            self.calls.append(kw)
            return ["Short."]

    lm = Echo()
    out = lm_attacks([REC], lm, seed=0)
    assert out["q1"][0].startswith("Short.") and "does not reduce" in out["q1"][0]  # the claim kept in
    assert lm.calls[0]["do_sample"] and lm.calls[0]["temperature"] in (0.6, 0.8, 1.0)
    docs = attack_documents("lm", [REC], lm=Echo())
    assert docs[0].doc_id == "poison-q1" and docs[0].metadata == {"poison": "lm"}
    with pytest.raises(InvalidInputError, match="needs an LM"):
        attack_documents("lm", [REC])


def test_new_document_benchmark_runs_the_user_path_per_defence(tmp_path, monkeypatch):
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    bench = toy_pubmedqa(12)
    cfg = NewDocumentConfig(split="all", limit=12, fraction=0.5, families=["study_restated", "multichunk"],
                            defences=["none", "default", "shape-prior"], candidates=6)
    res = run_new_document(cfg, benchmark=bench, encoder=Encoder(BagOfWordsModel(dim=64), cache=None),
                           scorer=PValueScorer())
    runs = res["runs"]
    assert res["protocol"]["attacked"] == 6 and set(runs) == {"none", "default", "shape-prior"}
    for run in runs.values():
        for fam in ("study_restated", "multichunk"):
            m = run["families"][fam]
            assert m["attacked"] == 6 and 0 <= m["poison_selected"] <= 6 and m["gold_kept"] <= m["gold_base"]
        assert run["trained_on"]["families"] == ["study_restated"] and run["held_out"]["families"] == ["multichunk"]
        assert run["clean"]["questions"] == 12 and "one_passage_evidence" in run
    assert runs["none"]["clean"]["F1_change"] == 0.0 and runs["none"]["clean"]["gold_dropped"] == 0
    # the restated fake is what this defence catches (the verbatim question run)
    assert runs["default"]["families"]["study_restated"]["poison_selected"] < \
        runs["none"]["families"]["study_restated"]["poison_selected"]
    json.dumps(res)  # JSON-ready


def test_new_document_config_is_checked():
    with pytest.raises(InvalidInputError, match="families"):
        NewDocumentConfig(families=["nope"]).validate()
    with pytest.raises(InvalidInputError, match="'none'"):
        NewDocumentConfig(defences=["default"]).validate()


def test_cli_new_document(tmp_path, monkeypatch, tiny_st_dir, capsys):
    from meteora.cli import main

    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    data = tmp_path / "data" / "pubmedqa"
    _write_pubmedqa(data)
    out = tmp_path / "res" / "new.json"
    rc = main(["-q", "bench", "poisoning", "--data", str(data), "--embedding-model", str(tiny_st_dir),
               "--scorer", "none", "--families", "a,h", "--defences", "none,default", "--limit", "6",
               "--fraction", "0.5", "--candidates", "5", "--out", str(out), "--no-one-passage"])
    assert rc == 0
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["attack"] == "new-document" and "--families a,h" in res["command"]
    assert set(res["runs"]["none"]["families"]) == {"study_restated", "multichunk"}
    assert "poison selected % / gold kept %" in capsys.readouterr().out
