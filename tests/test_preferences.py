"""DPO preference pairs from the evidence selector: margins, splits, JSONL output."""

from __future__ import annotations

import json
import re

import pytest
from helpers_bench import BagOfWordsModel, polynomial_hash, toy_benchmark

from meteora.datasets.pubmedqa import RetrievalBenchmark
from meteora.embeddings.encoder import Encoder
from meteora.errors import InvalidInputError
from meteora.evaluation.selections import build_retriever
from meteora.rationales.rationale_set import RationaleSet
from meteora.rationales.templates import get_template
from meteora.training.dpo_pairs import write_preference_pairs
from meteora.training.preferences import (
    FALLBACK_SCORE,
    PreferenceBuildResult,
    build_preference_pairs,
    hit_score,
)

TOPICS = ["aspirin", "statin", "insulin", "asthma", "renal", "fever", "sepsis"]


def chunk_texts(i: int, t: str) -> list[str]:
    return [
        f"Background: {t} background{i} history{i} of the {t} problem.",
        f"Results: {t} outcome{i} odds{i} ratio{i} measured{i} significant{i}.",
        f"Methods: cohort{i} of {t} patients enrolled{i} design{i}.",
    ]


def make_benchmark() -> RetrievalBenchmark:
    return toy_benchmark(
        TOPICS,
        chunk_texts,
        lambda i, t, qid: f"Is {t} linked to outcome{i}?",
        splits={
            "train": ["q0", "q1", "q2", "q3", "q4"],
            "test": ["q5", "q6"],
            "all": [f"q{i}" for i in range(7)],
        },
        no_evidence={"q3"},  # q3 has no evidence chunk in this view
    )


class FakeGenerator:
    """Scripted sampling: per query and sample, a rationale that hits, misses or is garbage."""

    def __init__(self, script: dict[str, list[str]], template=None) -> None:
        self.script = script
        self.template = template or get_template("med-rationale")
        self.tokenizer = None
        self.model_id = "fake-lm"
        self.calls: list[dict] = []

    def generate(
        self,
        queries,
        n=None,
        *,
        batch_size=8,
        max_new_tokens=None,
        do_sample=False,
        temperature=0.7,
        top_p=0.95,
        seed=None,
        include_query=False,
        filter=True,
        show_progress=None,
    ):
        self.calls.append(
            {
                "queries": list(queries),
                "n": n,
                "seed": seed,
                "do_sample": do_sample,
                "temperature": temperature,
                "include_query": include_query,
            }
        )
        prefix = self.template.response_prefix
        out = []
        for q in queries:
            i = int(re.search(r"outcome(\d)", q).group(1))
            kind = self.script.get(f"q{i}", ["hit"] * 8)[seed % 100]
            if kind == "garbage":
                out.append(RationaleSet(q, [q], raw=prefix + f"??? {seed}", fallback=True))
                continue
            text = chunk_texts(i, TOPICS[i])[1 if kind == "hit" else 0]
            rats = [q, text] if include_query else [text]
            out.append(RationaleSet(q, rats, raw=prefix + f"{text}\nsample {seed}"))
        return out


@pytest.fixture()
def bench() -> RetrievalBenchmark:
    return make_benchmark()


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(BagOfWordsModel(dim=128, word_hash=polynomial_hash))


@pytest.fixture()
def retriever(bench, encoder):
    return build_retriever(bench, encoder, bm25_backend="numpy")


SCRIPT = {
    "q0": ["hit", "miss", "hit", "miss"],  # margin 1 -> pair (sample 0 vs sample 3)
    "q1": ["hit", "hit", "hit", "hit"],  # all equal -> no margin
    "q2": ["miss", "garbage", "miss", "miss"],  # a parsed miss beats unparseable output
    "q4": ["miss", "miss", "hit", "miss"],
}


def test_hit_score():
    assert hit_score(["a"], {"a"}) == 1.0
    assert hit_score(["a", "b"], {"a"}) == pytest.approx(2 / 3)
    assert hit_score(["b"], {"a"}) == 0.0
    assert hit_score([], {"a"}) == 0.0
    assert hit_score(["a", "b", "c"], {"a", "c"}, "hits") == 2.0
    assert hit_score(["a", "b"], {"a", "c"}, "recall") == 0.5
    assert hit_score([], {"a"}, "precision") == 0.0
    with pytest.raises(InvalidInputError):
        hit_score(["a"], {"a"}, "ndcg")


def test_pairs_only_with_a_margin(bench, retriever):
    gen = FakeGenerator(SCRIPT)
    res = build_preference_pairs(gen, bench, retriever=retriever, n_samples=4, seed=0)
    assert isinstance(res, PreferenceBuildResult)
    by_q = {p["query_id"]: p for p in res.pairs}
    assert set(by_q) == {"q0", "q2", "q4"}
    assert res.stats["skipped"] == {
        "no_gold": 1,
        "no_margin": 1,
        "identical_completions": 0,
        "empty_completion": 0,
    }
    assert (
        res.stats["queries"] == 5
        and res.stats["queries_with_gold"] == 4
        and res.stats["pairs"] == 3
    )
    for p in res.pairs:
        assert p["chosen_score"] > p["rejected_score"]
        assert p["chosen_score"] - p["rejected_score"] >= 0.1
        assert p["chosen"] != p["rejected"]
    q0 = by_q["q0"]
    assert q0["chosen_score"] == pytest.approx(1.0) and q0["rejected_score"] == 0.0
    assert q0["chosen_selected"] == ["d0-1"]
    assert (q0["chosen_sample"], q0["rejected_sample"]) == (
        0,
        3,
    )  # ties: earliest best, latest worst
    assert q0["chosen"].endswith("sample 0") and q0["rejected"].endswith("sample 3")
    assert by_q["q2"]["rejected_score"] == FALLBACK_SCORE and by_q["q2"]["chosen_score"] == 0.0
    assert by_q["q4"]["chosen_sample"] == 2
    # sampling: distinct seeds, do_sample on, the requested temperature
    assert [c["seed"] for c in gen.calls] == [0, 1, 2, 3]
    assert all(c["do_sample"] and c["temperature"] == 0.7 for c in gen.calls)
    skipped = {e["query_id"]: e.get("skipped") for e in res.per_query}
    assert skipped["q1"] == "no_margin" and skipped["q3"] == "no_gold"


def test_prompt_is_the_generation_prompt_and_completion_is_raw(bench, retriever):
    tpl = get_template("med-rationale").with_options(response_prefix="1.")
    gen = FakeGenerator(SCRIPT, template=tpl)
    res = build_preference_pairs(gen, bench, retriever=retriever, n_rationales=2, limit=1)
    (pair,) = res.pairs
    assert pair["prompt"] == tpl.render(bench.queries["q0"], 2) and pair["prompt"].endswith(
        "### Response:\n1."
    )
    assert pair["chosen"].startswith("Results: aspirin")  # the prefix belongs to the prompt
    assert gen.calls[0]["n"] == 2 and gen.calls[0]["include_query"] is False
    assert (
        res.stats["settings"]["n_rationales"] == 2
        and res.stats["settings"]["template"] == "med-rationale"
    )


def test_completion_is_cut_before_a_hallucinated_prompt_section():
    from meteora.training.preferences import _completion

    raw = "### Response:\n- results show x\n- dose y\n\n### Query:\nnext question"
    assert _completion(raw, "### Response:\n") == "- results show x\n- dose y"
    # text without a new section keeps everything but trailing whitespace
    assert _completion("a ### b\n\n", "") == "a ### b"


def test_include_query_anchors_the_selection(bench, retriever):
    # the query "Is aspirin linked to outcome0?" already finds its results chunk, so with
    # the query as an anchor the missing rationales hit too: every sample ties, no pair
    gen = FakeGenerator(SCRIPT)
    res = build_preference_pairs(gen, bench, retriever=retriever, include_query=True)
    assert all(c["include_query"] for c in gen.calls)
    scores = {e["query_id"]: e.get("scores") for e in res.per_query}
    assert scores["q0"] == pytest.approx([2 / 3] * 4)
    assert "q0" not in {p["query_id"] for p in res.pairs}


def test_selections_are_the_rerankers_with_those_rationales(bench, retriever, encoder):
    from meteora.reranker import Reranker
    from meteora.selection.selector_settings import SelectorSettings

    for settings in (SelectorSettings(), SelectorSettings(window=1, order="document")):
        res = build_preference_pairs(
            FakeGenerator(SCRIPT), bench, retriever=retriever, candidates=5, settings=settings
        )
        assert res.pairs and res.stats["settings"]["selector"] == settings.to_dict()
        rr = Reranker(scorer=None, generator=None, encoder=encoder, settings=settings)
        for p in res.pairs:
            for side in ("chosen", "rejected"):
                expected = rr.search_batch(
                    [p["query"]], retriever, k=5, rationales=[p[f"{side}_rationales"]]
                )[0]
                assert p[f"{side}_selected"] == expected.selected_ids, (settings, side)


def test_min_margin_filters_pairs(bench, retriever):
    res = build_preference_pairs(FakeGenerator(SCRIPT), bench, retriever=retriever, min_margin=1.5)
    assert res.pairs == [] and res.stats["skipped"]["no_margin"] == 4


def test_never_uses_test_questions(bench, retriever):
    gen = FakeGenerator(SCRIPT)
    for split in ("test", "all"):
        with pytest.raises(InvalidInputError, match="test"):
            build_preference_pairs(gen, bench, split=split, retriever=retriever)
    assert gen.calls == []
    res = build_preference_pairs(gen, bench, retriever=retriever)
    asked = {q for c in gen.calls for q in c["queries"]}
    test_queries = {bench.queries[q] for q in bench.splits["test"]}
    assert asked and not asked & test_queries
    assert not {p["query_id"] for p in res.pairs} & set(bench.splits["test"])


def test_writes_valid_jsonl_atomically(bench, retriever, tmp_path):
    from meteora.training.dpo_pairs import load_preference_pairs

    out = tmp_path / "pairs.jsonl"
    res = build_preference_pairs(
        FakeGenerator(SCRIPT), bench, retriever=retriever, out=out, chunk_size=2
    )
    assert sorted(x.name for x in tmp_path.iterdir()) == [
        "pairs.jsonl",
        "pairs.stats.json",
    ]  # no temp files left
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == res.pairs
    loaded = load_preference_pairs(out)  # the DPO trainer's loader accepts the file
    assert [p["chosen"] for p in loaded] == [p["chosen"] for p in res.pairs]
    stats = json.loads((tmp_path / "pairs.stats.json").read_text())
    assert stats["stats"]["pairs"] == len(rows) and len(stats["per_query"]) == 5
    # a failing write leaves the previous file untouched
    before = out.read_bytes()
    with pytest.raises(InvalidInputError):
        write_preference_pairs(
            out,
            [
                {"prompt": "p", "chosen": "a", "rejected": "b"},
                {"prompt": "p", "chosen": "a", "rejected": "a"},
            ],
        )
    assert out.read_bytes() == before
    with pytest.raises(InvalidInputError):
        write_preference_pairs(out, [{"prompt": "p", "chosen": float("nan"), "rejected": "b"}])


@pytest.mark.slow
def test_default_retriever_and_bad_arguments(bench, encoder):
    gen = FakeGenerator(SCRIPT)
    res = build_preference_pairs(gen, bench, encoder=encoder, limit=2)
    assert res.stats["queries"] == 2 and [p["query_id"] for p in res.pairs] == ["q0"]
    with pytest.raises(InvalidInputError):
        build_preference_pairs(gen, bench, encoder=encoder, n_samples=1)
    with pytest.raises(InvalidInputError):
        build_preference_pairs(gen, bench, encoder=encoder, view="nope")
    with pytest.raises(InvalidInputError):
        build_preference_pairs(gen, bench, encoder=encoder, metric="auc")
    with pytest.raises(InvalidInputError):
        build_preference_pairs(gen, bench, encoder=encoder, seed=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        build_preference_pairs(object(), bench, encoder=encoder)


@pytest.mark.slow
def test_real_generator_end_to_end(tiny_llama_dir, tiny_encoder, bench, tmp_path):
    from meteora.rationales.generator import RationaleGenerator
    from meteora.training.dpo_pairs import load_preference_pairs

    gen = RationaleGenerator.from_pretrained(
        str(tiny_llama_dir), num_threads=1, cache=tmp_path / "cache.sqlite"
    )
    retriever = build_retriever(bench, tiny_encoder, bm25_backend="numpy")
    out = tmp_path / "pairs.jsonl"
    kwargs = dict(
        retriever=retriever, n_samples=3, max_new_tokens=24, min_margin=0.0, out=out, batch_size=4
    )
    res = build_preference_pairs(gen, bench, **kwargs)
    assert (
        res.stats["queries"] == 5 and res.stats["samples"] == 12
    )  # 4 train questions with gold x 3
    assert sum(res.stats["skipped"].values()) + res.stats["pairs"] == 5
    for p in res.pairs:
        assert p["prompt"] == gen.template.render(p["query"], gen.template.default_n, gen.tokenizer)
        assert (
            p["chosen_score"] > p["rejected_score"] and p["chosen"].strip() != p["rejected"].strip()
        )
        assert p["query_id"] not in bench.splits["test"]
    if res.pairs:
        assert len(load_preference_pairs(out)) == len(res.pairs)
    # the generator's cache makes a rerun reproduce the same pairs without regenerating
    again = build_preference_pairs(gen, bench, **kwargs)
    assert again.pairs == res.pairs
