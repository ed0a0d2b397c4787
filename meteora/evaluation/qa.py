"""PubMedQA answer accuracy of a reader LM: the end-to-end RAG number.

A *reader* (any object with ``.complete(prompts, ...)``, e.g. a
:class:`~meteora.rationales.RationaleGenerator`) answers each PubMedQA question with
``yes``, ``no`` or ``maybe`` under several context *conditions*:

``none``
    the question alone (what the model knows);
``gold``
    the question's own abstract (every chunk judged relevant in the ``"abstract"``
    qrels view, in document order) — the upper bound;
``meteora``
    the chunks METEORA selects from the candidate pool; the caller passes them in
    ``selections={"meteora": {qid: [pid, ...]}}`` (see :func:`meteora_selections`);
``fixed-k``
    the top ``k`` chunks of a hybrid (BM25 + dense) retriever, taken from
    ``selections["fixed-k"]`` when given, else retrieved here (:func:`fixed_k_selections`).

The selections are built by :mod:`meteora.evaluation.selections` (:func:`build_retriever`,
:func:`candidate_pools`, :func:`fixed_k_selections`, :func:`meteora_selections`).

Any other condition name is read from ``selections`` as well, so variants
(``"meteora-query-only"``, ``"meteora-dpo"``...) sit in the same table.

Two answer modes:

``answer_mode="loglik"`` (default)
    constrained scoring: the prompt ends with ``Answer:`` and each label is scored by
    the log-probability the LM gives its continuation (``" yes"`` / ``" Yes"``, ...; the
    spellings of a label are pooled with log-sum-exp). The best label wins, so every
    answer is valid. The right choice for a small model such as SmolLM2-135M, which
    often writes anything but a one-word answer. ``calibrate=True`` adds contextual
    calibration (the label prior on content-free prompts is divided out).

    The reader runs on the :mod:`meteora.lm` protocol. Scores are exact
    (``scoring="exact"`` in the result) when its LM has ``supports_loglik``
    (transformers: ``lm.score``) or a transformers copy of the same weights (the
    offline default on llama.cpp: :class:`LoglikScorer` on ``reader.model``). Otherwise
    — another GGUF on llama.cpp, or an OpenAI-compatible server that returns logprobs
    — each label is scored by the log-probability of the answer's *first token*
    (``scoring="next-token"``, :func:`next_token_label_scores`): the ``top_k=20`` most
    likely next tokens are pooled per label by ``token.strip().lower()``; a label not
    among them gets ``-inf``, and a question none of whose labels is among them counts
    as unparsed.
``answer_mode="generate"``
    greedy generation of ``max_new_tokens`` tokens; the first ``yes``/``no``/``maybe``
    word of the output is the answer (:func:`parse_answer`), anything else is
    ``"unparsed"`` — counted wrong, and counted separately.

Metrics (:func:`qa_metrics`): accuracy, macro-F1 over yes/no/maybe, per-label F1, the
label distribution of the predictions, the unparsed count, ``n`` and the seconds spent.

Example:
    >>> from meteora.datasets.pubmedqa import build_pubmedqa_benchmark  # doctest: +SKIP
    >>> from meteora.rationales import RationaleGenerator              # doctest: +SKIP
    >>> bench = build_pubmedqa_benchmark()                              # doctest: +SKIP
    >>> reader = RationaleGenerator.from_pretrained()                   # doctest: +SKIP
    >>> retriever = build_retriever(bench)                              # doctest: +SKIP
    >>> qids = bench.query_ids("test")                                   # doctest: +SKIP
    >>> sel = {"meteora": meteora_selections(bench, qids, retriever=retriever)}  # doctest: +SKIP
    >>> result = evaluate_qa(reader, bench, selections=sel, retriever=retriever)  # doctest: +SKIP
    >>> print(to_markdown(result))                                      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.evaluation.reader import (
    ANSWER_CUE,
    LABELS,
    PROMPT_FORMATS,
    READER_MAX_CONTEXT_CHARS,
    UNPARSED,
    _has_torch_copy,
    _loglik_label_scores,
    _reader_lm,
    _use_chat,
    build_qa_message,
    build_reader_prompt,
    cap_contexts,
    label_scores,
    next_token_label_scores,
    parse_answer,
    qa_metrics,
)
from meteora.evaluation.selections import (
    fixed_k_selections,
)
from meteora.lm.scoring import LoglikScorer

__all__ = ["BUILTIN_CONDITIONS", "ANSWER_MODES", "evaluate_qa"]

logger = logging.getLogger(__name__)

BUILTIN_CONDITIONS: tuple[str, ...] = ("none", "gold", "fixed-k")
ANSWER_MODES: tuple[str, ...] = ("loglik", "generate")

#: Content-free questions/contexts used by ``calibrate=True``.
CONTENT_FREE: tuple[str, ...] = ("N/A", "[MASK]")


# --------------------------------------------------------------------------- evaluation


def _gold_contexts(benchmark: Any, qid: str, view: str) -> list[str]:
    rels = benchmark.qrels.get(view, {}).get(qid)
    if rels:
        passages = [benchmark.passage(pid) for pid, r in rels.items() if r >= 1]
    else:
        try:
            passages = benchmark.doc_passages(qid)
        except InvalidInputError:
            passages = []
    passages.sort(key=lambda p: (p.doc_id, p.position))
    return [p.text for p in passages]


def _check_split_qids(benchmark: Any, split: str, limit: int | None) -> list[str]:
    qids = benchmark.query_ids(split, limit)
    if split == "test" and "train" in benchmark.splits:
        leak = set(qids) & set(benchmark.splits["train"])
        if leak:
            raise InvalidInputError(
                f"{len(leak)} questions are in both the test and the train split (e.g. {sorted(leak)[:3]}); "
                "the benchmark's splits are wrong, rebuild it"
            )
    missing = [
        q
        for q in qids
        if q not in benchmark.answers or "final_decision" not in benchmark.answers[q]
    ]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} questions of split {split!r} have no final_decision answer (e.g. {missing[:3]}); "
            "QA evaluation needs a benchmark with answers (build_pubmedqa_benchmark)"
        )
    return qids


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return value


def evaluate_qa(
    reader: Any,
    benchmark: Any,
    *,
    split: str = "test",
    conditions: Sequence[str] = ("none", "gold", "meteora", "fixed-k"),
    k: int = 3,
    limit: int | None = None,
    selections: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    retriever: Any = None,
    answer_mode: str = "loglik",
    scorer: Callable[..., np.ndarray] | None = None,
    chat: bool | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 8,
    max_context_chars: int | None | str = "auto",
    gold_view: str = "abstract",
    prompt_format: str = "harness",
    calibrate: bool = False,
    keep_predictions: bool = False,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """PubMedQA answer accuracy of ``reader`` under each context condition.

    Args:
        reader: an object with ``.complete(prompts, *, max_new_tokens, chat, batch_size)``
            (``"generate"`` mode) and, for ``"loglik"`` mode, a :mod:`meteora.lm` model
            (``.lm``, or the reader itself) or ``.model`` + ``.tokenizer``; a
            :class:`~meteora.rationales.RationaleGenerator` on any backend works (see the
            module docstring for exact vs next-token scores).
        benchmark: a :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark` with answers.
        split: which questions (``"test"``: the 500 official test questions; never the
            train ones).
        conditions: ``"none"``, ``"gold"``, ``"fixed-k"`` are built in; every other name
            (``"meteora"``...) is read from ``selections``.
        k: contexts of the ``"fixed-k"`` condition.
        limit: evaluate the first ``limit`` questions of the split.
        selections: ``{condition: {qid: [passage_id, ...]}}``; contexts are given to the
            reader in that order. Needed for every non-built-in condition; optional for
            ``"fixed-k"`` (otherwise retrieved with ``retriever``).
        retriever: the retriever of ``"fixed-k"`` (``None``: a new hybrid BM25 + dense).
        answer_mode: ``"loglik"`` (default) or ``"generate"`` (see the module docstring).
        scorer: loglik only: ``scorer(prompts, continuations, add_special_tokens=...)``
            returning log-probabilities ``(len(prompts), len(continuations))``; default
            the reader LM's ``score`` (exact backends), else :class:`LoglikScorer` on
            the reader's transformers model, else next-token log-probabilities.
        chat: render prompts with the reader's chat template (``None``: when it has one).
        batch_size: prompts per forward batch.
        max_new_tokens: generation cap in ``"generate"`` mode.
        max_context_chars: cap on the context text per prompt (``None``: no cap;
            ``"auto"``: 6000 characters for the harness prompt, 2000
            (``READER_MAX_CONTEXT_CHARS``) for the Alpaca prompt, what the trained reader
            saw in training).
        gold_view: the qrels view whose relevant passages are the ``"gold"`` contexts.
        calibrate: loglik only: contextual calibration (Zhao et al., 2021, "Calibrate
            before use"). The label distribution the reader gives content-free prompts
            (question and context ``"N/A"`` / ``"[MASK]"``, same layout as the
            condition) is averaged, and each answer's label log-probabilities are
            shifted by minus its log. Counters a small model's bias towards one label
            (SmolLM2 says "yes" to nearly everything); the offsets are reported.
        prompt_format: ``"harness"`` (:func:`build_qa_message`, through the reader's chat
            template, ending in ``Answer:``) or ``"alpaca"`` (:func:`build_reader_prompt`:
            the raw-text Alpaca layout a reader from ``meteora train reader`` was trained
            on; never chat-rendered, answers scored right after ``### Response:``).
        keep_predictions: also return ``{condition: {qid: label}}`` under ``"predictions"``
            and, in loglik mode, the raw yes/no/maybe log-probabilities (before any
            calibration offset) ``{condition: {qid: [yes, no, maybe]}}`` under
            ``"label_scores"``, so other decision rules can be applied afterwards.
        show_progress: tqdm bar over conditions × batches (``None``: when logging is at
            INFO or lower).

    Returns:
        ``{"split", "n_questions", "answer_mode", "k", "reader", "gold_distribution",
        "conditions": {name: {accuracy, macro_f1, f1_per_label, predicted_distribution,
        unparsed, n, seconds, seconds_per_question, mean_contexts, truncated_prompts}}}``
        (plus ``"calibration"``, the content-free label distribution, per condition
        with ``calibrate``; ``"predictions"`` with ``keep_predictions``; ``"scoring"``:
        ``"exact"`` or ``"next-token"`` in loglik mode).

    Raises:
        InvalidInputError: unknown split or mode, a condition with no selections, a
            selection missing a question, or a bad argument.

    Example:
        >>> res = evaluate_qa(gen, bench, limit=20, conditions=("none", "gold"))  # doctest: +SKIP
        >>> res["conditions"]["gold"]["accuracy"]  # doctest: +SKIP
        0.6
    """
    if prompt_format not in PROMPT_FORMATS:
        raise InvalidInputError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
    alpaca = prompt_format == "alpaca"
    if max_context_chars == "auto":
        max_context_chars = READER_MAX_CONTEXT_CHARS if alpaca else 6000
    if alpaca and chat:
        raise InvalidInputError(
            "prompt_format='alpaca' is a raw-text prompt; it cannot go through a chat template (chat=True)"
        )
    if answer_mode not in ANSWER_MODES:
        raise InvalidInputError(f"answer_mode must be one of {ANSWER_MODES}, got {answer_mode!r}")
    if calibrate and answer_mode != "loglik":
        raise InvalidInputError(
            "calibrate=True needs answer_mode='loglik' (it shifts label log-probabilities)"
        )
    if isinstance(conditions, str):
        conditions = (conditions,)
    conditions = list(dict.fromkeys(conditions))
    if not conditions:
        raise InvalidInputError("conditions is empty; ask for at least one, e.g. ('none', 'gold')")
    _check_positive("k", k)
    _check_positive("batch_size", batch_size)
    _check_positive("max_new_tokens", max_new_tokens)
    selections = dict(selections or {})
    for cond in conditions:
        if not isinstance(cond, str) or not cond:
            raise InvalidInputError(f"condition names must be non-empty strings, got {cond!r}")
        if cond not in BUILTIN_CONDITIONS and cond not in selections:
            hint = (
                " (compute them with meteora_selections(...))" if cond.startswith("meteora") else ""
            )
            raise InvalidInputError(
                f"condition {cond!r} needs selections[{cond!r}] = {{qid: [passage_id, ...]}}{hint}; "
                f"built-in conditions are {BUILTIN_CONDITIONS}"
            )
    qids = _check_split_qids(benchmark, split, limit)
    gold = [str(benchmark.answers[q]["final_decision"]).lower() for q in qids]
    bad = sorted({g for g in gold if g not in LABELS})
    if bad:
        raise InvalidInputError(f"final_decision values {bad} are not yes/no/maybe")

    tokenizer = getattr(reader, "tokenizer", None)
    scoring: str | None = None
    next_token_lm: Any = None
    if answer_mode == "loglik":
        scoring = "custom" if scorer is not None else "exact"
        lm = _reader_lm(reader) if scorer is None else None
        if scorer is None and lm is not None and getattr(lm, "supports_loglik", False):
            scorer = lm.score
            tokenizer = tokenizer if tokenizer is not None else getattr(lm, "tokenizer", None)
        elif scorer is None and lm is not None and not _has_torch_copy(reader):
            next_token_lm, scoring = lm, "next-token"
            logger.info(
                "reader %s (%s) has no exact log-likelihoods: labels are scored by next-token log-probabilities",
                _reader_name(reader),
                getattr(lm, "backend", "?"),
            )
        elif scorer is None:
            scorer = LoglikScorer.from_reader(reader, batch_size=batch_size)
        # llama.cpp and servers render chat prompts themselves: no local template needed
        use_chat = (True if chat is None else bool(chat)) if next_token_lm is not None else _use_chat(tokenizer, chat)
        if alpaca:
            use_chat = False
    else:
        if not hasattr(reader, "complete"):
            raise InvalidInputError(
                f"answer_mode='generate' needs a reader with .complete(); {type(reader).__name__} has none"
            )
        use_chat = False if alpaca else _use_chat(tokenizer, chat) if tokenizer is not None else bool(chat)

    if "fixed-k" in conditions and "fixed-k" not in selections:
        selections["fixed-k"] = fixed_k_selections(benchmark, qids, retriever=retriever, k=k)

    if show_progress is None:
        show_progress = logger.getEffectiveLevel() <= logging.INFO
    from tqdm.auto import tqdm

    n_batches = math.ceil(len(qids) / batch_size) if qids else 0
    bar = tqdm(
        total=n_batches * len(conditions),
        desc="pubmedqa qa",
        unit="batch",
        disable=not show_progress,
    )
    per_condition: dict[str, dict[str, Any]] = {}
    predictions: dict[str, dict[str, str]] = {}
    raw_scores: dict[str, dict[str, list[float]]] = {}

    def batch_scores(batch: list[str]) -> np.ndarray:
        if next_token_lm is not None:
            return next_token_label_scores(next_token_lm, batch, chat=use_chat, raw=alpaca)
        if alpaca:
            return label_scores(scorer, batch, add_special_tokens=True)
        return _loglik_label_scores(scorer, batch, tokenizer, use_chat)

    def message(question: str, ctx: Sequence[str]) -> tuple[str, bool]:
        if alpaca:
            return build_reader_prompt(question, ctx, max_context_chars=max_context_chars)
        return build_qa_message(question, ctx, max_context_chars=max_context_chars)

    count_tok = tokenizer if tokenizer is not None else getattr(_reader_lm(reader), "tokenizer", None)

    try:
        for cond in conditions:
            t0 = time.perf_counter()
            contexts = _contexts_for(cond, qids, benchmark, selections, gold_view, k)
            messages: list[str] = []
            truncated = 0
            for q, ctx in zip(qids, contexts, strict=True):
                msg, cut = message(benchmark.queries[q], ctx)
                messages.append(msg)
                truncated += int(cut)
            preds: list[str] = []
            raw_rows: list[list[float]] = []
            offset = np.zeros(len(LABELS))
            p_cf = None
            if calibrate:
                with_context = any(contexts)
                free = [
                    message(cf, [cf] if with_context else [])[0] for cf in CONTENT_FREE
                ]
                cf_scores = batch_scores(free)
                if next_token_lm is not None:
                    cf_scores = _floor_missing(cf_scores)
                cf_probs = np.exp(cf_scores - np.logaddexp.reduce(cf_scores, axis=1, keepdims=True))
                p_cf = cf_probs.mean(axis=0)
                offset = np.log(np.maximum(p_cf, 1e-300))
            for start in range(0, len(messages), batch_size):
                batch = messages[start : start + batch_size]
                if answer_mode == "loglik":
                    raw = batch_scores(batch)
                    raw_rows.extend(raw.tolist())
                    scores = raw - offset
                    preds.extend(
                        LABELS[int(np.argmax(row))] if np.isfinite(row).any() else UNPARSED
                        for row in scores
                    )
                else:
                    prompts = batch if use_chat or alpaca else [m + "\n" + ANSWER_CUE for m in batch]
                    texts = reader.complete(
                        prompts, max_new_tokens=max_new_tokens, chat=use_chat, batch_size=batch_size
                    )
                    if len(texts) != len(prompts):
                        raise InvalidInputError(
                            f"reader.complete returned {len(texts)} texts for {len(prompts)} prompts"
                        )
                    preds.extend(parse_answer(t) for t in texts)
                bar.update(1)
            seconds = time.perf_counter() - t0
            m = qa_metrics(gold, preds)
            m.pop("gold_distribution")
            m.update(
                seconds=seconds,
                seconds_per_question=seconds / len(qids) if qids else 0.0,
                mean_contexts=float(np.mean([len(c) for c in contexts])) if contexts else 0.0,
                mean_context_tokens=_mean_context_tokens(count_tok, contexts, max_context_chars),
                truncated_prompts=truncated,
            )
            if p_cf is not None:
                m["calibration"] = {lab: float(v) for lab, v in zip(LABELS, p_cf, strict=True)}
            per_condition[cond] = m
            predictions[cond] = dict(zip(qids, preds, strict=True))
            if raw_rows:
                raw_scores[cond] = dict(zip(qids, raw_rows, strict=True))
            logger.info(
                "qa %s: accuracy %.3f, macro-F1 %.3f (%d questions, %.1fs)",
                cond,
                m["accuracy"],
                m["macro_f1"],
                len(qids),
                seconds,
            )
    finally:
        bar.close()

    result: dict[str, Any] = {
        "split": split,
        "n_questions": len(qids),
        "answer_mode": answer_mode,
        "calibrated": bool(calibrate),
        **({"scoring": scoring} if scoring else {}),
        "chat": use_chat,
        "prompt_format": prompt_format,
        "max_context_chars": max_context_chars,
        "k": k,
        "reader": _reader_name(reader),
        "gold_distribution": {lab: gold.count(lab) for lab in LABELS},
        "conditions": per_condition,
    }
    if keep_predictions:
        result["predictions"] = predictions
        if raw_scores:
            result["label_scores"] = raw_scores
    return result


def _mean_context_tokens(
    tokenizer: Any, contexts: Sequence[Sequence[str]], max_chars: int | None
) -> float | None:
    """Mean number of context tokens the reader is fed (after the character cap), counted
    with the reader's tokenizer; ``None`` when the reader has no local tokenizer."""
    if tokenizer is None or not contexts:
        return None
    counts = []
    for ctx in contexts:
        kept, _ = cap_contexts(ctx, max_chars)
        text = "\n".join(kept)
        counts.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0)
    return float(np.mean(counts))


def _floor_missing(scores: np.ndarray, floor: float = math.log(1e-6)) -> np.ndarray:
    """Content-free next-token scores with labels outside the top tokens (``-inf``) set
    to ``floor``, so calibration never divides by a zero prior."""
    return np.where(np.isfinite(scores), scores, floor)


def _contexts_for(
    cond: str,
    qids: list[str],
    benchmark: Any,
    selections: Mapping[str, Mapping[str, Sequence[str]]],
    gold_view: str,
    k: int,
) -> list[list[str]]:
    if cond == "none":
        return [[] for _ in qids]
    if cond == "gold":
        return [_gold_contexts(benchmark, q, gold_view) for q in qids]
    sel = selections[cond]
    missing = [q for q in qids if q not in sel]
    if missing:
        raise InvalidInputError(
            f"selections[{cond!r}] has no entry for {len(missing)} of the evaluated questions (e.g. {missing[:3]}); "
            "compute it for the same split and limit"
        )
    out = []
    for q in qids:
        ids = sel[q]
        if isinstance(ids, str):
            raise InvalidInputError(
                f"selections[{cond!r}][{q!r}] must be a list of passage ids, got a str"
            )
        ids = list(ids)
        if cond == "fixed-k":
            ids = ids[:k]
        out.append([benchmark.passage(str(pid)).text for pid in ids])
    return out


def _reader_name(reader: Any) -> str:
    for attr in ("model_id", "name"):
        value = getattr(reader, attr, None)
        if isinstance(value, str) and value:
            adapter = getattr(reader, "adapter_id", None)
            return f"{value} + {adapter}" if adapter else value
    return type(reader).__name__
