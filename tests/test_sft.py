"""QLoRA SFT: response-only labels with EOS, 4-bit training on CPU, save/reload, resume, errors."""

from __future__ import annotations

import json
import shutil

import pytest

from meteora.errors import DataNotFoundError, InvalidInputError, ModelNotFoundError
from meteora.lm.loading import ensure_pad_token
from meteora.rationales.templates import get_template
from meteora.training.collate import IGNORE_INDEX, build_sft_features, pad_batch, prompt_length
from meteora.training.settings import resolve_target_modules
from meteora.training.sft import SFTSettings, build_sft_dataset, train_sft

RESPONSE = (
    "Look for randomized controlled trials reporting mortality.\nCheck adverse events and dosage."
)


def _tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _pairs(n: int = 6):
    tpl = get_template("med-rationale")
    return [
        {"prompt": tpl.render(f"Does aspirin help patient {i}?"), "completion": RESPONSE}
        for i in range(n)
    ]


def _fast(**overrides) -> SFTSettings:
    base = dict(
        batch_size=2,
        grad_accum=1,
        learning_rate=1e-2,
        target_modules="all-linear",
        logging_steps=1,
        save_steps=4,
        max_length=160,
        warmup_ratio=0.0,
        progress=False,
    )
    base.update(overrides)
    return SFTSettings(**base)


# --------------------------------------------------------------------------- label masking


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_mistral_dir"])
def test_labels_mask_exactly_the_prompt_and_keep_eos(fixture, request):
    tok = _tok(request.getfixturevalue(fixture))
    assert tok.pad_token_id != tok.eos_token_id
    prompt = get_template("med-rationale").render("Does aspirin prevent myocardial infarction?")
    f = build_sft_features(tok, prompt, RESPONSE, max_length=256)
    n_prompt = len(tok(prompt)["input_ids"])
    assert f["n_prompt_tokens"] == n_prompt == prompt_length(tok, prompt)
    assert f["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert f["labels"][n_prompt:] == f["input_ids"][n_prompt:]
    assert IGNORE_INDEX not in f["labels"][n_prompt:]
    assert f["labels"][-1] == tok.eos_token_id and f["input_ids"][-1] == tok.eos_token_id
    assert f["input_ids"][:n_prompt] == tok(prompt)["input_ids"]
    assert tok.decode(f["input_ids"][n_prompt:-1]) == RESPONSE
    assert not f["truncated"]


def test_truncation_keeps_the_start_and_drops_prompt_only_examples(tiny_llama_dir):
    tok = _tok(tiny_llama_dir)
    prompt = get_template("med-rationale").render("Does aspirin help?")
    n_prompt = len(tok(prompt)["input_ids"])
    f = build_sft_features(tok, prompt, RESPONSE, max_length=n_prompt + 3)
    assert f["truncated"] and len(f["input_ids"]) == n_prompt + 3 and f["n_completion_tokens"] == 3
    assert f["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    feats, counts = build_sft_dataset(
        [
            {"prompt": prompt, "completion": RESPONSE},
            {"prompt": prompt * 3, "completion": RESPONSE},
        ],
        tok,
        n_prompt + 3,
    )
    assert len(feats) == 1 and counts == {"n_truncated": 1, "n_dropped": 1}


def test_conversational_prompts_use_the_chat_template(tiny_llama_dir):
    tok = _tok(tiny_llama_dir)
    msgs = [{"role": "user", "content": "Does aspirin help?"}]
    f = build_sft_features(tok, msgs, "yes", max_length=64)
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert tok.decode(f["input_ids"][: f["n_prompt_tokens"]]) == text
    assert f["labels"][-1] == tok.eos_token_id


def test_pad_batch_masks_padding():
    b = pad_batch(
        [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}], 9
    )
    assert b["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert b["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_ensure_pad_token_picks_an_existing_token_or_adds_one(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    tok = _tok(tiny_llama_dir)
    tok.pad_token = tok.eos_token
    assert ensure_pad_token(tok) is False
    assert tok.pad_token == "<unk>" and tok.pad_token_id != tok.eos_token_id

    tok = _tok(tiny_llama_dir)
    tok.pad_token = tok.eos_token
    tok.unk_token = None
    tok.bos_token = None
    vocab = tok.get_vocab()
    assert "<pad>" in vocab  # the tiny tokenizer has one: it is reused, nothing is added
    assert ensure_pad_token(tok) is False and tok.pad_token == "<pad>"

    # a tokenizer with no spare special token gets a new '<pad>' and the model is resized
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"a": 0, "b": 1, "</s>": 2}, unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    bare = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", pad_token="</s>")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    before = model.get_input_embeddings().weight.shape[0]
    bare_len = len(bare)
    assert ensure_pad_token(bare) is True and len(bare) == bare_len + 1
    assert bare.pad_token == "<pad>" and bare.pad_token_id != bare.eos_token_id
    big = _tok(tiny_llama_dir)
    big.add_special_tokens({"additional_special_tokens": ["<extra_1>", "<extra_2>"]})
    assert ensure_pad_token(big, model) is True
    assert model.get_input_embeddings().weight.shape[0] == len(big) > before
    assert model.config.pad_token_id == big.pad_token_id


# --------------------------------------------------------------------------- settings and errors


def test_settings_defaults_and_validation():
    s = SFTSettings()
    s.validate()
    assert (s.load_in_4bit, s.quant_type, s.lora_r, s.lora_alpha, s.lora_dropout) == (
        True,
        "nf4",
        16,
        32,
        0.05,
    )
    assert (s.learning_rate, s.num_epochs, tuple(s.target_modules)) == (
        2e-4,
        3.0,
        ("q_proj", "v_proj"),
    )
    assert resolve_target_modules("all-attn") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert resolve_target_modules("q_proj,v_proj") == ["q_proj", "v_proj"]
    bad = [
        dict(lora_r=0),
        dict(batch_size=-1),
        dict(max_steps=0),
        dict(learning_rate=0.0),
        dict(lora_dropout=1.0),
        dict(target_modules="everything"),
        dict(template="no-such-template"),
        dict(precision="int3"),
        dict(warmup_ratio=1.5),
        dict(n_rationales=0),
        dict(max_length=2),
        dict(lr_scheduler="zigzag"),
    ]
    for kw in bad:
        with pytest.raises(InvalidInputError):
            SFTSettings(**kw).validate()
    assert SFTSettings.from_dict(s.to_dict()) == s
    with pytest.raises(InvalidInputError, match="unknown"):
        SFTSettings.from_dict({"lora_rank": 8})


def test_clear_errors_before_loading_anything(tmp_path, tiny_llama_dir):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        train_sft(tiny_llama_dir, tmp_path / "missing.jsonl", tmp_path / "out", _fast(max_steps=1))
    with pytest.raises(InvalidInputError, match="unknown prompt template"):
        train_sft(tiny_llama_dir, _pairs(), tmp_path / "out", _fast(max_steps=1, template="nope"))
    with pytest.raises(ModelNotFoundError, match="not a PEFT adapter"):
        train_sft(tiny_llama_dir, _pairs(), tmp_path / "out", _fast(max_steps=1), adapter=tmp_path)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="not empty"):
        train_sft(tiny_llama_dir, _pairs(), foreign, _fast(max_steps=1))
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(InvalidInputError, match="not modules of this model"):
        train_sft(
            tiny_llama_dir,
            _pairs(),
            tmp_path / "out2",
            _fast(max_steps=1, target_modules=("c_attn",)),
        )


# --------------------------------------------------------------------------- training


def _is_4bit_callback():
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        seen_4bit = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            import bitsandbytes as bnb

            Probe.seen_4bit = any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())

    return Probe()


def test_tiny_llama_trains_in_4bit_on_cpu_loss_goes_down_and_reloads(tmp_path, tiny_llama_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    probe = _is_4bit_callback()
    result = train_sft(
        tiny_llama_dir, _pairs(), out, _fast(max_steps=24, save_steps=8), callbacks=[probe]
    )
    assert type(probe).seen_4bit is True
    assert result.global_step == 24
    losses = [loss for _, loss in result.losses]
    assert len(losses) == 24
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.5, losses

    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    meta = json.loads((out / "meteora_training.json").read_text())
    assert (
        meta["kind"] == "sft"
        and meta["global_step"] == 24
        and meta["settings"]["load_in_4bit"] is True
    )
    assert meta["final_loss"] == pytest.approx(losses[-1])
    assert meta["data"]["pairs_sha256"] and meta["pad_token"] != meta["eos_token"]
    assert not list(tmp_path.glob(".adapter.*")), "no temporary folder may be left behind"

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tok = _tok(out)
    feats = build_sft_features(tok, _pairs(1)[0]["prompt"], RESPONSE)
    ids = torch.tensor([feats["input_ids"]])
    labels = torch.tensor([feats["labels"]])
    with torch.no_grad():
        base_loss = base(input_ids=ids, labels=labels).loss.item()
        tuned = PeftModel.from_pretrained(base, str(out))
        tuned_loss = tuned(input_ids=ids, labels=labels).loss.item()
    assert tuned_loss < base_loss - 0.5
    assert tuned_loss == pytest.approx(losses[-1], abs=0.3)


def test_adapter_loads_into_rationale_generator(tmp_path, tiny_mistral_dir):
    generator = pytest.importorskip("meteora.rationales.generator")
    out = tmp_path / "adapter"
    train_sft(
        tiny_mistral_dir,
        _pairs(4),
        out,
        _fast(max_steps=2, target_modules="all-attn", load_in_4bit=True),
    )
    gen = generator.RationaleGenerator.from_pretrained(
        str(tiny_mistral_dir), adapter=str(out), template="med-rationale"
    )
    assert gen.adapter_id == str(out)
    result = gen.generate("Does aspirin prevent stroke?", n=3, max_new_tokens=8)
    assert isinstance(result, generator.RationaleSet)
    assert result.query == "Does aspirin prevent stroke?" and len(result.rationales) >= 1
    assert result.raw != "" or result.fallback


def test_interrupted_run_resumes_to_the_same_step_and_weights(tmp_path, tiny_llama_dir):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise KeyboardInterrupt("simulated crash after step 6")

    settings = _fast(max_steps=12, save_steps=4)
    full = train_sft(tiny_llama_dir, _pairs(), tmp_path / "full", settings)

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train_sft(tiny_llama_dir, _pairs(), out, settings, callbacks=[Crash()])
    assert not (out / "adapter_config.json").exists(), (
        "an interrupted run must not leave an adapter"
    )
    assert (out / "checkpoints" / "checkpoint-4").is_dir()

    with pytest.raises(InvalidInputError, match="different run"):
        train_sft(
            tiny_llama_dir, _pairs(), out, _fast(max_steps=12, save_steps=4, learning_rate=5e-3)
        )

    resumed = train_sft(tiny_llama_dir, _pairs(), out, settings)
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-4")
    assert resumed.global_step == full.global_step == 12
    assert [s for s, _ in resumed.losses] == [s for s, _ in full.losses]
    assert resumed.final_loss == pytest.approx(full.final_loss, rel=1e-4)
    wa, wb = (
        load_file(tmp_path / "full" / "adapter_model.safetensors"),
        load_file(out / "adapter_model.safetensors"),
    )
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4

    # resume=False starts over (old checkpoints removed), the adapter is replaced atomically
    again = train_sft(tiny_llama_dir, _pairs(), out, _fast(max_steps=2, save_steps=4), resume=False)
    assert again.resumed_from is None and again.global_step == 2
    assert not (out / "checkpoints" / "checkpoint-4").exists()
    shutil.rmtree(tmp_path / "full")


def test_med_rationale_file_trains_and_continues_an_adapter(tmp_path, tiny_llama_dir):
    from meteora.training.jsonl import write_jsonl_atomic

    rows = [
        {
            "id": f"r{i}",
            "query": f"What are the signs of disease {i} in dogs?",
            "rationales": [RESPONSE.split("\n")[0]] * 3,
        }
        for i in range(4)
    ]
    rows.append({"id": "bad", "query": "", "rationales": []})
    data = tmp_path / "train.jsonl"
    write_jsonl_atomic(data, rows)
    first = train_sft(tiny_llama_dir, data, tmp_path / "a1", _fast(max_steps=2, load_in_4bit=False))
    meta = first.metadata
    assert meta["template"] == "med-rationale" and meta["data"]["format"] == "med-rationale"
    assert meta["data"]["rejected_rows"] == 1 and first.n_examples == 4
    assert len(meta["data"]["sha256"]) == 64
    second = train_sft(
        tiny_llama_dir,
        data,
        tmp_path / "a2",
        _fast(max_steps=2, load_in_4bit=False),
        adapter=tmp_path / "a1",
    )
    assert second.metadata["init_adapter"].endswith("a1") and second.global_step == 2


@pytest.mark.slow
@pytest.mark.integration
def test_smollm2_tokenizer_masks_the_med_rationale_prompt():
    """On the real offline base: the prompt tokens equal the generator's and only the response is learned."""
    from meteora.models import default_generator_path

    path = default_generator_path()
    if path is None:
        pytest.skip("SmolLM2 not pulled (meteora models pull)")
    tok = _tok(path)
    assert ensure_pad_token(tok) is False and tok.pad_token != tok.eos_token
    prompt = get_template("med-rationale").render(
        "What are the clinical signs of hypothyroidism in dogs?", 3
    )
    f = build_sft_features(tok, prompt, RESPONSE, max_length=256)
    n = len(tok(prompt)["input_ids"])
    assert f["labels"][:n] == [IGNORE_INDEX] * n and f["labels"][n:] == f["input_ids"][n:]
    assert f["labels"][-1] == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(f["input_ids"][n:-1]) == RESPONSE
