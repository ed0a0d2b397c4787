"""meteora.lm: the protocol on a tiny random Llama (transformers backend), backend choice, errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from meteora.errors import InvalidInputError, MissingDependencyError
from meteora.lm import load_lm, resolve_backend
from meteora.lm.base import CausalLM, SamplingParams, check_prompts, cut_at_stop, strip_prefix
from meteora.lm.loading import DOUBLE_QUANT, bnb_4bit_config
from meteora.lm.transformers import TransformersLM

CHAT = [{"role": "user", "content": "Does aspirin reduce the risk of myocardial infarction?"}]
RAW = "Results: the odds ratio was"


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    return TransformersLM.from_pretrained(str(tiny_llama_dir), device="cpu")


# ------------------------------------------------------------------ protocol conformance
def test_transformers_lm_conforms_to_the_protocol(tiny_lm, tiny_llama_dir):
    assert isinstance(tiny_lm, CausalLM)
    assert tiny_lm.backend == "transformers" and tiny_lm.supports_loglik
    ident = tiny_lm.identity()
    assert ident["backend"] == "transformers" and ident["model"] == str(tiny_llama_dir)
    assert ident["fingerprint"]  # a local folder gets a file stamp
    assert not tiny_lm.model.training


def test_generate_raw_and_chat_prompts(tiny_lm):
    params = SamplingParams(max_new_tokens=6)
    out = tiny_lm.generate([RAW, CHAT, RAW], params)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert out[0] == out[2], "greedy decoding is deterministic"
    assert tiny_lm.generate([RAW], params) == [out[0]], "batching does not change greedy output"


def test_seeded_sampling_is_reproducible(tiny_lm):
    p = SamplingParams(max_new_tokens=8, do_sample=True, temperature=1.0, seed=7)
    assert tiny_lm.generate([RAW, CHAT], p) == tiny_lm.generate([RAW, CHAT], p)


def test_stop_strings_cut_the_output(tiny_lm):
    full = tiny_lm.generate([RAW], SamplingParams(max_new_tokens=12))[0]
    if len(full) < 3:
        pytest.skip("the random model stopped at once")
    stop = full[2:4]
    cut = tiny_lm.generate([RAW], SamplingParams(max_new_tokens=12, stop=(stop,)))[0]
    assert cut == full[: full.find(stop)]


def test_assistant_prefix_is_continued_not_repeated(tiny_lm):
    prefix = "1. Patients:"
    out = tiny_lm.generate([[*CHAT, {"role": "assistant", "content": prefix}]], SamplingParams(max_new_tokens=4))
    text, special = tiny_lm.render([*CHAT, {"role": "assistant", "content": prefix}])
    assert text.endswith("<|im_start|>assistant\n" + prefix) and special is False
    assert isinstance(out[0], str)


def test_complete_wraps_chat_and_strips(tiny_lm):
    out = tiny_lm.complete(["Is water wet?", "Answer yes or no."], max_new_tokens=4)
    assert len(out) == 2 and all(t == t.strip() for t in out)
    assert tiny_lm.complete([], max_new_tokens=4) == []
    with pytest.raises(InvalidInputError, match="prompts"):
        tiny_lm.complete("not a list")
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        tiny_lm.complete(["x"], max_new_tokens=0)


def test_score_is_an_exact_log_likelihood(tiny_lm):
    import torch

    prompts, conts = [RAW, "Methods: a retrospective cohort"], [" 0.72", " yes", " of children"]
    scores = tiny_lm.score(prompts, conts, add_special_tokens=True)
    assert scores.shape == (2, 3) and np.all(np.isfinite(scores)) and np.all(scores < 0)
    # the same number by hand: one forward pass over prompt + continuation
    tok = tiny_lm.tokenizer
    p_ids = tok(prompts[1], add_special_tokens=True)["input_ids"]
    c_ids = tok(conts[2], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + c_ids])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_lm.model(input_ids=ids).logits[0].float(), -1)
    manual = sum(float(logp[len(p_ids) - 1 + t, c]) for t, c in enumerate(c_ids))
    assert scores[1, 2] == pytest.approx(manual, abs=1e-4)


def test_next_token_logprobs(tiny_lm):
    rows = tiny_lm.next_token_logprobs([RAW, CHAT], top_k=5)
    assert len(rows) == 2
    for row in rows:
        assert 1 <= len(row) <= 5 and all(v <= 0 for v in row.values())
    with pytest.raises(InvalidInputError, match="top_k"):
        tiny_lm.next_token_logprobs([RAW], top_k=0)


def test_score_is_the_shared_loglik_scorer(tiny_lm):
    """``TransformersLM.score`` and a plain ``LoglikScorer`` are one implementation."""
    from meteora.lm.scoring import LoglikScorer

    prompts = [RAW, "Methods: a retrospective cohort of 120 patients", "Is water wet?"]
    conts = [" yes", " no", " of children", " 0.72"]
    lm = TransformersLM(tiny_lm.model, tiny_lm.tokenizer, batch_size=2)
    for special in (True, False):
        scorer = LoglikScorer(
            tiny_lm.model, tiny_lm.tokenizer, batch_size=2, max_length=lm.input_limit()
        )
        np.testing.assert_array_equal(
            lm.score(prompts, conts, add_special_tokens=special),
            scorer(prompts, conts, add_special_tokens=special),
        )
    # next_token_logprobs reads the same tail log-probabilities
    ids = tiny_lm.tokenizer(RAW, add_special_tokens=True)["input_ids"]
    best = float(scorer.tail_logprobs([ids], 1)[0, -1].max())
    assert max(lm.next_token_logprobs([RAW], top_k=1)[0].values()) == pytest.approx(best, abs=1e-6)
    # the cached scorer follows max_input_tokens changed after construction
    lm.max_input_tokens = 8
    short = LoglikScorer(tiny_lm.model, tiny_lm.tokenizer, batch_size=2, max_length=8)
    np.testing.assert_array_equal(lm.score(prompts, conts), short(prompts, conts))
    assert short.truncated >= 1 and lm.loglik_scorer().max_length == 8


# ------------------------------------------------------------------ helpers and validation
def test_sampling_params_and_prompt_checks():
    with pytest.raises(InvalidInputError, match="temperature"):
        SamplingParams(do_sample=True, temperature=0).validate()
    with pytest.raises(InvalidInputError, match="stop"):
        SamplingParams(stop=("",)).validate()
    with pytest.raises(InvalidInputError, match="prompts\\[1\\]"):
        check_prompts(["ok", [{"role": "user"}]])
    with pytest.raises(InvalidInputError, match="prompts\\[0\\] is empty"):
        check_prompts(["  "])
    assert cut_at_stop("a\n### b", ["###", "b"]) == "a\n"
    assert strip_prefix("1. x", "1.") == " x" and strip_prefix("x", "1.") == "x"


def test_one_double_quant_setting_for_training_and_inference():
    pytest.importorskip("bitsandbytes")
    import torch

    assert bnb_4bit_config(torch.float32).bnb_4bit_use_double_quant is DOUBLE_QUANT
    from meteora.training.settings import TrainingSettings

    assert "double_quant" not in TrainingSettings().to_dict()
    # an older settings dict with the key still loads
    assert TrainingSettings.from_dict({"double_quant": True, "lora_r": 8}).lora_r == 8


# ------------------------------------------------------------------ backend choice
def test_resolve_backend_rules(tiny_llama_dir, tmp_path):
    assert resolve_backend("transformers", None, None) == "transformers"
    assert resolve_backend("auto", str(tiny_llama_dir), None) == "transformers"
    assert resolve_backend("auto", None, "some/adapter") == "transformers"
    assert resolve_backend(None, "x", None, base_url="http://127.0.0.1:1/v1") == "openai"
    with pytest.raises(InvalidInputError, match="backend must be"):
        resolve_backend("vllm", None, None)


def test_load_lm_errors():
    with pytest.raises(InvalidInputError, match="base_url"):
        load_lm("openai", "m")
    with pytest.raises(InvalidInputError, match="serve it on the server"):
        load_lm("openai", "m", "adapter-dir", base_url="http://127.0.0.1:1/v1")


def test_llamacpp_adapter_must_be_a_peft_folder(tmp_path):
    pytest.importorskip("xllamacpp")
    from meteora.errors import ModelNotFoundError
    from meteora.lm.llamacpp import LlamaCppLM

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")  # never loaded: the adapter is checked first
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a PEFT adapter folder"):
        LlamaCppLM.from_pretrained(str(gguf), adapter=str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError, match="not a local folder"):
        LlamaCppLM.from_pretrained(str(gguf), adapter="someone/hub-adapter")


def test_generator_rejects_torch_options_on_other_backends():
    from meteora.rationales.generator import RationaleGenerator

    with pytest.raises(InvalidInputError, match="backend='transformers' only"):
        RationaleGenerator.from_pretrained(None, backend="llamacpp", load_in_4bit=True)
    with pytest.raises(InvalidInputError, match="backend='transformers' only"):
        RationaleGenerator.from_pretrained("m", backend="openai", base_url="http://127.0.0.1:1/v1", device="cpu")


@pytest.mark.parametrize(("module", "extra", "build"), [
    ("xllamacpp", "llamacpp", lambda: __import__("meteora.lm.llamacpp", fromlist=["x"]).LlamaCppLM("x.gguf")),
    ("openai", "openai", lambda: __import__("meteora.lm.openai_compat", fromlist=["x"]).OpenAICompatLM("http://127.0.0.1:1/v1")),
])
def test_missing_backend_package_names_the_extra(monkeypatch, module, extra, build):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingDependencyError, match=rf"meteora-rerank\[{extra}\]"):
        build()


# ------------------------------------------------------------------ callers on this backend
def test_generator_and_verifier_run_on_the_transformers_backend(tiny_lm):
    from meteora.rationales.generator import RationaleGenerator
    from meteora.types import to_passages
    from meteora.verifier import Verifier

    gen = RationaleGenerator(tiny_lm, template="med-rationale")
    assert gen.backend == "transformers" and gen.model is tiny_lm.model
    assert "backend" not in gen.cache_key_fields(3)  # transformers keys are unchanged
    rs = gen.generate("Does aspirin help?", n=2, max_new_tokens=8)
    assert rs.rationales
    res = Verifier(tiny_lm, summarize=False, max_new_tokens=12).verify(
        "Does aspirin help?", to_passages(["Aspirin reduces risk.", "Cats sleep a lot."])
    )
    assert set(res.verdicts) == {"0", "1"}  # a random model fails closed, but every passage is judged


def test_preset_on_an_openai_server_keeps_the_template_and_drops_local_loading():
    pytest.importorskip("openai")
    from meteora.rationales.generator import RationaleGenerator

    url = "http://127.0.0.1:9/v1"  # never contacted: nothing is generated here
    with pytest.raises(InvalidInputError, match="served under"):
        RationaleGenerator.from_preset("med-rationale-mistral-7b", backend="openai", base_url=url)
    gen = RationaleGenerator.from_preset(
        "med-rationale-mistral-7b", backend="openai", base_url=url, model="okoene-med-rationale"
    )
    assert (gen.backend, gen.template.name, gen.max_new_tokens, gen.adapter_id) == ("openai", "med-rationale", 128, None)
    key = gen.cache_key_fields(3)
    assert key["backend"] == {"backend": "openai", "model": "okoene-med-rationale", "url": url, "adapter": None}
    assert gen.model is None and gen.tokenizer is None
