"""``meteora train poison-defence`` on a toy PubMedQA with tiny models: train questions
only, trained-on families only, through ``Reranker``; the monotone fit keeps each
coefficient in its signal's suspicious direction; provenance and rows are written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_poisoning import _write_pubmedqa
from test_poisoning_docs import PValueScorer

from meteora.errors import InvalidInputError
from meteora.suspicion import SEMANTIC_SIGNALS, SIGNAL_SIGNS
from meteora.training.poison_defence import PoisonDefenceSettings, _coefficients


def test_monotone_fit_keeps_each_coefficient_on_its_suspicious_side():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 200)
    # 'cos' (suspicious when high) is made *lower* for the poison rows: a free fit learns a
    # negative weight, the monotone one may not
    z = np.column_stack([rng.normal(size=400) - 1.5 * y, rng.normal(size=400) + 2.0 * y])
    names = ["cos", "span"]
    free, _ = _coefficients(z, y, names, PoisonDefenceSettings(monotone=False))
    mono, _ = _coefficients(z, y, names, PoisonDefenceSettings())
    assert free[0] < -0.5 and free[1] > 0.5
    assert mono[0] == pytest.approx(0.0, abs=1e-6) and mono[1] > 0.5
    neg, _ = _coefficients(z, 1 - y, ["support", "span"], PoisonDefenceSettings())
    assert neg[0] <= 1e-9 and neg[1] == pytest.approx(0.0, abs=1e-6)  # 'support' may only lower suspicion


def test_settings_refuse_held_out_families():
    with pytest.raises(InvalidInputError, match="trained-on families"):
        PoisonDefenceSettings(families=("multichunk",))
    with pytest.raises(InvalidInputError, match="bioasq_gold_fp"):
        PoisonDefenceSettings(bioasq_gold_fp=0.0)
    with pytest.raises(InvalidInputError, match="bioasq_questions"):
        PoisonDefenceSettings(bioasq_questions=-1)


def test_threshold_keeps_each_calibration_set_under_its_share():
    from meteora.training.poison_defence import _threshold

    p = np.linspace(0.0, 0.99, 100)
    a, b = np.arange(100) < 50, np.arange(100) >= 50  # a: scores 0..0.49, b: 0.5..0.99
    t_a = _threshold(p, [(a, 0.1)])
    assert 0.4 < t_a < 0.46 and (p[a] >= t_a).mean() <= 0.1
    both = _threshold(p, [(a, 0.1), (b, 0.1)])
    assert (p[b] >= both).mean() <= 0.1 and both > t_a  # the stricter set decides
    assert _threshold(p, [(np.zeros(100, bool), 0.1)]) == 0.5


def _write_bioasq(folder):
    """Toy BioASQ golden files: 7B1 (train) and 8B1 (dev, must never be read for training)."""
    folder.mkdir(parents=True)

    def q(qid, i):
        return {"id": qid, "body": f"Is gene {i} expressed in tissue {i}?", "type": "yesno",
                "snippets": [{"text": t, "document": f"http://www.ncbi.nlm.nih.gov/pubmed/{9000 + 10 * i + k}"}
                             for k, t in enumerate([f"Gene {i} is expressed in tissue {i} (p < 0.01).",
                                                    f"Expression of gene {i} was higher in tissue {i}."])]}

    for name, ids in (("7B1_golden.json", range(8)), ("8B1_golden.json", range(8, 11))):
        (folder / name).write_text(json.dumps({"questions": [q(f"q{i}", i) for i in ids]}), encoding="utf-8")


def test_cli_trains_both_models_on_the_train_side(tmp_path, monkeypatch, tiny_encoder, capsys):
    from meteora.bench.context import BenchmarkContext
    from meteora.cli import main

    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(BenchmarkContext, "encoder", lambda self: tiny_encoder)
    monkeypatch.setattr(BenchmarkContext, "scorer", lambda self: PValueScorer())
    data = tmp_path / "data" / "pubmedqa"
    _write_pubmedqa(data, n=16)
    _write_bioasq(tmp_path / "bioasq")
    out, rows = tmp_path / "w", tmp_path / "rows.jsonl"
    argv = ["-q", "train", "poison-defence", "--data", str(data), "--out", str(out), "--questions", "8",
            "--attacked", "8", "--candidates", "60", "--top", "60", "--rows-out", str(rows),
            "--bioasq-data", str(tmp_path / "bioasq"), "--bioasq-questions", "6", "--bioasq-attacked", "4"]
    assert main(argv) == 0
    w = json.loads((out / "suspicion.json").read_text(encoding="utf-8"))
    prov = w["provenance"]
    assert w["features"] == list(SEMANTIC_SIGNALS) and 0.05 <= w["threshold"] <= 0.99
    assert "--questions 8" in prov["command"] and prov["settings"]["monotone"] is True
    assert prov["questions"] == {"clean": 8, "attacked_per_family": 8, "bioasq_7B_clean": 6,
                                 "bioasq_7B_attacked_per_family": 4}
    assert set(prov["data"]) == {"pubmedqa/ori_pqal.json", "pubmedqa/test_ground_truth.json", "bioasq-dev/7B1_golden.json"}
    assert "bioasq_clean_gold_flagged_at_threshold" in prov["metrics"]
    assert all(c * SIGNAL_SIGNS[n] >= -1e-9 for n, c in zip(w["features"], w["coef"], strict=True))
    assert set(prov["metrics"]["cross_family"]) == {*prov["families"], "mean_poison_recall"}
    lines = [json.loads(x) for x in rows.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == prov["metrics"]["rows"] and {r["run"] for r in lines} == {"clean", *prov["families"]}
    test_ids = set(json.loads((data / "test_ground_truth.json").read_text(encoding="utf-8")))
    asked = {r["query"] for r in lines}
    assert asked and not asked & {f"Does drug {int(t) - 2000} reduce pain {int(t) - 2000} after surgery?" for t in test_ids}
    assert any(r["id"].startswith("poison-") for r in lines)
    bio = [r for r in lines if r["dataset"] == "bioasq-7B"]
    assert {r["query"] for r in bio} == {f"Is gene {i} expressed in tissue {i}?" for i in range(6)}  # 7B only
    assert not any(r["id"].startswith(("9080", "9090", "9100")) for r in lines)  # no 8B snippet in the corpus
    assert {r["run"] for r in bio} == {"clean", *prov["families"]}
    shape = json.loads((out / "suspicion-shape.json").read_text(encoding="utf-8"))
    assert shape["features"][-2:] == ["lone", "support"]
    assert "default: threshold" in capsys.readouterr().out
    (out / "suspicion.json").write_text("not a model", encoding="utf-8")
    assert main(argv) == 2  # never overwrites a file that is not ours
    assert (out / "suspicion.json").read_text(encoding="utf-8") == "not a model"
