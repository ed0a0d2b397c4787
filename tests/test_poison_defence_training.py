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


def test_cli_trains_both_models_on_the_train_side(tmp_path, monkeypatch, tiny_encoder, capsys):
    from meteora.bench.context import BenchmarkContext
    from meteora.cli import main

    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(BenchmarkContext, "encoder", lambda self: tiny_encoder)
    monkeypatch.setattr(BenchmarkContext, "scorer", lambda self: PValueScorer())
    data = tmp_path / "data" / "pubmedqa"
    _write_pubmedqa(data, n=16)
    out, rows = tmp_path / "w", tmp_path / "rows.jsonl"
    argv = ["-q", "train", "poison-defence", "--data", str(data), "--out", str(out), "--questions", "8",
            "--attacked", "8", "--candidates", "60", "--top", "60", "--rows-out", str(rows)]
    assert main(argv) == 0
    w = json.loads((out / "suspicion.json").read_text(encoding="utf-8"))
    prov = w["provenance"]
    assert w["features"] == list(SEMANTIC_SIGNALS) and 0.05 <= w["threshold"] <= 0.99
    assert "--questions 8" in prov["command"] and prov["settings"]["monotone"] is True
    assert prov["questions"] == {"clean": 8, "attacked_per_family": 8}
    assert all(c * SIGNAL_SIGNS[n] >= -1e-9 for n, c in zip(w["features"], w["coef"], strict=True))
    assert set(prov["metrics"]["cross_family"]) == {*prov["families"], "mean_poison_recall"}
    lines = [json.loads(x) for x in rows.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == prov["metrics"]["rows"] and {r["run"] for r in lines} == {"clean", *prov["families"]}
    test_ids = set(json.loads((data / "test_ground_truth.json").read_text(encoding="utf-8")))
    asked = {r["query"] for r in lines}
    assert asked and not asked & {f"Does drug {int(t) - 2000} reduce pain {int(t) - 2000} after surgery?" for t in test_ids}
    assert any(r["id"].startswith("poison-") for r in lines)
    shape = json.loads((out / "suspicion-shape.json").read_text(encoding="utf-8"))
    assert shape["features"][-2:] == ["lone", "support"]
    assert "default: threshold" in capsys.readouterr().out
    (out / "suspicion.json").write_text("not a model", encoding="utf-8")
    assert main(argv) == 2  # never overwrites a file that is not ours
    assert (out / "suspicion.json").read_text(encoding="utf-8") == "not a model"
