"""Training data builders: validation with line numbers, the med-rationale format, PubMedQA, DPO pairs."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from meteora.errors import DataNotFoundError, InvalidInputError, TrainingDataError
from meteora.rationales.templates import get_template
from meteora.training.dpo_pairs import load_preference_pairs, split_pairs
from meteora.training.jsonl import read_jsonl, write_jsonl_atomic
from meteora.training.pubmedqa_examples import (
    PUBMEDQA_ALPACA,
    cot_examples,
    pubmedqa_alpaca_examples,
)
from meteora.training.rationale_sft import load_rationale_sft, normalize_query

GOOD = [
    "Look for randomized trials of aspirin in adults.",
    "Check mortality and bleeding outcomes reported.",
]


def _data(sub: str):
    from meteora.settings import data_dir

    try:
        return data_dir(sub)
    except DataNotFoundError:
        pytest.skip(f"shared data folder {sub} not available")


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- med-rationale rows


def test_bad_rows_are_reported_with_file_and_line(tmp_path):
    long = " ".join(["word"] * 81)
    lines = [
        json.dumps(
            {"id": "a", "query": "Does aspirin prevent stroke?", "rationales": GOOD}
        ),  # 1 ok
        '{"query": "broken", ',  # 2 invalid JSON
        json.dumps({"query": "  ", "rationales": GOOD}),  # 3 empty query
        json.dumps({"query": "Any rationales?", "rationales": []}),  # 4 no rationale
        json.dumps({"query": "Short one?", "rationales": ["too short"]}),  # 5 2 words
        json.dumps({"query": "Long one?", "rationales": [long]}),  # 6 81 words
        json.dumps(["not", "an", "object"]),  # 7 not an object
        "",  # 8 blank: skipped silently
        json.dumps({"query": "What treats canine parvovirus?", "rationales": GOOD}),  # 9 ok
        json.dumps(
            {"query": "does ASPIRIN prevent stroke", "rationales": GOOD}
        ),  # 10 duplicate of 1
        json.dumps({"query": "Bad type?", "rationales": [42]}),  # 11 non-string rationale
    ]
    path = _write_lines(tmp_path / "bad.jsonl", lines)

    ds = load_rationale_sft(path)
    assert [e.line for e in ds] == [1, 9]
    assert [r.line for r in ds.rejected] == [2, 3, 4, 5, 6, 7, 11]
    assert [d.line for d in ds.duplicates] == [10]
    reasons = {r.line: r.reason for r in ds.rejected}
    assert "invalid JSON" in reasons[2]
    assert "query" in reasons[3]
    assert "2 words" in reasons[5] and "81 words" in reasons[6]
    assert str(ds.rejected[0]).startswith("bad.jsonl:2:")

    with pytest.raises(TrainingDataError) as err:
        load_rationale_sft(path, strict=True)
    msg = str(err.value)
    for line in (2, 3, 4, 5, 6, 7, 11):
        assert f"bad.jsonl:{line}:" in msg
    assert "bad.jsonl:1:" not in msg and "bad.jsonl:9:" not in msg


def test_word_bounds_dedupe_and_exclusion(tmp_path):
    rows = [
        {"query": "Q one?", "rationales": ["a b c d"]},
        {"query": "Q two?", "rationales": ["a b c"]},
        {"query": "q  ONE", "rationales": ["a b c d e"]},
    ]
    path = tmp_path / "d.jsonl"
    write_jsonl_atomic(path, rows)
    ds = load_rationale_sft(path)
    assert (
        len(ds) == 1
        and [r.line for r in ds.rejected] == [2]
        and [d.line for d in ds.duplicates] == [3]
    )
    ds_all = load_rationale_sft(path, min_words=3, dedupe=False)
    assert len(ds_all) == 3
    ds_ex = load_rationale_sft(path, min_words=3, exclude_queries=["q one"])
    assert [e.query for e in ds_ex] == ["Q two?"] and len(ds_ex.excluded) == 2
    with pytest.raises(TrainingDataError, match="no valid rationale rows"):
        load_rationale_sft(path, min_words=6)
    with pytest.raises(InvalidInputError):
        load_rationale_sft(path, min_words=5, max_words=4)


def test_rationale_whitespace_is_collapsed_to_one_line(tmp_path):
    path = tmp_path / "w.jsonl"
    write_jsonl_atomic(
        path, [{"query": "Q?", "rationales": ["Look for\nrenal   failure signs.", GOOD[0]]}]
    )
    ex = load_rationale_sft(path)[0]
    assert ex.rationales[0] == "Look for renal failure signs."
    assert ex.response.count("\n") == 1


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_rationale_sft(tmp_path / "nope.jsonl")
    with pytest.raises(DataNotFoundError):
        load_preference_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(DataNotFoundError):
        read_jsonl(tmp_path / "nope.jsonl")


def test_pairs_render_with_the_template(tmp_path):
    path = tmp_path / "p.jsonl"
    write_jsonl_atomic(
        path, [{"query": "Does aspirin help?", "rationales": GOOD * 2 + [GOOD[0] + " again"]}]
    )
    ds = load_rationale_sft(path)
    tpl = get_template("med-rationale")
    pair = ds.pairs()[0]
    assert pair["prompt"] == tpl.render("Does aspirin help?", 3)
    assert pair["completion"] == "\n".join(ds[0].rationales)
    assert "generate 5 concise" in ds.pairs(n="count")[0]["prompt"]
    with pytest.raises(InvalidInputError):
        ds.pairs(n="many")
    with pytest.raises(InvalidInputError, match="unknown prompt template"):
        ds.pairs("no-such-template")


def test_normalize_query():
    assert normalize_query("What is  Aspirin?") == normalize_query("what is aspirin")
    assert normalize_query("a b") != normalize_query("a c")


# --------------------------------------------------------------------------- the real files


@pytest.mark.parametrize("split", ["val", "test"])
def test_template_reproduces_the_adapters_text_field(split):
    """render(query, 3) + "\\n".join(rationales) == text for ~96 % of rows; the rest are known variants."""
    path = _data("med-rationales") / f"{split}.jsonl"
    ds = load_rationale_sft(path, dedupe=False, strict=True)
    tpl = get_template("med-rationale")
    first = ds[0]
    assert tpl.render(first.query, 3) + first.response == first.text

    exact = sum(1 for e in ds if tpl.render(e.query, 3) + e.response == e.text)
    assert exact / len(ds) > 0.95
    mismatches = ds.text_mismatches()
    assert len(mismatches) == len(ds) - exact
    kinds = Counter(m.reason for m in mismatches)
    known = (
        "text has no '### Response:' section",
        "prompt differs",
        "response joins the rationales with spaces",
        "response differs",
    )
    assert all(any(k in reason for k in known) for reason in kinds), kinds
    # the prompt part agrees whenever the text has the same query and asks for 3
    same_prompt = [
        e
        for e in ds
        if e.text
        and f"### Query:\n{e.query}\n\n### Response:\n" in e.text
        and "generate 3 concise" in e.text
    ]
    agree = sum(1 for e in same_prompt if e.text.startswith(tpl.render(e.query, 3)))
    assert agree / len(same_prompt) > 0.99


def test_real_val_file_has_no_invalid_rows_but_duplicates():
    ds = load_rationale_sft(_data("med-rationales") / "val.jsonl", strict=True)
    assert ds.rejected == []
    assert len(ds.duplicates) > 0
    assert len(ds) + len(ds.duplicates) == 3246
    assert ds.sha256 and len(ds.sha256) == 64


# --------------------------------------------------------------------------- JSONL helpers


def test_read_jsonl_lists_every_bad_line(tmp_path):
    path = _write_lines(tmp_path / "x.jsonl", ['{"a": 1}', "{nope", "", '{"b": 2}', "[1,"])
    with pytest.raises(TrainingDataError) as err:
        read_jsonl(path)
    assert "x.jsonl:2:" in str(err.value) and "x.jsonl:5:" in str(err.value)
    write_jsonl_atomic(tmp_path / "y.jsonl", [{"a": "é"}, {"b": [1, 2]}])
    assert read_jsonl(tmp_path / "y.jsonl") == [{"a": "é"}, {"b": [1, 2]}]


# --------------------------------------------------------------------------- PubMedQA


def test_pubmedqa_alpaca_examples_are_train_side_only():
    folder = _data("pubmedqa")
    test_ids = set(json.loads((folder / "test_ground_truth.json").read_text()))
    ex = pubmedqa_alpaca_examples(folder)
    assert len(ex) == 500
    assert not {e["id"] for e in ex} & test_ids
    first = ex[0]
    assert first["prompt"].startswith("### Instruction:\n")
    assert "\n\n### Input:\n" in first["prompt"] and first["prompt"].endswith("\n\n### Response:\n")
    assert first["completion"].split(".")[0] in ("yes", "no", "maybe")
    assert len(first["completion"]) > 20
    assert Counter(e["completion"].split(".")[0] for e in ex).keys() == {"yes", "no", "maybe"}
    assert first["prompt"] == PUBMEDQA_ALPACA.render(
        first["prompt"].split("### Input:\n")[1].split("\n\n### Response")[0]
    )

    with_ctx = pubmedqa_alpaca_examples(
        folder / "ori_pqal.json", ids=[first["id"]], with_contexts=True
    )
    assert len(with_ctx) == 1 and "Context:\n" in with_ctx[0]["prompt"]


def test_pubmedqa_refuses_the_test_split_and_test_ids():
    folder = _data("pubmedqa")
    test_id = next(iter(json.loads((folder / "test_ground_truth.json").read_text())))
    with pytest.raises(InvalidInputError, match="split"):
        pubmedqa_alpaca_examples(folder, split="test")
    with pytest.raises(InvalidInputError, match="test questions"):
        pubmedqa_alpaca_examples(folder, ids=[test_id])
    with pytest.raises(InvalidInputError, match="test questions"):
        cot_examples(folder, ids=[test_id])


def test_cot_examples(tiny_llama_dir):
    from transformers import AutoTokenizer

    folder = _data("pubmedqa")
    ex = cot_examples(folder)
    assert len(ex) == 500
    c = ex[0]["completion"]
    assert (
        c.startswith("<think>\n")
        and "\n</think>\n\n" in c
        and c.rsplit("\n", 1)[1] in ("yes", "no", "maybe")
    )
    assert isinstance(ex[0]["prompt"], list) and ex[0]["prompt"][-1]["role"] == "user"
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    rendered = cot_examples(folder, tokenizer=tok, ids=[ex[0]["id"]])
    assert rendered[0]["prompt"].endswith("<|im_start|>assistant\n")


# --------------------------------------------------------------------------- preference pairs


def test_preference_pairs_validation(tmp_path):
    lines = [
        json.dumps({"prompt": "P1", "chosen": "good", "rejected": "bad"}),  # 1 ok
        json.dumps(
            {"query": "Does aspirin help?", "chosen": GOOD, "rejected": ["Irrelevant text here."]}
        ),  # 2 ok
        json.dumps({"prompt": "P3", "chosen": "same", "rejected": "same"}),  # 3 identical
        json.dumps({"chosen": "a", "rejected": "b"}),  # 4 no prompt
        json.dumps({"prompt": "P5", "chosen": "", "rejected": "b"}),  # 5 empty chosen
        "{oops",  # 6 invalid
    ]
    path = _write_lines(tmp_path / "pairs.jsonl", lines)
    with pytest.raises(TrainingDataError) as err:
        load_preference_pairs(path)
    for line in (3, 4, 5, 6):
        assert f"pairs.jsonl:{line}:" in str(err.value)
    pairs = load_preference_pairs(path, strict=False)
    assert len(pairs) == 2
    assert pairs[1]["prompt"] == get_template("med-rationale").render("Does aspirin help?")
    assert pairs[1]["chosen"] == "\n".join(GOOD)
    assert set(pairs[0]) == {"prompt", "chosen", "rejected"}


def test_split_pairs_is_deterministic_and_keeps_prompts_together():
    pairs = [{"prompt": f"q{i // 2}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(100)]
    tr, va, te = split_pairs(pairs, seed=3)
    assert (len(tr), len(va), len(te)) == (80, 10, 10)
    assert split_pairs(pairs, seed=3) == (tr, va, te)
    assert split_pairs(pairs, seed=4) != (tr, va, te)
    prompts = [{p["prompt"] for p in part} for part in (tr, va, te)]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    assert sorted(p["chosen"] for p in tr + va + te) == sorted(p["chosen"] for p in pairs)
    with pytest.raises(InvalidInputError):
        split_pairs(pairs, ratios=(0.5, 0.2, 0.2))
    with pytest.raises(InvalidInputError):
        split_pairs(pairs, ratios=(0.9, 0.1))


def test_pubmedqa_examples_from_a_benchmark_object():
    pubmedqa = pytest.importorskip("meteora.datasets.pubmedqa")
    folder = _data("pubmedqa")
    bench = pubmedqa.build_pubmedqa_benchmark(folder / "ori_pqal.json")
    from_bench = pubmedqa_alpaca_examples(bench)
    from_file = pubmedqa_alpaca_examples(folder)
    assert [e["id"] for e in from_bench] == [e["id"] for e in from_file]
    assert from_bench[:5] == from_file[:5]
    with pytest.raises(InvalidInputError, match="test questions"):
        pubmedqa_alpaca_examples(bench, ids=[bench.splits["test"][0]])
    ctx = pubmedqa_alpaca_examples(bench, ids=[from_bench[0]["id"]], with_contexts=True)
    assert ctx == pubmedqa_alpaca_examples(folder, ids=[from_bench[0]["id"]], with_contexts=True)
