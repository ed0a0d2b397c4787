"""PubMedQA answer-accuracy harness: parsing, metrics, scoring, conditions, limits."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers_bench import BagOfWordsModel, multiplicative_hash, toy_benchmark

from meteora.datasets.pubmedqa import RetrievalBenchmark
from meteora.embeddings.encoder import Encoder
from meteora.errors import InvalidInputError
from meteora.evaluation.qa import evaluate_qa
from meteora.evaluation.qa_report import to_markdown
from meteora.evaluation.reader import (
    LABELS,
    UNPARSED,
    build_qa_message,
    parse_answer,
    qa_metrics,
    render_reader_prompt,
)
from meteora.evaluation.selections import build_retriever, fixed_k_selections, meteora_selections
from meteora.lm.base import CompleteMixin
from meteora.lm.scoring import LoglikScorer
from meteora.retrievers.bm25 import BM25Retriever
from meteora.retrievers.dense import DenseRetriever
from meteora.retrievers.hybrid import HybridRetriever
from meteora.selection.selector_settings import SelectorSettings

TOPICS = ["aspirin", "statin", "insulin", "asthma", "renal", "fever"]


def chunk_texts(i: int, t: str) -> list[str]:
    return [
        f"Background: {t} background{i} context of the {t} question.",
        f"Results: {t} outcome{i} odds ratio measured{i} significant.",
        f"Methods: cohort{i} of {t} patients enrolled{i}.",
    ]


def make_benchmark() -> RetrievalBenchmark:
    return toy_benchmark(
        TOPICS,
        chunk_texts,
        lambda i, t, qid: f"Does {t} change outcome{i} in question {qid}?",
        splits={
            "train": ["q0", "q1", "q2"],
            "test": ["q3", "q4", "q5"],
            "all": [f"q{i}" for i in range(6)],
        },
        decisions=["yes", "no", "maybe", "yes", "no", "yes"],
    )


class FakeReader:
    """Records every prompt; answers from a script keyed by the question id in the prompt."""

    def __init__(self, answers: dict[str, str] | None = None, default: str = "Yes.") -> None:
        self.answers = answers or {}
        self.default = default
        self.calls: list[dict] = []

    def complete(self, prompts, *, max_new_tokens=128, chat=True, batch_size=8, **kw):
        self.calls.append(
            {"prompts": list(prompts), "max_new_tokens": max_new_tokens, "chat": chat}
        )
        out = []
        for p in prompts:
            qid = re.search(r"question (q\d)\?", p).group(1)
            out.append(self.answers.get(qid, self.default))
        return out

    @property
    def prompts(self) -> list[str]:
        return [p for c in self.calls for p in c["prompts"]]


@pytest.fixture()
def bench() -> RetrievalBenchmark:
    return make_benchmark()


@pytest.fixture(scope="module")
def bow_encoder() -> Encoder:
    return Encoder(BagOfWordsModel(dim=64, word_hash=multiplicative_hash))


# ------------------------------------------------------------------ parsing + metrics


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("No, it does not.", "no"),
        ("The answer is: Maybe", "maybe"),
        ("  MAYBE yes", "maybe"),
        ("Answer: no", "no"),
        ("<think>yes or no?</think> no", "no"),
        ("Nope", UNPARSED),
        ("yesterday it rained", UNPARSED),
        ("", UNPARSED),
        ("The study shows a benefit.", UNPARSED),
        ("Unknown (not-sure)", UNPARSED),
        ("yes/no", "yes"),
    ],
)
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


def test_parse_answer_rejects_non_str():
    with pytest.raises(InvalidInputError):
        parse_answer(None)  # type: ignore[arg-type]


def test_qa_metrics_hand_computed():
    # yes: TP 1, FP 1, FN 1 -> 0.5; no: TP 0, FN 1 -> 0; maybe: TP 1 -> 1.0
    m = qa_metrics(["yes", "no", "maybe", "yes"], ["yes", "yes", "maybe", UNPARSED])
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["f1_per_label"] == pytest.approx({"yes": 0.5, "no": 0.0, "maybe": 1.0})
    assert m["macro_f1"] == pytest.approx(0.5)
    assert m["unparsed"] == 1
    assert m["predicted_distribution"] == {"yes": 2, "no": 0, "maybe": 1, UNPARSED: 1}
    assert m["gold_distribution"] == {"yes": 2, "no": 1, "maybe": 1}


def test_qa_metrics_macro_ignores_absent_labels():
    # yes: TP1 FN1 -> 2/3; no: TP1 FP1 -> 2/3; maybe never occurs -> not averaged
    m = qa_metrics(["yes", "yes", "no"], ["yes", "no", "no"])
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_qa_metrics_bad_input():
    with pytest.raises(InvalidInputError):
        qa_metrics(["yes"], ["yes", "no"])
    with pytest.raises(InvalidInputError):
        qa_metrics(["perhaps"], ["yes"])
    with pytest.raises(InvalidInputError):
        qa_metrics(["yes"], ["Yes"])


# ------------------------------------------------------------------ prompts


def test_build_qa_message_with_and_without_context():
    none, cut = build_qa_message("Does X help?", [])
    assert "Context:" not in none and "Question: Does X help?" in none and not cut
    msg, cut = build_qa_message("Does X help?", ["first chunk", "second chunk"])
    assert msg.index("[1] first chunk") < msg.index("[2] second chunk") < msg.index("Question:")
    assert not cut
    short, cut = build_qa_message("Q?", ["a" * 50, "b" * 50], max_context_chars=60)
    assert cut and "b" * 11 not in short and "a" * 50 in short
    with pytest.raises(InvalidInputError):
        build_qa_message("  ", ["x"])
    with pytest.raises(InvalidInputError):
        build_qa_message("Q?", ["x"], max_context_chars=0)


def test_render_reader_prompt_chat_and_raw(tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    chat = render_reader_prompt("Question: Q?", tok)
    assert chat.startswith("<|im_start|>user\nQuestion: Q?") and chat.endswith(
        "<|im_start|>assistant\nAnswer:"
    )
    assert render_reader_prompt("Question: Q?", tok, chat=False) == "Question: Q?\nAnswer:"

    class NoTemplate:
        chat_template = None

    with pytest.raises(InvalidInputError):
        render_reader_prompt("Q", NoTemplate(), chat=True)


# ------------------------------------------------------------------ conditions (generate mode)


def test_conditions_use_the_right_contexts(bench):
    reader = FakeReader()
    meteora = {"q3": ["d3-1"], "q4": ["d4-1", "d0-0"], "q5": []}
    fixed = {q: [f"d{q[1]}-2", f"d{q[1]}-0", "d0-1", "d1-1"] for q in ("q3", "q4", "q5")}
    res = evaluate_qa(
        reader,
        bench,
        split="test",
        answer_mode="generate",
        k=2,
        selections={"meteora": meteora, "fixed-k": fixed},
        keep_predictions=True,
    )
    by_cond = dict(
        zip(
            ["none", "gold", "meteora", "fixed-k"],
            [c["prompts"] for c in reader.calls],
            strict=True,
        )
    )
    text = {p.id: p.text for p in bench.corpus}
    for p in by_cond["none"]:
        assert "Context:" not in p
    for qid, p in zip(["q3", "q4", "q5"], by_cond["gold"], strict=True):
        d = qid[1]
        idx = [p.index(text[f"d{d}-{pos}"]) for pos in range(3)]
        assert idx == sorted(idx)  # the whole abstract, in document order
        assert "d0" not in p and text["d0-1"] not in p
    m = by_cond["meteora"]
    assert text["d3-1"] in m[0] and text["d3-0"] not in m[0]
    assert m[1].index(text["d4-1"]) < m[1].index(text["d0-0"])  # the selection's order is kept
    assert "Context:" not in m[2]  # an empty selection means no context
    for qid, p in zip(["q3", "q4", "q5"], by_cond["fixed-k"], strict=True):
        d = qid[1]
        assert text[f"d{d}-2"] in p and text[f"d{d}-0"] in p  # top k=2 only
        assert text["d0-1"] not in p and text["d1-1"] not in p
    assert set(res["conditions"]) == {"none", "gold", "meteora", "fixed-k"}
    assert res["conditions"]["gold"]["mean_contexts"] == pytest.approx(3.0)
    assert res["conditions"]["fixed-k"]["mean_contexts"] == pytest.approx(2.0)
    assert res["conditions"]["meteora"]["mean_contexts"] == pytest.approx(1.0)
    # the fake answers "Yes." -> every prediction is yes; gold of q3,q4,q5 = yes,no,yes
    assert res["conditions"]["none"]["accuracy"] == pytest.approx(2 / 3)
    assert res["predictions"]["gold"] == {"q3": "yes", "q4": "yes", "q5": "yes"}


def test_test_split_never_sees_train_questions(bench):
    reader = FakeReader()
    evaluate_qa(reader, bench, split="test", conditions=("none", "gold"), answer_mode="generate")
    asked = {re.search(r"question (q\d)\?", p).group(1) for p in reader.prompts}
    assert asked == {"q3", "q4", "q5"}


def test_limit_is_respected(bench):
    reader = FakeReader()
    res = evaluate_qa(
        reader, bench, split="test", conditions=("none", "gold"), limit=2, answer_mode="generate"
    )
    assert res["n_questions"] == 2
    assert all(len(c["prompts"]) == 2 for c in reader.calls)
    assert res["conditions"]["gold"]["n"] == 2


def test_unparsed_answers_are_counted_wrong_and_separately(bench):
    reader = FakeReader({"q3": "I am not sure.", "q4": "No.", "q5": "maybe"})
    res = evaluate_qa(reader, bench, conditions=("none",), answer_mode="generate")
    m = res["conditions"]["none"]
    assert m["unparsed"] == 1 and m["predicted_distribution"]["unparsed"] == 1
    assert m["accuracy"] == pytest.approx(1 / 3)  # only q4 (no) is right
    assert res["gold_distribution"] == {"yes": 2, "no": 1, "maybe": 0}


def test_generate_mode_raw_prompts_end_with_answer_cue(bench):
    reader = FakeReader()
    evaluate_qa(reader, bench, conditions=("none",), answer_mode="generate", max_new_tokens=5)
    call = reader.calls[0]
    assert call["chat"] is False and call["max_new_tokens"] == 5
    assert all(p.endswith("\nAnswer:") for p in call["prompts"])


def test_missing_selections_are_errors(bench):
    with pytest.raises(InvalidInputError, match="meteora_selections"):
        evaluate_qa(FakeReader(), bench, conditions=("meteora",), answer_mode="generate")
    with pytest.raises(InvalidInputError, match="no entry"):
        evaluate_qa(
            FakeReader(),
            bench,
            conditions=("meteora",),
            answer_mode="generate",
            selections={"meteora": {"q3": ["d3-1"]}},
        )
    with pytest.raises(InvalidInputError):
        evaluate_qa(FakeReader(), bench, answer_mode="nope")
    with pytest.raises(InvalidInputError):
        evaluate_qa(
            FakeReader(), bench, split="validation", conditions=("none",), answer_mode="generate"
        )


def test_fixed_k_retrieved_when_not_given(bench):
    retriever = BM25Retriever(backend="numpy").index(bench.corpus)
    reader = FakeReader()
    evaluate_qa(
        reader, bench, conditions=("fixed-k",), k=1, retriever=retriever, answer_mode="generate"
    )
    want = fixed_k_selections(bench, ["q3", "q4", "q5"], retriever=retriever, k=1)
    text = {p.id: p.text for p in bench.corpus}
    for qid, prompt in zip(["q3", "q4", "q5"], reader.calls[0]["prompts"], strict=True):
        assert len(want[qid]) == 1 and text[want[qid][0]] in prompt
        assert prompt.count("\n[") == 1


# ------------------------------------------------------------------ loglik mode


class ScriptedScorer:
    """Prefers, per prompt, the spelling named in ``script[qid]``."""

    def __init__(self, script: dict[str, str]) -> None:
        self.script = script
        self.calls: list[tuple[list[str], list[str], bool]] = []

    def __call__(self, prompts, continuations, *, add_special_tokens=False):
        self.calls.append((list(prompts), list(continuations), add_special_tokens))
        out = np.full((len(prompts), len(continuations)), -10.0)
        for i, p in enumerate(prompts):
            qid = re.search(r"question (q\d)\?", p).group(1)
            out[i, continuations.index(self.script[qid])] = -0.1
        return out


def test_loglik_picks_the_option_the_scorer_prefers(bench):
    scorer = ScriptedScorer({"q3": " no", "q4": " Maybe", "q5": " Yes"})
    res = evaluate_qa(
        object(), bench, conditions=("none", "gold"), scorer=scorer, keep_predictions=True
    )
    assert res["predictions"]["none"] == {"q3": "no", "q4": "maybe", "q5": "yes"}
    prompts, conts, special = scorer.calls[0]
    assert conts == [" yes", " Yes", " no", " No", " maybe", " Maybe"]
    assert (
        all(p.endswith("\nAnswer:") for p in prompts) and special is True
    )  # raw text: no chat template
    assert res["conditions"]["none"]["unparsed"] == 0
    assert res["conditions"]["gold"]["accuracy"] == pytest.approx(
        1 / 3
    )  # q5 only (gold yes, no, yes)


def test_loglik_pools_spellings_with_logsumexp(bench):
    class Split:
        def __call__(self, prompts, continuations, *, add_special_tokens=False):
            # "yes" has one strong spelling (-1.0); "no" has two at -1.2 (pooled: -0.507)
            row = [-1.0, -9.0, -1.2, -1.2, -9.0, -9.0]
            return np.array([row] * len(prompts))

    res = evaluate_qa(object(), bench, conditions=("none",), scorer=Split(), keep_predictions=True)
    assert set(res["predictions"]["none"].values()) == {"no"}


def test_calibration_removes_a_label_bias(bench):
    class Biased:
        def __init__(self):
            self.prompts = []

        def __call__(self, prompts, continuations, *, add_special_tokens=False):
            self.prompts.extend(prompts)
            rows = []
            for p in prompts:
                if "Question: N/A" in p or "Question: [MASK]" in p:
                    rows.append([-0.1, -9.0, -3.0, -9.0, -3.0, -9.0])  # strong prior for yes
                else:
                    rows.append([-0.5, -9.0, -1.0, -9.0, -3.0, -9.0])  # yes wins uncalibrated
            return np.array(rows)

    plain = evaluate_qa(
        object(), bench, conditions=("none",), scorer=Biased(), keep_predictions=True
    )
    assert set(plain["predictions"]["none"].values()) == {"yes"} and plain["calibrated"] is False
    scorer = Biased()
    cal = evaluate_qa(
        object(),
        bench,
        conditions=("none", "gold"),
        scorer=scorer,
        calibrate=True,
        keep_predictions=True,
    )
    assert set(cal["predictions"]["none"].values()) == {"no"} and cal["calibrated"] is True
    # the raw scores are kept (before the offset): their argmax is the uncalibrated answer
    raw = cal["label_scores"]["none"]
    assert set(raw) == set(cal["predictions"]["none"])
    assert all(np.argmax(row) == 0 for row in raw.values())
    p_cf = cal["conditions"]["none"]["calibration"]
    assert p_cf["yes"] > p_cf["no"] and sum(p_cf.values()) == pytest.approx(1.0)
    free = [p for p in scorer.prompts if "N/A" in p or "[MASK]" in p]
    assert len(free) == 4  # two content-free prompts per condition
    assert sum("Context:" in p for p in free) == 2  # the gold condition's ones carry a context
    with pytest.raises(InvalidInputError, match="calibrate"):
        evaluate_qa(
            FakeReader(), bench, conditions=("none",), answer_mode="generate", calibrate=True
        )


class NextTokenLM(CompleteMixin):
    """A :class:`meteora.lm.CausalLM` without exact log-likelihoods (like llama.cpp or a
    server; the protocol's defaults from :class:`~meteora.lm.base.CompleteMixin`):
    answers ``next_token_logprobs`` from a script keyed by question id."""

    backend = "openai"
    model_id = "fake-server-model"
    supports_loglik = False

    def __init__(self, script: dict[str, dict[str, float]]) -> None:
        self.script = script
        self.calls: list[tuple[list, int]] = []

    def identity(self):
        return {"backend": self.backend, "model": self.model_id}

    def generate(self, prompts, params=None, **kw):
        return ["yes" for _ in prompts]

    def complete(self, prompts, **kw):
        return ["yes" for _ in prompts]

    def score(self, prompts, continuations, *, add_special_tokens=False):
        raise AssertionError("score() must not be called when supports_loglik is False")

    def next_token_logprobs(self, prompts, *, top_k=20):
        self.calls.append((list(prompts), top_k))
        rows = []
        for p in prompts:
            text = p[-1]["content"] if isinstance(p, list) else p
            m = re.search(r"question (q\d)\?", text)
            rows.append(dict(self.script.get(m.group(1) if m else "free", {})))
        return rows


def test_loglik_uses_next_token_logprobs_when_the_lm_has_no_exact_scores(bench):
    from meteora.lm.base import CausalLM

    lm = NextTokenLM({
        # q3: "No" + " no" pooled (-1.0 and -1.5) beat " yes" (-0.9)
        "q3": {" yes": -0.9, "No": -1.0, " no": -1.5, "The": -0.2},
        "q4": {" Maybe": -0.3, "yes": -2.0},
        "q5": {"The": -0.1, "Based": -0.5},  # no label among the top tokens
    })
    assert isinstance(lm, CausalLM)

    class Reader:  # a RationaleGenerator on a server: .lm, no tokenizer, no transformers model
        def __init__(self, lm):
            self.lm, self.model_id, self.tokenizer, self.model = lm, lm.model_id, None, None

    for reader in (Reader(lm), lm):  # a wrapped LM, or the LM itself
        lm.calls.clear()
        res = evaluate_qa(reader, bench, conditions=("none", "gold"), keep_predictions=True)
        assert res["scoring"] == "next-token" and res["chat"] is True
        assert res["predictions"]["none"] == {"q3": "no", "q4": "maybe", "q5": UNPARSED}
        assert res["conditions"]["none"]["unparsed"] == 1
        prompts, top_k = lm.calls[0]
        assert top_k == 20 and prompts[0][0]["role"] == "user" and "Reply with one word" in prompts[0][0]["content"]
        assert "next-token" in to_markdown(res)
    # raw text prompts end with the answer cue; calibration survives labels missing from the top tokens
    lm.calls.clear()
    res = evaluate_qa(lm, bench, conditions=("none",), chat=False, calibrate=True, keep_predictions=True)
    assert all(p.endswith("\nAnswer:") for p in lm.calls[0][0])
    assert res["predictions"]["none"]["q4"] == "maybe"
    assert np.isfinite(list(res["conditions"]["none"]["calibration"].values())).all()


def test_loglik_uses_the_lms_exact_score_when_it_has_one(bench):
    calls = []

    class ExactLM(NextTokenLM):
        backend = "transformers"
        supports_loglik = True
        tokenizer = None

        def score(self, prompts, continuations, *, add_special_tokens=False):
            calls.append(list(continuations))
            return ScriptedScorer({"q3": " no", "q4": " no", "q5": " Maybe"})(prompts, continuations)

    lm = ExactLM({})
    res = evaluate_qa(lm, bench, conditions=("none",), keep_predictions=True)
    assert res["scoring"] == "exact" and not lm.calls
    assert calls and res["predictions"]["none"] == {"q3": "no", "q4": "no", "q5": "maybe"}


def test_loglik_needs_a_model_or_scorer(bench):
    with pytest.raises(InvalidInputError, match="model"):
        evaluate_qa(object(), bench, conditions=("none",))
    with pytest.raises(InvalidInputError, match="shape"):
        evaluate_qa(
            object(), bench, conditions=("none",), scorer=lambda p, c, **kw: np.zeros((1, 1))
        )


def test_loglik_scorer_matches_unpadded_forward(tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    prompts = [
        "Aspirin reduces the risk. Answer:",
        "Results: the odds ratio was 0.72 in patients with asthma. Answer:",
    ]
    conts = [" yes", " no", " maybe", " Results: odds"]
    scorer = LoglikScorer(model, tok, batch_size=8)
    got = scorer(prompts, conts)
    one = LoglikScorer(model, tok, batch_size=1)(prompts, conts)
    assert np.allclose(got, one, atol=1e-4)  # left padding changes nothing

    def manual(prompt: str, cont: str) -> float:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(cont, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        return float(sum(logp[len(p) - 1 + t, c[t]] for t in range(len(c))))

    expected = np.array([[manual(p, c) for c in conts] for p in prompts])
    assert np.allclose(got, expected, atol=1e-4)
    assert (
        len(tok(" Results: odds", add_special_tokens=False)["input_ids"]) > 1
    )  # multi-token path exercised
    assert (got < 0).all()


def test_loglik_scorer_truncates_long_prompts(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    scorer = LoglikScorer(model, tok, max_length=8)
    out = scorer(
        ["Aspirin reduces the risk of myocardial infarction in adults. Answer:"], [" yes", " no"]
    )
    assert out.shape == (1, 2) and np.isfinite(out).all() and scorer.truncated == 1


@pytest.mark.slow
def test_evaluate_qa_with_real_generator(tiny_llama_dir, bench):
    from meteora.rationales.generator import RationaleGenerator

    reader = RationaleGenerator.from_pretrained(str(tiny_llama_dir), num_threads=1)
    res = evaluate_qa(
        reader, bench, conditions=("none", "gold"), batch_size=2, keep_predictions=True
    )
    assert res["chat"] is True and res["reader"] == reader.model_id
    for m in res["conditions"].values():
        assert m["n"] == 3 and m["unparsed"] == 0  # loglik always yields a label
        assert sum(m["predicted_distribution"][lab] for lab in LABELS) == 3
    # loglik predictions agree with a direct LoglikScorer computation
    scorer = LoglikScorer.from_reader(reader)
    msg, _ = build_qa_message(bench.queries["q3"], [])
    raw = scorer(
        [render_reader_prompt(msg, reader.tokenizer)],
        [" yes", " Yes", " no", " No", " maybe", " Maybe"],
    )
    pooled = [np.logaddexp(raw[0, 2 * i], raw[0, 2 * i + 1]) for i in range(3)]
    assert res["predictions"]["none"]["q3"] == LABELS[int(np.argmax(pooled))]
    gen = evaluate_qa(
        reader, bench, conditions=("none",), answer_mode="generate", max_new_tokens=3, limit=2
    )
    assert gen["conditions"]["none"]["n"] == 2
    assert "| none |" in to_markdown(gen)


# ------------------------------------------------------------------ selections helpers


def test_meteora_selections_reuse_dense_embeddings(bench, bow_encoder):
    retriever = build_retriever(bench, bow_encoder, bm25_backend="numpy")
    dense = retriever.members["dense"]
    calls = []
    original = dense.embeddings_for

    def spy(ids):
        calls.append(list(ids))
        return original(ids)

    dense.embeddings_for = spy
    text = {p.id: p.text for p in bench.corpus}
    rats = {"q3": [text["d3-1"]], "q4": [text["d4-2"]]}
    sel = meteora_selections(  # the elbow reads the given rationales (the learned cut's query-only model does not)
        bench, ["q3", "q4"], rationales=rats, retriever=retriever, include_query=False, scorer=None,
        settings=SelectorSettings(cut="elbow"),
    )
    assert (
        sel["q3"][0] == "d3-1" and sel["q4"][0] == "d4-2"
    )  # exact-text rationale pairs with its chunk
    assert len(calls) == 2  # the stored corpus embeddings were used, once per query
    qonly = meteora_selections(bench, ["q3"], retriever=retriever, scorer=None)
    assert qonly["q3"] and all(pid in text for pid in qonly["q3"])
    with pytest.raises(InvalidInputError):
        meteora_selections(bench, ["q3", "q4"], rationales={"q3": ["x"]}, retriever=retriever, scorer=None)


def test_meteora_selections_with_generator_and_window(bench, bow_encoder):
    text = {p.id: p.text for p in bench.corpus}

    class Gen:
        def __init__(self):
            self.kwargs = None

        def generate(self, queries, n=None, **kw):
            from meteora.rationales.rationale_set import RationaleSet

            self.kwargs = dict(kw, n=n)
            return [RationaleSet(q, [text[f"d{q.split('outcome')[1][0]}-1"]]) for q in queries]

    gen = Gen()
    retriever = HybridRetriever(
        [BM25Retriever(backend="numpy"), DenseRetriever(bow_encoder, backend="numpy")]
    )
    retriever.index(bench.corpus)
    sel = meteora_selections(bench, ['q4'], generator=gen, retriever=retriever, n_rationales=2, generation={'max_new_tokens': 16}, scorer=None, settings=SelectorSettings(window=1))
    assert {"d4-0", "d4-1", "d4-2"} <= set(sel["q4"])  # expansion pulls in the neighbours
    assert (
        gen.kwargs["n"] == 2
        and gen.kwargs["include_query"] is True
        and gen.kwargs["max_new_tokens"] == 16
    )


def test_to_markdown(bench):
    res = evaluate_qa(FakeReader(), bench, conditions=("none", "gold"), answer_mode="generate")
    md = to_markdown(res)
    lines = md.splitlines()
    assert lines[2].startswith("| condition | accuracy | macro-F1")
    assert lines[4].startswith("| none | 0.667 |") and lines[5].startswith("| gold | 0.667 |")
    with pytest.raises(InvalidInputError):
        to_markdown({"nope": 1})


# --------------------------------------------------------------------------- the trained reader's prompt


def test_alpaca_prompt_format_loglik_generate_and_next_token(bench):
    from meteora.evaluation.reader import build_reader_prompt

    scorer = ScriptedScorer({"q3": "no", "q4": "Maybe", "q5": "yes"})
    res = evaluate_qa(
        object(), bench, conditions=("none", "gold"), scorer=scorer, prompt_format="alpaca", keep_predictions=True
    )
    assert res["prompt_format"] == "alpaca" and res["chat"] is False and res["max_context_chars"] == 2000
    assert res["predictions"]["gold"] == {"q3": "no", "q4": "maybe", "q5": "yes"}
    prompts, conts, special = scorer.calls[0]
    # the prompt ends in "### Response:\n", so labels are scored without a leading space
    assert conts == ["yes", "Yes", "no", "No", "maybe", "Maybe"] and special is True
    assert prompts[0] == build_reader_prompt(bench.queries["q3"], [])[0]
    gold_prompts = scorer.calls[-1][0]
    assert all(p.startswith("### Instruction:\n") and "Context:\n[1] " in p for p in gold_prompts)
    # generation: raw prompts, no chat template, no "Answer:" cue
    reader = FakeReader(answers={"q3": "yes", "q4": "No."})  # gold: q3 yes, q4 no, q5 yes
    gen = evaluate_qa(reader, bench, conditions=("gold",), answer_mode="generate", prompt_format="alpaca")
    assert reader.calls[0]["chat"] is False and all(p.endswith("### Response:\n") for p in reader.prompts)
    assert gen["conditions"]["gold"]["accuracy"] == 1.0
    assert gen["conditions"]["gold"]["confusion"]["no"]["no"] == 1
    # next-token (a server): the raw prompt is sent as it is
    lm = NextTokenLM({"q3": {"yes": -0.1}, "q4": {"no": -0.1}, "q5": {"Yes": -0.1}})
    nt = evaluate_qa(lm, bench, conditions=("none",), prompt_format="alpaca", keep_predictions=True)
    assert isinstance(lm.calls[0][0][0], str) and lm.calls[0][0][0].endswith("### Response:\n")
    assert nt["conditions"]["none"]["accuracy"] == 1.0
    with pytest.raises(InvalidInputError, match="prompt_format"):
        evaluate_qa(object(), bench, conditions=("none",), scorer=scorer, prompt_format="chatml")
    with pytest.raises(InvalidInputError, match="chat template"):
        evaluate_qa(object(), bench, conditions=("none",), scorer=scorer, prompt_format="alpaca", chat=True)


def test_context_tokens_are_counted_with_the_readers_tokenizer(bench):
    class Tok:  # one token per whitespace word
        chat_template = None

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": text.split()}

    class Reader:
        tokenizer = Tok()
        model = None

    scorer = ScriptedScorer({"q3": "no", "q4": "maybe", "q5": "yes"})
    res = evaluate_qa(
        Reader(), bench, conditions=("none", "gold"), scorer=scorer, prompt_format="alpaca",
        max_context_chars=30,
    )
    assert res["conditions"]["none"]["mean_context_tokens"] == 0.0
    gold = res["conditions"]["gold"]["mean_context_tokens"]
    assert 0 < gold <= 8  # the 30-character cap bites: a few words of the first chunk
    assert "| gold |" in to_markdown(res) and f"| {gold:.0f} |" in to_markdown(res)


def test_confusion_matrix_and_paired_bootstrap():
    from meteora.evaluation.reader import confusion_matrix, paired_bootstrap_accuracy

    gold = ["yes", "no", "maybe", "no"]
    m = qa_metrics(gold, ["yes", "yes", "maybe", UNPARSED])
    assert m["confusion"]["no"] == {"yes": 1, "no": 0, "maybe": 0, UNPARSED: 1}
    assert sum(sum(row.values()) for row in m["confusion"].values()) == 4
    with pytest.raises(InvalidInputError):
        confusion_matrix(["yes"], ["yes", "no"])
    gold = ["yes", "no"] * 50
    better = list(gold)
    worse = ["yes"] * 100
    r = paired_bootstrap_accuracy(gold, better, worse, resamples=300)
    assert r["difference"] == 0.5 and r["ci95"][0] > 0.3 and r["share_not_better"] == 0.0
    same = paired_bootstrap_accuracy(gold, worse, worse, resamples=50)
    assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0]
