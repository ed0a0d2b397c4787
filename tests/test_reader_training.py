"""Reader fine-tuning: train/val split, class balance, context variants, masking, one step."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from meteora.datasets.pubmedqa import RetrievalBenchmark
from meteora.errors import InvalidInputError
from meteora.evaluation.reader import build_reader_prompt
from meteora.training.collate import IGNORE_INDEX, build_sft_features
from meteora.training.reader import package_adapter, train_reader
from meteora.training.reader_data import (
    ReaderSettings,
    build_reader_examples,
    context_variant,
    split_train_questions,
)
from meteora.types import Passage

SECTIONS = ["BACKGROUND", "METHODS", "RESULTS", "CONCLUSIONS"]


def make_bench(n_train: int = 40, n_test: int = 6) -> RetrievalBenchmark:
    """PubMedQA-shaped: question id == document id, 4 labelled chunks each; train labels
    yes/no/maybe in the ratio 6:3:1, so balancing has something to do."""
    corpus, queries, answers, sections, abstract, evidence = [], {}, {}, {}, {}, {}
    cycle = ["yes"] * 6 + ["no"] * 3 + ["maybe"]
    ids = [f"{1000 + i}" for i in range(n_train + n_test)]
    for i, q in enumerate(ids):
        for pos, sec in enumerate(SECTIONS):
            pid = f"{q}-{pos}"
            corpus.append(Passage(f"{sec.lower()} of study {q}: aspirin outcome{i} part {pos}.", id=pid,
                                  doc_id=q, position=pos))
            sections[pid] = sec
        queries[q] = f"Does aspirin change outcome{i}?"
        answers[q] = {"final_decision": cycle[i % len(cycle)], "long_answer": f"conclusion of study {q}."}
        abstract[q] = {f"{q}-{p}": 1 for p in range(4)}
        evidence[q] = {f"{q}-2": 1}
    return RetrievalBenchmark(
        name="toy-pubmedqa",
        corpus=corpus,
        queries=queries,
        qrels={"abstract": abstract, "evidence": evidence},
        splits={"train": ids[:n_train], "test": ids[n_train:], "all": ids},
        answers=answers,
        section_labels=sections,
    )


@pytest.fixture()
def bench() -> RetrievalBenchmark:
    return make_bench()


def test_split_is_stratified_seeded_and_never_touches_test(bench):
    train, val = split_train_questions(bench, 10, seed=0)
    assert len(train) == 30 and len(val) == 10 and not set(train) & set(val)
    assert not (set(train) | set(val)) & set(bench.splits["test"])
    labels = Counter(bench.answers[q]["final_decision"] for q in val)
    assert labels == {"yes": 6, "no": 3, "maybe": 1}  # the split's 6:3:1 mix
    assert split_train_questions(bench, 10, seed=0) == (train, val)
    assert split_train_questions(bench, 10, seed=1)[1] != val
    with pytest.raises(InvalidInputError, match="leaves no training question"):
        split_train_questions(bench, 40)


@pytest.mark.parametrize(
    ("balance", "expected"),
    [("none", {"yes": 60, "no": 30, "maybe": 10}),
     ("inverse", {"yes": 34, "no": 33, "maybe": 33}),
     ("sqrt", {"yes": 47, "no": 34, "maybe": 19})],
)
def test_class_balance_by_weighted_draw(bench, balance, expected):
    train = bench.splits["train"]
    ex, stats = build_reader_examples(bench, train, n_examples=100, balance=balance, seed=0)
    assert len(ex) == 100
    counts = Counter(e["label"] for e in ex)
    # 24 / 12 / 4 questions; sqrt: shares ∝ sqrt(24), sqrt(12), sqrt(4) = 0.473 / 0.334 / 0.193
    assert dict(counts) == expected
    assert stats["labels"] == dict(counts)
    assert all(e["completion"] == e["label"] for e in ex)
    # inside a label the questions are cycled: the 4 maybe questions are used about equally
    maybe = Counter(e["id"] for e in ex if e["label"] == "maybe")
    assert max(maybe.values()) - min(maybe.values()) <= 1


def test_context_variants_shape_the_prompts(bench):
    train = bench.splits["train"]
    only = lambda v: build_reader_examples(bench, train, n_examples=30, variant_weights={v: 1.0}, seed=3)[0]  # noqa: E731
    for e in only("results"):
        assert "results of study" in e["prompt"] and "background of study" not in e["prompt"]
        assert e["prompt"].count("\n[") == 1
    for e in only("none"):
        assert "Context:" not in e["prompt"] and e["prompt"].endswith("### Response:\n")
    for e in only("full"):
        q = e["id"]
        assert e["prompt"] == build_reader_prompt(bench.queries[q], [p.text for p in bench.doc_passages(q)])[0]
    subsets = [e["prompt"].count("\n[") for e in only("subset")]
    assert min(subsets) >= 1 and max(subsets) <= 3 and len(set(subsets)) > 1
    for e in only("conclusion"):  # the long answer of that (train) question, alone
        assert e["prompt"].count("\n[") == 1
        assert bench.answers[e["id"]]["long_answer"].strip() in e["prompt"]
    mixed = build_reader_examples(bench, train, n_examples=200, seed=0)[1]["variants"]
    assert set(mixed) == {"full", "subset", "results", "shuffled", "none"}  # conclusion is opt-in
    assert mixed["full"] > mixed["none"]


def test_context_variant_rules():
    rng = random.Random(0)
    chunks, labels = ["a", "b", "c", "d"], SECTIONS
    for _ in range(20):
        sub = context_variant(chunks, labels, "subset", rng)
        assert 1 <= len(sub) < 4 and sub == sorted(sub)  # proper subset, document order
        assert sorted(context_variant(chunks, labels, "shuffled", rng)) == chunks
    assert context_variant(chunks, labels, "results", rng) == ["c"]
    no_results = context_variant(chunks, ["X"] * 4, "results", rng)  # falls back to a subset
    assert 1 <= len(no_results) < 4
    assert context_variant(chunks, labels, "conclusion", rng, conclusion=" It works. ") == ["It works."]
    assert context_variant(chunks, labels, "conclusion", rng) == ["c"]  # no conclusion: the results
    with pytest.raises(InvalidInputError, match="unknown context variant"):
        context_variant(chunks, labels, "everything", rng)


def test_test_questions_and_bad_settings_are_refused(bench):
    with pytest.raises(InvalidInputError, match="test questions"):
        build_reader_examples(bench, bench.splits["test"][:2], n_examples=4)
    with pytest.raises(InvalidInputError, match="unknown context variants"):
        build_reader_examples(bench, bench.splits["train"], n_examples=4, variant_weights={"all": 1.0})
    with pytest.raises(InvalidInputError, match="balance"):
        ReaderSettings(balance="equal").validate()
    with pytest.raises(InvalidInputError, match="n_examples"):
        ReaderSettings(n_examples=0).validate()


def test_response_only_masking_on_reader_examples(bench, tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ex = build_reader_examples(bench, bench.splits["train"], n_examples=5, seed=0)[0][0]
    f = build_sft_features(tok, ex["prompt"], ex["completion"], 512)
    n = f["n_prompt_tokens"]
    assert f["labels"][:n] == [IGNORE_INDEX] * n
    answer = [t for t in f["labels"][n:] if t != IGNORE_INDEX]
    assert answer[-1] == tok.eos_token_id
    assert tok.decode(answer[:-1]).strip() == ex["label"]


def test_one_tiny_training_run_writes_adapter_and_provenance(bench, tiny_llama_dir, tmp_path):
    from safetensors.torch import load_file

    settings = ReaderSettings(
        n_examples=8, val_questions=4, max_steps=1, batch_size=2, grad_accum=1, learning_rate=1e-2,
        save_steps=1, warmup_ratio=0.0, progress=False, max_context_chars=200,
    )
    out = tmp_path / "reader"
    prov = train_reader(tiny_llama_dir, out, settings, data=bench, command="meteora train reader (test)")
    assert (out / "adapter_model.safetensors").is_file() and (out / "provenance.json").is_file()
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all(str(v.dtype) == "torch.float16" for v in weights.values())  # fp16_adapter
    assert prov["split"]["test_questions_used"] == 0 and prov["split"]["val_questions"] == 4
    assert prov["metrics"]["global_step"] == 1 and prov["settings"]["load_in_4bit"] is False  # CPU: plain LoRA
    assert 0.0 <= prov["metrics"]["val_accuracy_full"] <= 1.0
    meta = json.loads((out / "meteora_training.json").read_text())
    assert meta["task"] == "pubmedqa-reader" and meta["examples"]["n_examples"] == 8
    packaged = package_adapter(out, tmp_path / "pkg", base_model_id="org/tiny-llama")
    cfg = json.loads((packaged / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "org/tiny-llama"
    assert sorted(p.name for p in packaged.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "provenance.json"
    ]
