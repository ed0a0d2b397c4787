"""Tiny random models built at test time: no download, no hub, a few MB each.

The tests and the bad-input matrix (``robustness_cases.py``, beside this file) need
models that load through the real code paths without the real weights; the benchmark
imports this module from its own folder, the tests through pytest's ``pythonpath``.

* :func:`make_tokenizer` — a byte-level BPE tokenizer trained on a small medical
  vocabulary, with a ChatML chat template, distinct ``<pad>`` and ``</s>`` tokens.
* :func:`make_causal_lm` — a 2-layer Llama or Mistral config with random weights,
  saved with that tokenizer into a folder ``from_pretrained`` loads.
* :func:`make_sentence_transformer` — a 2-layer BERT with mean pooling, saved as a
  sentence-transformers folder.

Example:
    >>> from tiny_models import make_sentence_transformer
    >>> from meteora.embeddings.encoder import Encoder
    >>> enc = Encoder(str(make_sentence_transformer(tmp_path / "st")), device="cpu")  # doctest: +SKIP
    >>> enc.encode(["fever"]).shape  # doctest: +SKIP
    (1, 32)
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["make_tokenizer", "make_causal_lm", "make_sentence_transformer"]

CORPUS = [
    "Aspirin reduces the risk of myocardial infarction in adults with cardiovascular disease.",
    "Look for randomized controlled trials reporting mortality, outcomes and adverse events.",
    "The study measured blood pressure, glucose, insulin and cholesterol in patients.",
    "Results: the odds ratio was 0.72 (95% CI 0.60-0.85), p < 0.001.",
    "Methods: a retrospective cohort of 1,024 children treated for asthma and pneumonia.",
    "Conclusions: treatment improved survival; evidence should describe dosage and safety.",
    "Dogs and cats with renal failure, veterinary clinical signs, diagnosis and therapy.",
    "<rationale_1>[mechanism] strategy</rationale_1> ### Instruction: ### Query: ### Response:",
    "<think> reasoning </think> yes no maybe. 1. 2. 3. Rationale 1: Rationale 2:",
    '{"relevant": true, "flagged": false, "flag_types": [], "reason": "ok", "confidence": 0.9}',
]

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tokenizer(vocab_size: int = 600):
    """A small byte-level BPE ``PreTrainedTokenizerFast`` trained on :data:`CORPUS`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    fast.chat_template = CHATML
    return fast


def make_causal_lm(path: str | Path, arch: str = "llama", *, seed: int = 0, layers: int = 2) -> Path:
    """Save a tiny random Llama/Mistral causal LM with :func:`make_tokenizer` to ``path``."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig

    path = Path(path)
    tokenizer = make_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = MistralConfig(sliding_window=None, **common) if arch == "mistral" else LlamaConfig(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def make_sentence_transformer(path: str | Path, *, seed: int = 0, dim: int = 32) -> Path:
    """Save a tiny random BERT + mean pooling sentence-transformers model to ``path``."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    raw = path / "_bert"
    raw.mkdir(parents=True, exist_ok=True)
    wp = Tokenizer(WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False
    )
    wp.train_from_iterator(CORPUS * 4, trainer=trainer)
    vocab = sorted(wp.get_vocab().items(), key=lambda kv: kv[1])
    (raw / "vocab.txt").write_text("\n".join(t for t, _ in vocab) + "\n", encoding="utf-8")
    # transformers 5 ignores vocab_file= here; pass the vocabulary itself
    tokenizer = BertTokenizerFast(vocab=dict(vocab), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=dim,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(str(raw))
    tokenizer.save_pretrained(str(raw))
    word = models.Transformer(str(raw), max_seq_length=128)
    dim_of = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pool = models.Pooling(dim_of(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(path))
    return path
