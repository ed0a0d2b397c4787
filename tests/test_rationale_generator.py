"""Tests for meteora.rationales.generator on tiny random models (no hub, no download)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from meteora.errors import InvalidInputError, ModelNotFoundError
from meteora.rationales.generator import RationaleGenerator
from meteora.rationales.presets import PRESETS, resolve_preset
from meteora.rationales.rationale_set import RationaleSet
from meteora.rationales.stopping import EnoughRationales
from meteora.rationales.templates import PromptTemplate, get_template

QUERIES = [
    "Does aspirin reduce the risk of myocardial infarction?",
    "Dogs with renal failure?",
    "Is blood pressure, glucose and cholesterol measured in children treated for asthma and pneumonia?",
]


class ScriptedLM(torch.nn.Module):
    """A stand-in causal LM that answers each prompt with a fixed text (then EOS).

    ``script`` maps a substring of the prompt to the answer; it goes through the real
    tokenizer, padding and decoding path of the generator.
    """

    def __init__(self, tokenizer, script: dict[str, str], default: str = "") -> None:
        super().__init__()
        self.tok = tokenizer
        self.script = script
        self.default = default
        self.calls = 0
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = type(
            "Cfg", (), {"name_or_path": "scripted-lm", "max_position_embeddings": 4096}
        )()
        self.generation_config = type("GC", (), {"eos_token_id": tokenizer.eos_token_id})()

    def generate(self, input_ids, attention_mask, generation_config, stopping_criteria=None, **_):
        self.calls += 1
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            prompt = self.tok.decode(ids[mask.bool()], skip_special_tokens=False)
            answer = next((a for k, a in self.script.items() if k in prompt), self.default)
            new = self.tok(answer, add_special_tokens=False)["input_ids"][
                : generation_config.max_new_tokens
            ]
            if len(new) < generation_config.max_new_tokens:
                new = new + [self.tok.eos_token_id]
            rows.append(ids.tolist() + new)
        width = max(len(r) for r in rows)
        pad = generation_config.pad_token_id
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


@pytest.fixture(scope="module")
def tiny_gen(tiny_llama_dir):
    return RationaleGenerator.from_pretrained(
        str(tiny_llama_dir), template="med-rationale", num_threads=1
    )


@pytest.fixture()
def scripted(tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))

    def make(script, default="", template="med-rationale", **kwargs):
        lm = ScriptedLM(tok, script, default)
        return RationaleGenerator(lm, tok, template=template, model_id="scripted", **kwargs), lm

    return make


# ------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------
def test_from_pretrained_local_folder(tiny_gen, tiny_llama_dir):
    assert tiny_gen.template.name == "med-rationale"
    assert tiny_gen.model_id == str(tiny_llama_dir)
    assert not tiny_gen.model.training
    assert "RationaleGenerator(" in repr(tiny_gen)


def test_default_template_is_chat_when_the_tokenizer_has_one(tiny_llama_dir):
    gen = RationaleGenerator.from_pretrained(str(tiny_llama_dir))
    assert gen.template.name == "chat"


def test_generation_tokenizer_pads_left_and_has_a_pad_token(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    tok.pad_token = None
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
    gen = RationaleGenerator(model, tok, template="med-rationale")
    assert gen.lm.gen_tokenizer.padding_side == "left"
    assert gen.lm.gen_tokenizer.pad_token_id == tok.eos_token_id
    assert tok.pad_token is None  # the caller's tokenizer is untouched
    assert model.get_input_embeddings().weight.shape[0] == len(tok)  # nothing resized


def test_missing_folder_and_unknown_hub_id_give_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        RationaleGenerator.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="could not load"):
        RationaleGenerator.from_pretrained("meteora-test/definitely-not-a-model")


def test_missing_default_model_names_the_pull_command(tmp_path, monkeypatch):
    from meteora import models

    monkeypatch.setenv("METEORA_HOME", str(tmp_path))
    # the transformers backend needs the converted folder, absent from an empty home
    with pytest.raises(ModelNotFoundError, match="meteora models pull"):
        RationaleGenerator.from_pretrained(None, backend="transformers")
    # without the packaged GGUF either, the default falls back to transformers and says the same
    monkeypatch.setattr(models, "_package_dir", lambda module: None)
    with pytest.raises(ModelNotFoundError, match="meteora models pull"):
        RationaleGenerator.from_pretrained(None)
    with pytest.raises(ModelNotFoundError, match="meteora models pull"):
        RationaleGenerator.from_pretrained(None, backend="llamacpp")


def test_bad_device_and_dtype(tiny_llama_dir):
    with pytest.raises(InvalidInputError, match="dtype"):
        RationaleGenerator.from_pretrained(str(tiny_llama_dir), dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="CUDA"):
            RationaleGenerator.from_pretrained(str(tiny_llama_dir), device="cuda")


def test_bfloat16_on_cpu(tiny_llama_dir):
    gen = RationaleGenerator.from_pretrained(
        str(tiny_llama_dir), dtype="bf16", template="med-rationale"
    )
    assert next(gen.model.parameters()).dtype == torch.bfloat16
    rs = gen.generate(QUERIES[0], max_new_tokens=4)
    assert isinstance(rs, RationaleSet) and rs.rationales


# ------------------------------------------------------------------------------------
# generation on the tiny random model
# ------------------------------------------------------------------------------------
def test_batched_equals_one_by_one_for_greedy(tiny_gen):
    batched = tiny_gen.generate(QUERIES, n=3, batch_size=3, max_new_tokens=12, filter=False)
    single = [
        tiny_gen.generate(q, n=3, batch_size=1, max_new_tokens=12, filter=False) for q in QUERIES
    ]
    assert [b.raw for b in batched] == [s.raw for s in single]
    assert all(b.raw.strip() for b in batched)  # something was generated
    assert [b.query for b in batched] == QUERIES  # input order kept despite length sorting


def test_sampling_is_reproducible_with_a_seed(tiny_gen):
    a = tiny_gen.generate(QUERIES, do_sample=True, seed=7, max_new_tokens=12, filter=False)
    b = tiny_gen.generate(QUERIES, do_sample=True, seed=7, max_new_tokens=12, filter=False)
    c = tiny_gen.generate(QUERIES, do_sample=True, seed=8, max_new_tokens=12, filter=False)
    assert [x.raw for x in a] == [x.raw for x in b]
    assert [x.raw for x in a] != [x.raw for x in c]


def test_sampling_does_not_touch_the_global_rng(tiny_gen):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_gen.generate(QUERIES[0], do_sample=True, seed=1, max_new_tokens=4)
    assert torch.equal(torch.rand(3), expected)


def test_max_new_tokens_is_respected(tiny_gen, monkeypatch):
    lengths = []
    real = tiny_gen.model.generate

    def spy(**kwargs):
        out = real(**kwargs)
        lengths.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(tiny_gen.model, "generate", spy)
    tiny_gen.generate(QUERIES, max_new_tokens=5, filter=False)
    tiny_gen.complete(["hello"], max_new_tokens=3, chat=False)
    assert lengths and lengths[0] <= 5 and lengths[-1] <= 3


def test_random_model_output_never_crashes(tiny_gen):
    results = tiny_gen.generate(QUERIES, n=3, max_new_tokens=24)
    for q, rs in zip(QUERIES, results, strict=True):
        assert rs.rationales, "a RationaleSet always has at least one rationale"
        if rs.fallback:
            assert rs.rationales == [q]
        assert len(rs.flags) == len(rs.rationales)


def test_complete_returns_only_new_text(tiny_gen):
    outs = tiny_gen.complete(["Aspirin reduces", "Dogs and cats"], max_new_tokens=6, chat=True)
    assert len(outs) == 2 and all(isinstance(o, str) for o in outs)
    raw = tiny_gen.complete(["Aspirin reduces"], max_new_tokens=6, chat=False)
    assert "Aspirin reduces" not in raw[0][: len("Aspirin reduces")] or raw[0] != "Aspirin reduces"
    assert "<|im_start|>" not in outs[0] and "</s>" not in outs[0]


# ------------------------------------------------------------------------------------
# parsing, filtering, fallback through the real generate() path (scripted outputs)
# ------------------------------------------------------------------------------------
def test_scripted_output_is_parsed_and_filtered(scripted):
    gen, lm = scripted(
        {
            "aspirin": "Look for rates of myocardial infarction with aspirin versus placebo.\n"
            "Look for rates of myocardial infarction with aspirin versus placebo.\n"
            "The correct passage should contain the following evidence.\n"
            "Look for bleeding complications reported in treated adults.",
        }
    )
    rs = gen.generate(QUERIES[0], n=3)
    assert rs.rationales == [
        "Look for rates of myocardial infarction with aspirin versus placebo.",
        "Look for bleeding complications reported in treated adults.",
    ]
    assert rs.parse_method == "lines" and not rs.fallback
    assert (
        "The correct passage should contain the following evidence.",
        "echoes-instruction",
    ) in rs.dropped


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   \n\n",
        "!!! ### @@@ %%%",
        "The correct passage should contain the following evidence:",
        "Yes.",
        "\u0000\u0001",
    ],
)
def test_garbage_falls_back_to_the_query(scripted, garbage):
    gen, _ = scripted({}, default=garbage)
    rs = gen.generate(QUERIES[1], n=3)
    assert rs.fallback is True
    assert rs.rationales == [QUERIES[1]]
    assert rs.flags == [None]
    assert "fallback=True" in repr(rs)


def test_include_query_puts_the_anchor_first(scripted):
    gen, _ = scripted(
        {
            "Dogs": "1. Serum creatinine in dogs with kidney disease.\n2. Survival time after diagnosis."
        }
    )
    rs = gen.generate(QUERIES[1], n=3, include_query=True)
    assert rs.rationales == [
        QUERIES[1],
        "Serum creatinine in dogs with kidney disease.",
        "Survival time after diagnosis.",
    ]
    assert not rs.fallback
    rs2 = gen.generate(QUERIES[1], n=1, include_query=True)
    assert len(rs2.rationales) == 2  # n counts generated rationales, the anchor comes on top


def test_include_query_with_nothing_usable_is_still_a_fallback(scripted):
    gen, _ = scripted({}, default="Yes.")
    rs = gen.generate(QUERIES[0], include_query=True)
    assert rs.fallback and rs.rationales == [QUERIES[0]]


def test_flags_are_kept_aligned_with_rationales(scripted):
    gen, _ = scripted(
        {
            "aspirin": "<rationale_1>[Outcome] Myocardial infarction rates in treated adults. Flag Instructions: "
            "reject animal studies</rationale_1><rationale_2>[Safety] Gastrointestinal bleeding events"
            "</rationale_2>"
        },
        template="meteora",
    )
    rs = gen.generate(QUERIES[0], n=5)
    assert rs.parse_method == "xml"
    assert rs.rationales == [
        "Outcome: Myocardial infarction rates in treated adults.",
        "Safety: Gastrointestinal bleeding events",
    ]
    assert rs.flags == ["reject animal studies", None]


def test_filter_false_keeps_restatements(scripted):
    gen, _ = scripted({"Dogs": "Dogs with renal failure?\nRenal failure in the dogs."})
    assert gen.generate(QUERIES[1], filter=False).rationales == [
        "Dogs with renal failure?",
        "Renal failure in the dogs.",
    ]
    filtered = gen.generate(QUERIES[1])
    assert filtered.fallback  # both restate the query
    assert [r for _, r in filtered.dropped] == ["restates-query", "restates-query"]


def test_response_prefix_is_put_back_before_parsing(scripted):
    t = PromptTemplate(
        name="prefixed", instruction="List evidence.", response_prefix="1. Patients:"
    )
    gen, _ = scripted(
        {"Dogs": " dogs with chronic kidney disease.\n2. Outcome: survival after diagnosis."},
        template=t,
    )
    rs = gen.generate(QUERIES[1], n=3)
    assert rs.raw.startswith("1. Patients: dogs")
    assert rs.rationales == [
        "Patients: dogs with chronic kidney disease.",
        "Outcome: survival after diagnosis.",
    ]


def test_duplicate_queries_are_generated_once(scripted):
    gen, lm = scripted({"Dogs": "Serum creatinine in dogs with kidney disease."})
    out = gen.generate([QUERIES[1], QUERIES[1]], batch_size=8)
    assert lm.calls == 1
    assert out[0].rationales == out[1].rationales and out[0] is not out[1]


def test_long_query_is_shortened_to_fit(scripted, caplog):
    gen, _ = scripted(
        {}, default="Serum creatinine in dogs with kidney disease.", max_input_tokens=64
    )
    long_query = "dogs with renal failure " * 200
    with caplog.at_level("WARNING"):
        rs = gen.generate(long_query)
    assert rs.rationales == ["Serum creatinine in dogs with kidney disease."]
    assert any("shortened" in r.message for r in caplog.records)


def test_complete_scripted_and_chat_wrapping(scripted):
    gen, _ = scripted({"<|im_start|>user\nIs it wet?": "Yes it is.", "Raw prompt": "raw answer"})
    assert gen.complete(["Is it wet?"], chat=True) == ["Yes it is."]
    assert gen.complete(["Raw prompt"], chat=False) == ["raw answer"]


# ------------------------------------------------------------------------------------
# stopping criterion
# ------------------------------------------------------------------------------------
def test_stopping_check_stops_a_row_after_n_usable_lines(scripted):
    gen, _ = scripted({})
    text = "Serum creatinine in dogs.\nSurvival time after diagnosis.\nCost of dialysis per month.\n"
    stop = EnoughRationales(gen, [QUERIES[1]], n=2, filt=True)
    assert not stop(0, text.split("\n")[0] + "\n")
    assert stop(0, text) and stop(0, "")  # a finished row stays finished


def test_stopping_check_stops_at_a_new_prompt_section(scripted):
    gen, _ = scripted({})
    stop = EnoughRationales(gen, [QUERIES[1]], n=3, filt=True)
    assert not stop(0, "Serum creatinine in dogs.\n")
    assert stop(0, "Serum creatinine in dogs.\n\n### Query:\n")


def test_the_transformers_backend_applies_the_check_to_each_row_of_a_batch(scripted):
    from meteora.lm.transformers import _UntilText

    gen, _ = scripted({})
    tok = gen.tokenizer
    prompt = tok("### Response:\n", add_special_tokens=False)["input_ids"]
    stop = EnoughRationales(gen, ["q0", QUERIES[1]], n=2, filt=True)
    rows = _UntilText(stop, [1, 0], len(prompt), tok)  # batch row 0 is prompt 1, row 1 is prompt 0
    full = tok("Serum creatinine in dogs.\nSurvival time after diagnosis.\n", add_special_tokens=False)["input_ids"]
    one = tok("Serum creatinine in dogs.\n", add_special_tokens=False)["input_ids"]
    width = max(len(full), len(one))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    batch = torch.tensor([prompt + full, prompt + one + [pad] * (width - len(one))])
    assert rows(batch, None).tolist() == [True, False]
    assert stop.done == [False, True]


# ------------------------------------------------------------------------------------
# prefix (few-shot) KV caching
# ------------------------------------------------------------------------------------
def test_prefix_cache_gives_the_same_output(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float64).eval()
    # without the few-shot examples the prompt fits the tiny model's 512 positions (a longer
    # one would be cut in the middle, and then no longer share the template's start)
    short = get_template("chat").with_options(examples=())
    cached = RationaleGenerator(model, tok, template=short, prefix_cache=True)
    plain = RationaleGenerator(model, tok, template=short, prefix_cache=False)
    a = cached.generate(QUERIES, batch_size=3, max_new_tokens=12, filter=False)
    assert cached.lm.cached_prefix is not None, "the shared few-shot prefix was cached"
    prefix_len = len(cached.lm.cached_prefix[0])
    assert prefix_len >= 16
    b = plain.generate(QUERIES, batch_size=3, max_new_tokens=12, filter=False)
    assert plain.lm.cached_prefix is None
    assert [x.raw for x in a] == [x.raw for x in b]
    # a second call reuses the memoised prefix (same object)
    memo = cached.lm.cached_prefix[1]
    cached.generate(QUERIES[:1], max_new_tokens=4, filter=False)
    assert cached.lm.cached_prefix[1] is memo


def test_prefix_cache_is_skipped_for_short_shared_prefixes(scripted):
    t = PromptTemplate(name="short", instruction="x", layout="{query}\n")
    gen, _ = scripted({}, template=t)
    probes = [gen._prompt(q, 3) for q in ("Alpha beta gamma?", "Zeta eta theta?")]
    assert gen.lm._probe_prefix(probes, True) is None


# ------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"queries": ""}, "empty"),
        ({"queries": ["ok", "  "]}, "empty"),
        ({"queries": ["ok"], "n": 0}, "n must be a positive integer"),
        ({"queries": ["ok"], "batch_size": 0}, "batch_size must be a positive integer"),
        ({"queries": ["ok"], "max_new_tokens": -1}, "max_new_tokens"),
        ({"queries": ["ok"], "do_sample": True, "temperature": 0}, "temperature"),
        ({"queries": ["ok"], "seed": "x"}, "seed"),
        ({"queries": 5}, "list of str"),
    ],
)
def test_generate_validates_inputs(scripted, kwargs, match):
    gen, _ = scripted({})
    with pytest.raises(InvalidInputError, match=match):
        gen.generate(**kwargs)


def test_generate_empty_list_returns_empty(scripted):
    gen, lm = scripted({})
    assert gen.generate([]) == []
    assert lm.calls == 0


def test_complete_validates_inputs(scripted):
    gen, _ = scripted({})
    with pytest.raises(InvalidInputError):
        gen.complete("not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="empty"):
        gen.complete([""])


def test_rationale_set_round_trip():
    rs = RationaleSet(
        "q",
        ["a", "b"],
        flags=[None, "f"],
        raw="1. a\n2. b",
        dropped=[("x", "too-short")],
        parse_method="numbered",
    )
    again = RationaleSet.from_dict(json.loads(json.dumps(rs.to_dict())), from_cache=True)
    assert (
        again.rationales == rs.rationales
        and again.flags == rs.flags
        and again.dropped == rs.dropped
    )
    assert again.from_cache and not rs.from_cache
    with pytest.raises(InvalidInputError):
        RationaleSet("q", ["a"], flags=[None, None])


def test_cache_key_fields_describe_the_setup(scripted):
    gen, _ = scripted({})
    f = gen.cache_key_fields(3)
    assert f["model"] == "scripted" and f["template"] == "med-rationale" and f["n"] == 3
    assert f["template_hash"] == get_template("med-rationale").fingerprint()
    assert gen.cache_key_fields(4) != f
    assert gen.cache_key_fields(3, include_query=True) != f
    assert gen.cache_key_fields(3, do_sample=True, seed=1) != gen.cache_key_fields(
        3, do_sample=True, seed=2
    )
    gen.template = get_template("med-rationale").with_options(instruction="Other {n}")
    assert gen.cache_key_fields(3)["template_hash"] != f["template_hash"]


# ------------------------------------------------------------------------------------
# the production preset path: tiny Mistral + random LoRA adapter, 4-bit NF4 on CPU
# ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lora_adapter_dir(tiny_mistral_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_mistral_dir))
    torch.manual_seed(0)
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
            init_lora_weights=False,
        ),
    )
    out = tmp_path_factory.mktemp("lora-adapter")
    peft_model.save_pretrained(str(out))
    return out


def test_mistral_adapter_4bit_end_to_end(tiny_mistral_dir, lora_adapter_dir):
    import bitsandbytes as bnb
    from peft import PeftModel

    gen = RationaleGenerator.from_pretrained(
        str(tiny_mistral_dir),
        adapter=str(lora_adapter_dir),
        load_in_4bit=True,
        template="med-rationale",
        num_threads=1,
    )
    assert isinstance(gen.model, PeftModel)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in gen.model.modules())
    assert gen.adapter_id == str(lora_adapter_dir)
    out = gen.generate(QUERIES[:2], n=3, max_new_tokens=16)
    assert len(out) == 2 and all(rs.rationales for rs in out)
    assert all(rs.raw or rs.fallback for rs in out)


def test_adapter_changes_the_output(tiny_mistral_dir, lora_adapter_dir):
    plain = RationaleGenerator.from_pretrained(str(tiny_mistral_dir), template="med-rationale")
    adapted = RationaleGenerator.from_pretrained(
        str(tiny_mistral_dir), adapter=str(lora_adapter_dir), template="med-rationale"
    )
    a = plain.generate(QUERIES, max_new_tokens=10, filter=False)
    b = adapted.generate(QUERIES, max_new_tokens=10, filter=False)
    assert [x.raw for x in a] != [x.raw for x in b]


def test_preset_path_with_local_overrides(tiny_mistral_dir, lora_adapter_dir):
    gen = RationaleGenerator.from_preset(
        "med-rationale-mistral-7b", model=str(tiny_mistral_dir), adapter=str(lora_adapter_dir)
    )
    assert gen.template.name == "med-rationale"
    assert gen.max_new_tokens == 128
    assert gen.cache_key_fields()["load_in_4bit"] is True
    t0 = time.perf_counter()
    rs = gen.generate(QUERIES[0], max_new_tokens=8)
    assert rs.rationales and time.perf_counter() - t0 < 60


def test_mismatched_adapter_gives_a_clear_error(tiny_mistral_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    other = AutoModelForCausalLM.from_config(
        LlamaConfig(
            vocab_size=600,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    bad = get_peft_model(
        other, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    bad.save_pretrained(str(tmp_path / "bad"))
    with pytest.raises(InvalidInputError, match="does not fit"):
        RationaleGenerator.from_pretrained(str(tiny_mistral_dir), adapter=str(tmp_path / "bad"))

    cfg_path = tmp_path / "bad" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["target_modules"] = ["c_attn"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(InvalidInputError, match="does not fit"):
        RationaleGenerator.from_pretrained(str(tiny_mistral_dir), adapter=str(tmp_path / "bad"))


def test_missing_adapter_gives_model_not_found(tiny_mistral_dir, tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        RationaleGenerator.from_pretrained(str(tiny_mistral_dir), adapter=str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="adapter_config.json"):
        RationaleGenerator.from_pretrained(str(tiny_mistral_dir), adapter=str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError, match="could not load adapter"):
        RationaleGenerator.from_pretrained(
            str(tiny_mistral_dir), adapter="meteora-test/no-such-adapter"
        )


# ------------------------------------------------------------------------------------
# presets
# ------------------------------------------------------------------------------------
def test_presets():
    assert set(PRESETS) >= {
        "med-rationale-mistral-7b",
        "smollm2-135m",
        "alpaca-pubmedqa",
        "medalpaca-7b",
        "gemma3-270m-cot",
    }
    p = resolve_preset("med-rationale-mistral-7b")
    assert p["model"] == "mistralai/Mistral-7B-Instruct-v0.3"
    assert p["adapter"] == "chidiokoene/okoene-med-rationale"
    assert (
        p["template"] == "med-rationale"
        and p["load_in_4bit"] is True
        and p["max_new_tokens"] == 128
    )
    assert resolve_preset("medalpaca-7b")["template"] == "alpaca"
    assert resolve_preset("gemma3-270m-cot")["template"] == "cot"
    for name in PRESETS:
        get_template(resolve_preset(name)["template"])  # every preset names a real template
    with pytest.raises(InvalidInputError, match="smollm2-135m"):
        resolve_preset("nope")
    p["model"] = "changed"
    assert PRESETS["med-rationale-mistral-7b"]["model"] == "mistralai/Mistral-7B-Instruct-v0.3"


# ------------------------------------------------------------------------------------
# the real offline default (slow tier)
# ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_default_generates_rationales():
    from meteora.models import default_generator_path

    if default_generator_path() is None:
        pytest.skip("the offline default model is not pulled (run `meteora models pull`)")
    gen = RationaleGenerator.from_pretrained(None, num_threads=1)
    assert gen.template.name == "chat"
    queries = [
        "Does aspirin reduce the risk of stroke in patients with atrial fibrillation?",
        "Is laparoscopic cholecystectomy safe in elderly patients?",
    ]
    t0 = time.perf_counter()
    out = gen.generate(queries, n=3, max_new_tokens=48)
    elapsed = time.perf_counter() - t0
    assert elapsed < 120
    for q, rs in zip(queries, out, strict=True):
        assert rs.rationales and all(r.strip() for r in rs.rationales)
        assert rs.raw.strip()
        if not rs.fallback:
            assert all(r != q for r in rs.rationales)
