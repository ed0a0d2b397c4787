"""Adapter evaluation: finite perplexities, base vs adapter differ, clear errors on mismatches."""

from __future__ import annotations

import json
import logging
import math

import pytest

from meteora.errors import DataNotFoundError, InvalidInputError, ModelNotFoundError
from meteora.training.adapter_eval import evaluate_adapter, to_markdown
from meteora.training.jsonl import write_jsonl_atomic

RATIONALES = [
    "Look for randomized controlled trials reporting mortality.",
    "Check adverse events and dosage reported.",
]


def _random_adapter(base_dir, out, *, hidden=None, seed=0):
    """Save a LoRA adapter with random (non-zero) B matrices, so it changes the model's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    if hidden is None:
        model = AutoModelForCausalLM.from_pretrained(base_dir)
    else:
        cfg = LlamaConfig(
            vocab_size=600,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
        model = AutoModelForCausalLM.from_config(cfg)
        model.config.name_or_path = str(base_dir)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        ),
    )
    peft_model.save_pretrained(str(out))
    return out


def _data(tmp_path, n=5):
    path = tmp_path / "heldout.jsonl"
    write_jsonl_atomic(
        path,
        [
            {
                "id": str(i),
                "query": f"What are the signs of disease {i} in cats?",
                "rationales": RATIONALES,
            }
            for i in range(n)
        ],
    )
    return path


def test_base_and_adapter_perplexities(tmp_path, tiny_llama_dir):
    adapter = _random_adapter(tiny_llama_dir, tmp_path / "adapter")
    res = evaluate_adapter(
        str(tiny_llama_dir), adapter, _data(tmp_path), batch_size=2, progress=False
    )
    for key in ("base", "adapter"):
        s = res[key]
        assert math.isfinite(s["perplexity"]) and s["perplexity"] > 1
        assert math.isfinite(s["mean_loss"]) and s["std_loss"] >= 0 and s["samples_per_s"] > 0
        assert s["n_examples"] == 5 and s["n_tokens"] > 5
        assert s["perplexity"] == pytest.approx(math.exp(s["mean_token_loss"]))
    assert res["base"]["n_tokens"] == res["adapter"]["n_tokens"]
    assert abs(res["base"]["mean_loss"] - res["adapter"]["mean_loss"]) > 1e-3
    # a random tiny LM is close to uniform over its 600-token vocabulary
    assert 100 < res["base"]["perplexity"] < 2000
    json.dumps(res)  # serialisable as is
    md = to_markdown(res)
    assert (
        sum(line.startswith("| ") for line in md.splitlines()) == 3
        and "adapter" in md
        and f"{res['base']['perplexity']:.3f}" in md
    )

    capped = evaluate_adapter(
        str(tiny_llama_dir), adapter, _data(tmp_path), max_examples=2, progress=False
    )
    assert capped["base"]["n_examples"] == 2
    again = evaluate_adapter(
        str(tiny_llama_dir), adapter, _data(tmp_path), batch_size=5, progress=False
    )
    assert again["adapter"]["perplexity"] == pytest.approx(res["adapter"]["perplexity"], rel=1e-4)


def test_prompt_completion_files_and_4bit(tmp_path, tiny_mistral_dir):
    adapter = _random_adapter(tiny_mistral_dir, tmp_path / "adapter")
    path = tmp_path / "pc.jsonl"
    write_jsonl_atomic(
        path, [{"prompt": "### Query:\nq\n\n### Response:\n", "completion": RATIONALES[0]}] * 3
    )
    res = evaluate_adapter(str(tiny_mistral_dir), adapter, path, load_in_4bit=True, progress=False)
    assert res["data"]["format"] == "prompt-completion" and res["load_in_4bit"] is True
    assert (
        math.isfinite(res["adapter"]["perplexity"])
        and res["base"]["perplexity"] != res["adapter"]["perplexity"]
    )


def test_errors(tmp_path, tiny_llama_dir, tiny_mistral_dir, caplog):
    adapter = _random_adapter(tiny_llama_dir, tmp_path / "adapter")
    data = _data(tmp_path, n=2)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        evaluate_adapter(str(tiny_llama_dir), adapter, tmp_path / "missing.jsonl")
    with pytest.raises(InvalidInputError, match="unknown prompt template"):
        evaluate_adapter(str(tiny_llama_dir), adapter, data, template="nope")
    with pytest.raises(ModelNotFoundError, match="not a PEFT adapter"):
        evaluate_adapter(str(tiny_llama_dir), tmp_path, data)
    with pytest.raises(InvalidInputError, match="batch_size"):
        evaluate_adapter(str(tiny_llama_dir), adapter, data, batch_size=0)

    wrong_shape = _random_adapter(tiny_llama_dir, tmp_path / "wide", hidden=32)
    with pytest.raises(InvalidInputError, match="does not fit"):
        evaluate_adapter(str(tiny_llama_dir), wrong_shape, data, progress=False)

    with caplog.at_level(logging.WARNING, logger="meteora.lm.loading"):
        evaluate_adapter(str(tiny_mistral_dir), adapter, data, progress=False)
    assert any("was trained on" in r.getMessage() for r in caplog.records)
