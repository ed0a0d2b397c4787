"""DPO on tiny preference pairs: trains a couple of steps, saves an adapter, continues an SFT adapter."""

from __future__ import annotations

import json
import math

import pytest

from meteora.errors import DataNotFoundError, InvalidInputError, TrainingDataError
from meteora.rationales.templates import get_template
from meteora.training.dpo import DPOSettings, train_dpo
from meteora.training.jsonl import write_jsonl_atomic

CHOSEN = "Look for randomized controlled trials reporting mortality."
REJECTED = "Dogs and cats with renal failure."


def _pairs(n: int = 4):
    tpl = get_template("med-rationale")
    return [
        {
            "prompt": tpl.render(f"Does aspirin help patient {i}?"),
            "chosen": CHOSEN,
            "rejected": REJECTED,
        }
        for i in range(n)
    ]


def _fast(**overrides) -> DPOSettings:
    base = dict(
        batch_size=2,
        grad_accum=1,
        logging_steps=1,
        save_steps=2,
        max_length=160,
        progress=False,
        learning_rate=1e-3,
        target_modules="all-attn",
    )
    base.update(overrides)
    return DPOSettings(**base)


def test_dpo_settings_defaults_and_validation():
    s = DPOSettings()
    s.validate()
    assert (s.beta, s.learning_rate, s.lr_scheduler, s.warmup_ratio, s.num_epochs) == (
        0.05,
        3e-5,
        "cosine",
        0.1,
        3.0,
    )
    assert (s.load_in_4bit, s.lora_r, s.lora_alpha) == (True, 16, 32)
    for kw in (dict(beta=0), dict(beta=-1.0), dict(loss_type="magic"), dict(grad_accum=0)):
        with pytest.raises(InvalidInputError):
            DPOSettings(**kw).validate()


def test_dpo_bad_inputs(tmp_path, tiny_mistral_dir):
    with pytest.raises(DataNotFoundError):
        train_dpo(tiny_mistral_dir, tmp_path / "none.jsonl", tmp_path / "out", _fast(max_steps=1))
    with pytest.raises(TrainingDataError, match="identical"):
        train_dpo(
            tiny_mistral_dir,
            [{"prompt": "p", "chosen": "a", "rejected": "a"}],
            tmp_path / "out",
            _fast(max_steps=1),
        )


def test_dpo_on_the_base_model_trains_and_saves(tmp_path, tiny_mistral_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = tmp_path / "pairs.jsonl"
    write_jsonl_atomic(
        path,
        [
            {"query": f"Does aspirin help patient {i}?", "chosen": [CHOSEN], "rejected": [REJECTED]}
            for i in range(4)
        ],
    )
    out = tmp_path / "dpo"
    result = train_dpo(tiny_mistral_dir, path, out, _fast(max_steps=3))
    assert result.kind == "dpo" and result.global_step == 3 and len(result.losses) == 3
    assert all(math.isfinite(loss) and loss > 0 for _, loss in result.losses)
    assert result.losses[0][1] == pytest.approx(
        0.6931, abs=0.01
    )  # policy == reference at the start
    assert (out / "adapter_model.safetensors").is_file() and not (out / "ref").exists()
    meta = json.loads((out / "meteora_training.json").read_text())
    assert (
        meta["kind"] == "dpo" and meta["settings"]["beta"] == 0.05 and meta["data"]["n_pairs"] == 4
    )
    assert meta["reference"].startswith("base model")
    # the implicit-reward metrics are kept per logged step
    assert [row["step"] for row in meta["log_history"]] == [1, 2, 3]
    assert all(0.0 <= row["rewards/accuracies"] <= 1.0 and "rewards/margins" in row for row in meta["log_history"])
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_mistral_dir), str(out)
    )
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_dpo_continues_an_sft_adapter(tmp_path, tiny_llama_dir):
    from safetensors.torch import load_file

    from meteora.training.sft import SFTSettings, train_sft

    sft = tmp_path / "sft"
    sft_pairs = [{"prompt": p["prompt"], "completion": CHOSEN} for p in _pairs()]
    train_sft(
        tiny_llama_dir,
        sft_pairs,
        sft,
        SFTSettings(
            max_steps=2,
            batch_size=2,
            grad_accum=1,
            max_length=160,
            target_modules="all-attn",
            progress=False,
        ),
    )
    out = tmp_path / "dpo"
    result = train_dpo(tiny_llama_dir, _pairs(), out, _fast(max_steps=2), sft_adapter=sft)
    assert result.global_step == 2
    assert result.metadata["init_adapter"] == str(sft) and result.metadata["reference"].startswith(
        "sft adapter"
    )
    before, after = (
        load_file(sft / "adapter_model.safetensors"),
        load_file(out / "adapter_model.safetensors"),
    )
    assert before.keys() == after.keys()
    assert max(float((before[k] - after[k]).abs().max()) for k in before) > 0, (
        "DPO must update the SFT adapter"
    )
    assert not (out / "ref").exists()
