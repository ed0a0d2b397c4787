"""The learned cut: its features, its count rule, its models, its training and the stage
end to end. A tiny model is trained here on toy benchmarks (tiny random data, a few
boosting rounds); the shipped models run in the integration test at the end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from helpers_bench import BagOfWordsModel, toy_benchmark

from meteora.embeddings.encoder import Encoder
from meteora.errors import InvalidInputError, TrainingDataError, UnsafeOverwriteError
from meteora.reranker import Reranker
from meteora.selection.cut_features import (
    EVIDENCE_FEATURES,
    FEATURES,
    RATIONALE_FEATURES,
    candidate_features,
)
from meteora.selection.learned_cut import (
    LearnedCut,
    expected_f1_cut,
    learned_cut_for,
    load_cut_models,
    packaged_cut_path,
)
from meteora.selection.selector import EvidenceSelector
from meteora.selection.selector_settings import SelectorSettings
from meteora.selection.signals import CandidateSignals
from meteora.selection_inputs import candidate_pools
from meteora.training.cut import CutTrainingSettings, export_cut_onnx, train_cut
from meteora.types import Passage

# ----------------------------------------------------------------------------- the count rule


def test_expected_f1_cut_maximises_the_expected_f1_and_keeps_at_least_one():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = np.sort(rng.random(rng.integers(1, 30)) ** rng.integers(1, 4))[::-1]
        k = expected_f1_cut(p)
        value = [2 * p[:j].sum() / (j + p.sum()) for j in range(1, len(p) + 1)]
        assert 1 <= k <= len(p) and value[k - 1] == pytest.approx(max(value))
    assert expected_f1_cut(np.zeros(0)) == 0
    assert expected_f1_cut(np.array([0.01, 0.0])) == 1
    # the count follows the probability mass: many likely candidates, many kept
    assert expected_f1_cut(np.full(12, 0.9)) == 12 and expected_f1_cut(np.array([0.9] + [0.05] * 11)) == 1


# ----------------------------------------------------------------------------- features


def _signals(n: int = 8, seed: int = 0, evidence: bool = True, rationales: int = 2) -> CandidateSignals:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 6))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rat = rng.normal(size=(rationales + 1, 6))
    rat /= np.linalg.norm(rat, axis=1, keepdims=True)
    # distinct BM25 scores (ties would be broken by list position)
    ps = [Passage("aspirin " + "stroke " * (i + 1) + f"trial{i}", id=f"p{i}", doc_id=f"d{i % 3}", position=i)
          for i in range(n)]
    ev = np.where(rng.random(n) < 0.5, rng.normal(size=n), np.nan) if evidence else None
    return CandidateSignals.build(rat, emb, ps, evidence=ev, query_row=0, query="Does aspirin prevent stroke?")


def test_features_are_relative_to_the_list_and_ignore_its_order():
    s = _signals()
    assert len(set(s.lexical.tolist())) == s.n
    X = candidate_features(s)
    assert X.shape == (s.n, len(FEATURES))
    perm = np.random.default_rng(1).permutation(s.n)
    shuffled = dataclasses.replace(
        s, passages=[s.passages[i] for i in perm], rationale_cosines=s.rationale_cosines[:, perm],
        pooled=s.pooled[perm], evidence=s.evidence[perm],
    )
    Xp = candidate_features(shuffled)
    keep = [j for j, f in enumerate(FEATURES) if f != "rr_lrank"]  # the one order-dependent feature
    np.testing.assert_allclose(Xp[:, keep], X[perm][:, keep], equal_nan=True)
    # scale-free: adding a constant to every logit changes no evidence feature but the value
    moved = candidate_features(s.with_evidence(s.evidence + 5.0))
    for f in EVIDENCE_FEATURES[1:]:
        j = FEATURES.index(f)
        np.testing.assert_allclose(moved[:, j], X[:, j], equal_nan=True)


def test_missing_signals_are_nan():
    s = _signals(evidence=False, rationales=0)
    X = candidate_features(s)
    for f in (*RATIONALE_FEATURES, *EVIDENCE_FEATURES):
        assert np.isnan(X[:, FEATURES.index(f)]).all(), f
    scored = _signals()
    X = candidate_features(scored)
    unscored = np.isnan(scored.evidence)
    assert np.isnan(X[unscored, FEATURES.index("ev")]).all() and not np.isnan(X[~unscored, FEATURES.index("ev")]).any()
    with pytest.raises(ValueError, match="query"):
        candidate_features(CandidateSignals.build(np.eye(2)[:1], np.eye(2), [Passage("a", id="a"), Passage("b", id="b")]))


# ----------------------------------------------------------------------------- a tiny trained cut

TOPICS = ["aspirin", "statins", "insulin", "metformin", "fever", "asthma", "measles", "malaria",
          "warfarin", "heparin", "codeine", "lithium"]


def _toy(name: str, train: list[str], held: list[str], held_split: str):
    bench = toy_benchmark(
        TOPICS,
        lambda i, t: [f"{t} background history", f"{t} results improved outcomes", f"{t} methods cohort design"],
        lambda i, t, qid: f"does {t} improve outcomes",
        {"train": train, held_split: held, "all": train + held},
    )
    return dataclasses.replace(bench, name=name)


class CountingScorer:
    """Evidence logits: +2 for a chunk that reports results, -1 otherwise; records every pair."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []

    def evidence_logits(self, queries, passage_lists):
        out = []
        for q, ps in zip(queries, passage_lists, strict=True):
            self.pairs.extend((q, p) for p in ps)
            out.append([2.0 if "results" in p else -1.0 for p in ps])
        return out


SMALL = CutTrainingSettings(rounds=8, num_leaves=4, min_data_in_leaf=3, folds=2, n_score=2, candidates=6, retrieve_k=12)
QIDS = [f"q{i}" for i in range(len(TOPICS))]


@pytest.fixture(scope="module")
def encoder():
    return Encoder(BagOfWordsModel(dim=64))


@pytest.fixture(scope="module")
def benches():
    return {"pubmedqa": _toy("pubmedqa", QIDS[:9], QIDS[9:], "test"), "bioasq": _toy("bioasq", QIDS[:9], QIDS[9:], "dev")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, benches, encoder):
    out = tmp_path_factory.mktemp("cut") / "learned-cut"
    scorer = CountingScorer()
    prov = train_cut(out, SMALL, generator=None, scorer=scorer, encoder=encoder, benchmarks=benches, command="test")
    return out, prov, scorer


def test_training_reads_only_train_questions_and_records_its_provenance(trained):
    out, prov, scorer = trained
    assert sorted(p.name for p in out.iterdir()) == [
        "final.onnx", "final.txt", "provenance.json", "query_only.onnx", "query_only.txt", "stage1.onnx", "stage1.txt"]
    for entry in prov["models"].values():  # each model also written as ONNX, checked against LightGBM
        assert entry["onnx"]["file"] == entry["file"].replace(".txt", ".onnx")
        assert entry["onnx"]["max_abs_diff_vs_lightgbm"]["standard_normal"] < 1e-4
    for name in ("pubmedqa", "bioasq"):
        assert prov["train"][name]["question_ids"] == QIDS[:9]
    held = {f"does {t} improve outcomes" for t in TOPICS[9:]}
    assert scorer.pairs and not {q for q, _ in scorer.pairs} & held
    # the scorer read stage 1's top n_score of each training question, nothing more
    assert len(scorer.pairs) == 2 * 9 * SMALL.n_score
    assert prov["lightgbm_params"]["deterministic"] is True and prov["lightgbm_params"]["num_threads"] == 1
    assert set(prov["metrics"]) >= {"final", "query_only", "stage1"}
    models = load_cut_models(out)
    assert models.n_score == 2 and set(models.finals) == {"final", "query_only"}


def test_training_is_deterministic_and_never_replaces_what_is_not_ours(trained, tmp_path, benches, encoder):
    out, _, _ = trained
    again = tmp_path / "again"
    train_cut(again, SMALL, generator=None, scorer=CountingScorer(), encoder=encoder, benchmarks=benches, command="test")
    for f in ("stage1.txt", "final.txt", "query_only.txt", "stage1.onnx", "final.onnx", "query_only.onnx"):
        assert (again / f).read_bytes() == (out / f).read_bytes()
    with pytest.raises(UnsafeOverwriteError, match="exists"):
        train_cut(again, SMALL, generator=None, scorer=CountingScorer(), encoder=encoder, benchmarks=benches)
    (again / "notes.txt").write_text("keep me")
    with pytest.raises(UnsafeOverwriteError, match="not a learned-cut folder"):
        train_cut(again, SMALL, generator=None, scorer=CountingScorer(), encoder=encoder, benchmarks=benches,
                  overwrite=True)
    assert (again / "notes.txt").read_text() == "keep me"


def test_training_refuses_held_out_questions(tmp_path, encoder):
    leaky = _toy("pubmedqa", QIDS[:9] + ["q9"], ["q9", "q10", "q11"], "test")
    with pytest.raises(TrainingDataError, match="pubmedqa test"):
        train_cut(tmp_path / "x", SMALL, generator=None, scorer=CountingScorer(), encoder=encoder,
                  benchmarks={"pubmedqa": leaky})
    other = dataclasses.replace(leaky, name="scifact")
    with pytest.raises(TrainingDataError, match="train"):
        train_cut(tmp_path / "y", SMALL, generator=None, scorer=CountingScorer(), encoder=encoder,
                  benchmarks={"pubmedqa": other})
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_stage_end_to_end_reads_the_scorer_on_stage_one_top_only(trained, benches, encoder):
    out, _, _ = trained
    scorer = CountingScorer()
    rr = Reranker(generator=None, encoder=encoder, scorer=scorer, cut=out)
    cut = rr.selector.cut
    assert isinstance(cut, LearnedCut) and cut.final == "query_only"
    bench = benches["pubmedqa"]
    passages = bench.corpus[:12]
    res = rr.rerank("does warfarin improve outcomes", passages)  # a held-out question: evaluation is fine
    # the scorer read exactly stage 1's top n_score candidates
    (pool,) = candidate_pools(encoder, ["does warfarin improve outcomes"], [passages])
    scorer.pairs.clear()
    (ready,) = rr.prepare_pools([pool])
    read = sorted(np.flatnonzero(~np.isnan(ready.signals.evidence)).tolist())
    top = np.argsort(-cut.stage1_probabilities(ready.signals), kind="stable")[:2]
    assert read == sorted(top.tolist()) and len(scorer.pairs) == 2
    # ranking by P, the selection exactly the expected-F1 top k, scores are probabilities
    p = np.array([res.selection.scores[h.id].score for h in res.ranked])
    assert np.all(np.diff(p) <= 0) and np.all((0 <= p) & (p <= 1))
    assert res.selected_ids == res.ranked.ids[: expected_f1_cut(p)]
    assert res.selection.explanation.cut == "learned" and "Cut (learned)" in res.explain()
    # without a scorer the stage-1 model ranks (nothing scored)
    bare = Reranker(generator=None, encoder=encoder, scorer=None, cut=out).rerank("does warfarin improve outcomes", passages)
    assert all(bare.selection.scores[i].evidence is None for i in bare.ranked.ids)
    stage1 = cut.stage1_probabilities(ready.signals)
    assert [bare.selection.scores[p.id].score for p in passages] == pytest.approx(stage1.tolist())


def test_cut_settings_and_errors(trained, encoder):
    out, _, _ = trained
    with pytest.raises(InvalidInputError, match="unknown cut"):
        SelectorSettings(cut="threshold")
    with pytest.raises(InvalidInputError, match="cut must be a folder"):
        Reranker(generator=None, encoder=encoder, scorer=None, cut=3.5)
    with pytest.raises(InvalidInputError, match="final must be one of"):
        LearnedCut(load_cut_models(out), final="nope")
    # the array-level selector without the query falls back to the elbow / the band
    sel = EvidenceSelector()
    res = sel.select(np.eye(3)[:1], np.eye(3), [Passage("x", id=str(i)) for i in range(3)])
    assert res.explanation.cut == "elbow"
    # a given learned cut needs the query
    with pytest.raises(InvalidInputError, match="reads the query"):
        EvidenceSelector(cut=learned_cut_for(None, folder=out)).select(np.eye(3)[:1], np.eye(3), [Passage("x", id=str(i)) for i in range(3)])
    # a damaged model file is refused by its sha256
    broken = out.parent / "broken"
    broken.mkdir()
    for f in out.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "final.onnx").write_bytes((out / "final.onnx").read_bytes() + b"\0")
    with pytest.raises(InvalidInputError, match="sha256"):
        load_cut_models(broken)


def test_the_trees_run_on_onnx_runtime_unless_the_reference_runtime_is_asked_for(trained, monkeypatch):
    """ONNX by default (no LightGBM import on the query path); ``METEORA_RUNTIME=torch`` or a
    folder without exports runs LightGBM; both give the same probabilities."""
    out, _, _ = trained
    onnx = load_cut_models(out)
    monkeypatch.setenv("METEORA_RUNTIME", "torch")
    reference = load_cut_models(out)
    assert {m.runtime for m in [onnx.stage1, *onnx.finals.values()]} == {"onnx"}
    assert {m.runtime for m in [reference.stage1, *reference.finals.values()]} == {"lightgbm"}
    X = np.random.default_rng(0).normal(size=(200, len(FEATURES)))
    for a, b in [(onnx.stage1, reference.stage1), *((onnx.finals[k], reference.finals[k]) for k in onnx.finals)]:
        assert np.allclose(a.predict(X), b.predict(X), atol=1e-5)
    monkeypatch.delenv("METEORA_RUNTIME")
    bare = out.parent / "no-exports"
    bare.mkdir()
    prov = json.loads((out / "provenance.json").read_text())
    for entry in prov["models"].values():
        entry.pop("onnx")
        (bare / entry["file"]).write_bytes((out / entry["file"]).read_bytes())
    (bare / "provenance.json").write_text(json.dumps(prov))
    assert load_cut_models(bare).stage1.runtime == "lightgbm"
    # `meteora train cut-onnx` adds the exports to such a folder, without retraining
    from meteora.cli import main as cli_main

    assert cli_main(["train", "cut-onnx", str(bare)]) == 0
    again = json.loads((bare / "provenance.json").read_text())
    assert again["onnx_export_command"] == f"meteora train cut-onnx {bare}"
    for name, entry in again["models"].items():
        assert (bare / entry["onnx"]["file"]).read_bytes() == (out / entry["onnx"]["file"]).read_bytes()
        assert entry["file"] == prov["models"][name]["file"] and entry["sha256"] == prov["models"][name]["sha256"]
    assert load_cut_models(bare).stage1.runtime == "onnx"
    (bare / "final.txt").write_text((bare / "final.txt").read_text() + "\n")
    with pytest.raises(InvalidInputError, match="sha256"):
        export_cut_onnx(bare)


# ----------------------------------------------------------------------------- the shipped models


def test_shipped_models_are_small_and_described():
    models = load_cut_models()
    prov = models.provenance
    for entry in prov["models"].values():
        assert (packaged_cut_path() / entry["file"]).stat().st_size < 2_000_000
        assert (packaged_cut_path() / entry["onnx"]["file"]).stat().st_size < 2_000_000
        assert entry["onnx"]["max_abs_diff_vs_lightgbm"]["standard_normal"] < 1e-4
    assert prov["onnx_export_command"] == "meteora train cut-onnx meteora/weights/learned-cut"
    assert models.n_score == 10 and set(models.finals) == {"final", "query_only"}
    assert models.finals["final"].generator["model"].startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert learned_cut_for(None).final == "query_only"


@pytest.mark.integration
@pytest.mark.parametrize("runtime", ["auto", "torch"])
def test_shipped_models_select_the_evidence_of_a_real_question(runtime, monkeypatch):
    """The packaged encoder, scorer and models on a PubMedQA-shaped abstract: the results
    chunk ranks first and is selected, and the scorer read at most 10 candidates."""
    chunks = [
        "Aspirin is widely used for secondary prevention after ischaemic stroke, but its benefit in older adults is debated.",
        "We randomised 1,200 patients aged over 70 with a recent stroke to aspirin or placebo and followed them for two years.",
        "Recurrent stroke occurred in 8.1% of the aspirin group and 11.9% of the placebo group (hazard ratio 0.66, 95% CI 0.48-0.91).",
        "Major bleeding was rare and did not differ between groups.",
    ]
    passages = [Passage(t, id=f"a-{i}", doc_id="a", position=i) for i, t in enumerate(chunks)]
    passages += [Passage("Dogs with chronic kidney disease were given fluids.", id="b-0", doc_id="b")]
    monkeypatch.setenv("METEORA_RUNTIME", runtime)  # ONNX trees (and encoder, scorer) or the reference ones
    rr = Reranker(generator=None)
    assert rr.selector.cut.models.stage1.runtime == ("lightgbm" if runtime == "torch" else "onnx")
    res = rr.rerank("Does aspirin reduce recurrent stroke in older adults?", passages)
    assert res.ranked[0].id == "a-2" and "a-2" in res.selected_ids and "b-0" not in res.selected_ids
    assert sum(s.evidence is not None for s in res.selection.scores.values()) <= 10
