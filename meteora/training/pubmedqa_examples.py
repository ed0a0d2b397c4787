"""PubMedQA PQA-L questions as training examples: Alpaca QA pairs and CoT pairs.

Only the train side is ever used: the 500 official test questions (listed in
``test_ground_truth.json``) are refused, whether asked for by split or by id.

* :func:`pubmedqa_alpaca_examples` — question → ``"yes. <long answer>"`` in the Alpaca layout.
* :func:`cot_examples` — the same questions for chat-template CoT models:
  ``<think>…</think>`` then the answer.

Example:
    >>> import json, pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> q = {"QUESTION": "Does aspirin help?", "CONTEXTS": ["A trial."],
    ...      "final_decision": "yes", "LONG_ANSWER": "It helped."}
    >>> _ = (d / "ori_pqal.json").write_text(json.dumps({"1": q, "2": q}))
    >>> _ = (d / "test_ground_truth.json").write_text(json.dumps({"2": "yes"}))
    >>> [(e["id"], e["completion"]) for e in pubmedqa_alpaca_examples(d)]
    [('1', 'yes. It helped.')]
    >>> cot_examples(d)[0]["completion"]
    '<think>\\nIt helped.\\n</think>\\n\\nyes'
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meteora.errors import DataNotFoundError, InvalidInputError, TrainingDataError
from meteora.rationales.templates import PromptTemplate, get_template
from meteora.settings import data_dir

__all__ = [
    "PUBMEDQA_QA_INSTRUCTION",
    "PUBMEDQA_ALPACA",
    "pubmedqa_alpaca_examples",
    "cot_examples",
]

#: Instruction of the PubMedQA QA prompt (Alpaca layout).
PUBMEDQA_QA_INSTRUCTION = (
    "Answer the biomedical research question below with yes, no or maybe, then give the conclusion "
    "that supports the answer."
)

#: The Alpaca-layout template for PubMedQA QA (``### Instruction / ### Input / ### Response``).
PUBMEDQA_ALPACA: PromptTemplate = get_template("alpaca").with_options(
    name="pubmedqa-alpaca", instruction=PUBMEDQA_QA_INSTRUCTION, max_new_tokens=160
)


@dataclass(frozen=True)
class _PubMedQARecord:
    pmid: str
    question: str
    contexts: tuple[str, ...]
    decision: str
    long_answer: str


def _pubmedqa_files(source: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    base = data_dir("pubmedqa") if source is None else Path(source).expanduser()
    if base.is_dir():
        ori, test = base / "ori_pqal.json", base / "test_ground_truth.json"
    else:
        ori, test = base, base.parent / "test_ground_truth.json"
    if not ori.is_file():
        raise DataNotFoundError(
            f"PubMedQA file {str(ori)!r} not found; pass the pubmedqa folder or ori_pqal.json"
        )
    if not test.is_file():
        raise DataNotFoundError(
            f"PubMedQA test id list {str(test)!r} not found; it is needed to keep the 500 test questions out of "
            "training data (put test_ground_truth.json next to ori_pqal.json)"
        )
    return ori, test


def _records_from_benchmark(bench: Any, ids: Iterable[str] | None) -> list[_PubMedQARecord]:
    """Train-side records of a :class:`meteora.datasets.pubmedqa.RetrievalBenchmark`."""
    splits = getattr(bench, "splits", {}) or {}
    if "test" not in splits or "train" not in splits:
        raise InvalidInputError(
            "this benchmark has no 'test'/'train' splits (its test_ground_truth.json was missing), so the test "
            "questions cannot be kept out of training data; rebuild it with the test ids"
        )
    test_ids = set(splits["test"])
    chosen = list(splits["train"]) if ids is None else [str(k) for k in ids]
    _refuse_test_ids(chosen, test_ids)
    answers = getattr(bench, "answers", {}) or {}
    records = []
    for pmid in chosen:
        if pmid not in bench.queries or pmid not in answers:
            raise InvalidInputError(f"question {pmid!r} is not in the benchmark (or has no answer)")
        ans = answers[pmid]
        contexts = (
            tuple(p.text for p in bench.doc_passages(pmid))
            if hasattr(bench, "doc_passages")
            else ()
        )
        records.append(
            _record(
                pmid,
                bench.queries[pmid],
                contexts,
                ans.get("final_decision"),
                ans.get("long_answer"),
                "benchmark",
            )
        )
    return records


def _refuse_test_ids(chosen: Sequence[str], test_ids: set[str]) -> None:
    leaked = sorted(k for k in chosen if k in test_ids)
    if leaked:
        raise InvalidInputError(
            f"{len(leaked)} of the requested ids are PubMedQA test questions (e.g. {leaked[:5]}); "
            "test questions must never be used for training"
        )


def _record(
    pmid: str, question: Any, contexts: Sequence[Any], decision: Any, long_answer: Any, where: str
) -> _PubMedQARecord:
    d = str(decision or "").strip().lower()
    if d not in ("yes", "no", "maybe"):
        raise TrainingDataError(
            f"{where}: question {pmid} has final_decision {d!r}, not yes/no/maybe"
        )
    return _PubMedQARecord(
        pmid=pmid,
        question=" ".join(str(question).split()),
        contexts=tuple(str(c) for c in contexts),
        decision=d,
        long_answer=" ".join(str(long_answer or "").split()),
    )


def _pubmedqa_train_records(
    source: Any, split: str, ids: Iterable[str] | None
) -> list[_PubMedQARecord]:
    if split not in ("train",):
        raise InvalidInputError(
            f"split must be 'train' (the 500 non-test PQA-L questions), got {split!r}; the official test "
            "questions are never used for training"
        )
    if source is not None and not isinstance(source, (str, os.PathLike)):
        if hasattr(source, "queries") and hasattr(source, "splits"):
            return _records_from_benchmark(source, ids)
        raise InvalidInputError(
            f"expected a PubMedQA benchmark, the pubmedqa folder or the path of ori_pqal.json, "
            f"got {type(source).__name__}"
        )
    ori, test = _pubmedqa_files(source)
    with open(ori, encoding="utf-8") as fh:
        raw = json.load(fh)
    with open(test, encoding="utf-8") as fh:
        test_ids = set(json.load(fh))
    if ids is None:
        chosen = [k for k in raw if k not in test_ids]
    else:
        chosen = [str(k) for k in ids]
        _refuse_test_ids(chosen, test_ids)
        missing = [k for k in chosen if k not in raw]
        if missing:
            raise InvalidInputError(
                f"{len(missing)} requested ids are not in {ori.name} (e.g. {missing[:5]})"
            )
    return [
        _record(
            pmid,
            raw[pmid]["QUESTION"],
            raw[pmid].get("CONTEXTS", []),
            raw[pmid].get("final_decision"),
            raw[pmid].get("LONG_ANSWER"),
            ori.name,
        )
        for pmid in chosen
    ]


def _qa_input(rec: _PubMedQARecord, with_contexts: bool) -> str:
    if not with_contexts or not rec.contexts:
        return rec.question
    ctx = "\n".join(rec.contexts)
    return f"Context:\n{ctx}\n\nQuestion: {rec.question}"


def pubmedqa_alpaca_examples(
    benchmark_or_path: Any = None,
    split: str = "train",
    *,
    with_contexts: bool = False,
    ids: Iterable[str] | None = None,
) -> list[dict[str, str]]:
    """PubMedQA PQA-L questions as Alpaca-layout ``{"prompt", "completion", "id"}`` pairs.

    The completion is ``"<yes|no|maybe>. <long answer>"``. Only the train side (the 500
    questions not in ``test_ground_truth.json``) is ever used.

    Args:
        benchmark_or_path: a :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark` from
            ``build_pubmedqa_benchmark`` (its ``train`` split), the ``pubmedqa`` folder, the
            path of ``ori_pqal.json``, or ``None`` for the configured data folder.
        split: must be ``"train"``.
        with_contexts: put the abstract's context chunks before the question.
        ids: restrict to these PMIDs (e.g. a train/dev fold).

    Raises:
        InvalidInputError: ``split`` is not ``"train"`` or any requested id is a test id.

    Example:
        >>> ex = pubmedqa_alpaca_examples()  # doctest: +SKIP
        >>> ex[0]["prompt"].startswith("### Instruction:")  # doctest: +SKIP
        True
    """
    records = _pubmedqa_train_records(benchmark_or_path, split, ids)
    out = []
    for rec in records:
        prompt = PUBMEDQA_ALPACA.render(_qa_input(rec, with_contexts))
        completion = f"{rec.decision}. {rec.long_answer}".strip()
        out.append({"id": rec.pmid, "prompt": prompt, "completion": completion})
    return out


def cot_examples(
    benchmark_or_path: Any = None,
    split: str = "train",
    *,
    tokenizer: Any = None,
    with_contexts: bool = False,
    ids: Iterable[str] | None = None,
    system: str | None = None,
) -> list[dict[str, Any]]:
    """PubMedQA questions in the CoT format: ``<think>reasoning</think>`` then the answer.

    The reasoning is the abstract's conclusion (``LONG_ANSWER``) and the answer is
    ``yes``/``no``/``maybe``. With a ``tokenizer`` that has a chat template the prompt is
    rendered to text (generation prompt included); without one the prompt is a list of
    chat messages (``build_sft_features`` renders it at training time).

    Example:
        >>> ex = cot_examples()  # doctest: +SKIP
        >>> ex[0]["completion"].startswith("<think>")  # doctest: +SKIP
        True
    """
    records = _pubmedqa_train_records(benchmark_or_path, split, ids)
    out: list[dict[str, Any]] = []
    for rec in records:
        user = (
            "Answer the biomedical research question with yes, no or maybe. Think step by step inside "
            f"<think></think> first.\n\n{_qa_input(rec, with_contexts)}"
        )
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        completion = f"<think>\n{rec.long_answer}\n</think>\n\n{rec.decision}"
        prompt: Any = messages
        if tokenizer is not None:
            if not getattr(tokenizer, "chat_template", None):
                raise InvalidInputError(
                    "cot_examples needs a tokenizer with a chat template (or tokenizer=None)"
                )
            prompt = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        out.append({"id": rec.pmid, "prompt": prompt, "completion": completion})
    return out
