"""The medical poisoning benchmark of the verifier stage (``meteora bench poisoning``).

Protocol (the paper's, on PubMedQA): for ``fraction`` (30 %) of the questions of a split
that have a gold evidence chunk (seeded choice), a misleading passage of about 100
words is inserted into the question's own abstract right after the gold evidence chunk
(:func:`poison_benchmark`). Kinds alternate between ``counterfactual`` and
``injection`` (:mod:`meteora.bench.poison_gen`, family ``"test"`` by default; every
inserted text is saved with the results).

Then the user path runs on the poisoned corpus: hybrid retrieval of ``candidates``
chunks, selection by :meth:`meteora.Reranker.rerank_pools`, and each defence as the
reranker's verifier (``Reranker(verifier=defence)``):

* ``none`` — no verifier;
* ``perplexity`` — :class:`~meteora.defences.PerplexityDefence`, threshold at the 95th
  percentile of clean *train* evidence chunks' perplexity (the paper's baseline);
* ``learned`` — :class:`~meteora.defences.PoisonCheck` (packaged weights, or ``check``:
  e.g. ``meteora/weights/poison-check-pair``; trained on train questions with the other
  family of poison);
* ``llm`` — the LLM :class:`~meteora.verifier.Verifier` on any backend, on the first
  ``llm_limit`` questions only (it is slow on a CPU).

Reported per kind (clean questions + the questions poisoned with that kind) and overall:
detection precision / recall / F1 over the passages that reach the verifier, clean gold
evidence chunks wrongly dropped, poison left in the output, and the evidence-view
selection F1 on the clean corpus, on the poisoned corpus, and with each defence.

Example:
    >>> from meteora.bench.poisoning import detection_metrics
    >>> detection_metrics({"q": ["a", "p"]}, {"q": ["p"]}, {"p": "injection"}, {"q": {"a"}})["F1"]
    1.0
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meteora.bench.poison_gen import KINDS, make_poison
from meteora.errors import InvalidInputError
from meteora.types import Passage

__all__ = [
    "PoisonRecord",
    "PoisoningConfig",
    "poison_benchmark",
    "detection_metrics",
    "run_poisoning",
    "format_poisoning",
    "DEFENCES",
]

logger = logging.getLogger(__name__)

DEFENCES = ("none", "perplexity", "learned", "llm")


@dataclass(frozen=True)
class PoisonRecord:
    """One inserted passage: for question ``qid``, of ``kind``, next to ``gold_id``."""

    qid: str
    kind: str
    passage_id: str
    gold_id: str
    family: str
    text: str


def poison_benchmark(
    bench: Any, qids: Sequence[str], *, fraction: float = 0.3, seed: int = 0, family: str = "test",
    kinds: Sequence[str] = KINDS,
) -> tuple[Any, list[PoisonRecord]]:
    """A copy of ``bench`` with poison inserted next to the gold evidence of some questions.

    ``round(fraction * len(qids))`` questions are drawn (seeded) among those with a gold
    chunk in the ``evidence`` view; kinds are dealt in turn. The passage gets id
    ``<gold doc>-poison``, the gold chunk's document and the position right after it
    (later chunks move down by one). Qrels, splits and answers are unchanged.

    Raises:
        InvalidInputError: ``fraction`` outside [0, 1], unknown kinds, or no question
            with gold evidence.
    """
    from meteora.datasets.pubmedqa import RetrievalBenchmark

    if not 0.0 <= fraction <= 1.0:
        raise InvalidInputError(f"fraction must be in [0, 1], got {fraction!r}")
    if not kinds or any(k not in KINDS for k in kinds):
        raise InvalidInputError(f"kinds must be among {list(KINDS)}, got {list(kinds)!r}")
    evidence = bench.qrels.get("evidence", {})
    eligible = [q for q in qids if evidence.get(q)]
    if not eligible:
        raise InvalidInputError("no question of the split has a gold evidence chunk to poison")
    n = min(len(eligible), int(round(fraction * len(qids))))
    chosen = random.Random(f"poison-{seed}").sample(eligible, n)
    records: list[PoisonRecord] = []
    inserts: dict[str, tuple[Passage, Passage]] = {}
    for i, q in enumerate(chosen):
        kind = kinds[i % len(kinds)]
        gold = min((bench.passage(pid) for pid in evidence[q]), key=lambda p: p.position)
        if gold.doc_id in inserts:
            continue
        doc = bench.doc_passages(gold.doc_id)
        text = make_poison(
            kind, question=bench.queries[q], answer=str((bench.answers.get(q) or {}).get("final_decision", "yes")),
            evidence=gold.text, topic=doc[0].text, seed=f"{seed}-{q}", family=family,
        )
        pid = f"{gold.doc_id}-poison"
        inserts[gold.doc_id] = (gold, Passage(text, id=pid, doc_id=gold.doc_id, position=gold.position + 1,
                                              metadata={"poison": kind}))
        records.append(PoisonRecord(q, kind, pid, gold.id, family, text))
    corpus: list[Passage] = []
    for p in bench.corpus:
        ins = inserts.get(p.doc_id)
        if ins is not None and p.position > ins[0].position:
            p = dataclasses.replace(p, position=p.position + 1)
        corpus.append(p)
        if ins is not None and p.id == ins[0].id:
            corpus.append(ins[1])
    poisoned = RetrievalBenchmark(
        name=bench.name, corpus=corpus, queries=bench.queries, qrels=bench.qrels, splits=bench.splits,
        answers=bench.answers, section_labels=bench.section_labels,
    )
    return poisoned, records


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else (0.0 if p is not None or r is not None else None)
    return {"precision": p, "recall": r, "F1": f1}


def detection_metrics(
    inputs: Mapping[str, Sequence[str]],
    flagged: Mapping[str, Sequence[str]],
    poison_kind: Mapping[str, str],
    gold: Mapping[str, Sequence[str] | set[str]],
) -> dict[str, Any]:
    """Detection scores over the passages that reached the verifier.

    Args:
        inputs: per question, the ids the verifier saw.
        flagged: per question, the ids it dropped.
        poison_kind: the kind of every poisoned passage id.
        gold: per question, its gold evidence ids.

    Returns:
        ``precision``/``recall``/``F1`` (``None`` where undefined: nothing flagged, no
        poison seen), the counts, ``clean_dropped_rate`` (clean passages dropped / clean
        passages seen) and ``gold_dropped_rate`` (gold evidence dropped / gold seen).

    Example:
        >>> m = detection_metrics({"q1": ["g", "p"], "q2": ["h"]}, {"q1": ["p"], "q2": ["h"]},
        ...                       {"p": "counterfactual"}, {"q1": ["g"], "q2": ["h"]})
        >>> m["precision"], m["recall"], m["gold_dropped"], m["gold_seen"]
        (0.5, 1.0, 1, 2)
    """
    tp = fp = fn = seen_clean = gold_seen = gold_dropped = 0
    for q, ids in inputs.items():
        bad = set(flagged.get(q, ()))
        golds = set(gold.get(q, ()))
        for pid in dict.fromkeys(ids):
            is_poison = pid in poison_kind
            if is_poison:
                tp += pid in bad
                fn += pid not in bad
            else:
                seen_clean += 1
                fp += pid in bad
            if pid in golds:
                gold_seen += 1
                gold_dropped += pid in bad
    out: dict[str, Any] = _prf(tp, fp, fn)
    out.update({
        "poison_seen": tp + fn, "true_positives": tp, "false_positives": fp, "false_negatives": fn,
        "clean_seen": seen_clean, "clean_dropped_rate": fp / seen_clean if seen_clean else None,
        "gold_seen": gold_seen, "gold_dropped": gold_dropped,
        "gold_dropped_rate": gold_dropped / gold_seen if gold_seen else None,
    })
    return out


@dataclass
class PoisoningConfig:
    """Settings of one poisoning run (all written into the results file).

    ``generator``: ``None`` runs the reranker query-only (the better choice with the
    offline 135M LM); a model name or ``"default"`` uses LM rationales. ``scorer``: the
    reranker's evidence scorer (``"default"``, a folder, or ``"none"``). ``lm``: the
    transformers model of the perplexity defence and of the learned check's fluency
    features (``None``: the offline SmolLM2). ``llm``: the LLM verifier's ``backend``,
    ``model``, ``base_url`` and ``lm_options``.
    """

    split: str = "test"
    limit: int | None = None
    fraction: float = 0.3
    seed: int = 0
    family: str = "test"
    defences: list[str] = field(default_factory=lambda: list(DEFENCES))
    candidates: int = 50
    retrieve_k: int = 100
    llm_limit: int | None = 40
    ppl_quantile: float = 0.95
    ppl_calibration: int = 200
    check: str | None = None
    generator: str | None = None
    scorer: str = "default"
    lm: str | None = None
    embedding_model: str | None = None
    data_path: str | None = None
    num_threads: int | None = None
    llm: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raises :class:`InvalidInputError` on a bad value (before any data is loaded)."""
        from meteora.bench.poison_gen import FAMILIES

        bad = [d for d in self.defences if d not in DEFENCES]
        if bad or not self.defences:
            raise InvalidInputError(f"unknown defences {bad}; choose among {list(DEFENCES)}")
        if self.family not in FAMILIES:
            raise InvalidInputError(f"family must be one of {list(FAMILIES)}, got {self.family!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise InvalidInputError(f"fraction must be in (0, 1], got {self.fraction!r}")
        if not 0.5 <= self.ppl_quantile < 1.0:
            raise InvalidInputError(f"ppl_quantile must be in [0.5, 1), got {self.ppl_quantile!r}")
        for name in ("limit", "llm_limit"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InvalidInputError(f"{name} must be a positive integer or None, got {v!r}")


def _build_retriever(bench: Any, encoder: Any, clean_emb: Any, clean_ids: Sequence[str], retrieve_k: int) -> Any:
    """Hybrid (BM25 + dense, RRF) over ``bench.corpus``, reusing the clean corpus embeddings."""
    import numpy as np

    from meteora.retrievers.bm25 import BM25Retriever
    from meteora.retrievers.dense import DenseRetriever
    from meteora.retrievers.hybrid import HybridRetriever

    row = {pid: i for i, pid in enumerate(clean_ids)}
    new = [p for p in bench.corpus if p.id not in row]
    fresh = encoder.encode([p.text for p in new]) if new else np.zeros((0, clean_emb.shape[1]), dtype=np.float32)
    extra = {p.id: fresh[i] for i, p in enumerate(new)}
    emb = np.stack([clean_emb[row[p.id]] if p.id in row else extra[p.id] for p in bench.corpus])
    dense = DenseRetriever(encoder).index(bench.corpus, embeddings=emb)
    return HybridRetriever([BM25Retriever().index(bench.corpus), dense], fusion="rrf", rrf_k=60,
                           candidate_k=retrieve_k)


def _selection_f1(qrels: Mapping[str, Any], selections: Mapping[str, Sequence[str]]) -> dict[str, float]:
    from meteora.set_metrics import set_metrics

    m = set_metrics(qrels, selections)
    return {k: round(float(m[k]), 4) for k in ("precision", "recall", "F1", "mean_chunks")}


def _score_run(qids, results, records, gold, qrels) -> dict[str, Any]:
    """Detection per kind and overall, plus selection quality, of one defence's results."""
    kind_of = {r.passage_id: r.kind for r in records}
    q_kind = {r.qid: r.kind for r in records}
    inputs = {q: [p.id for p in res.selection.selected] for q, res in zip(qids, results, strict=True)}
    flagged = {q: (res.verification.rejected_ids if res.verification is not None else [])
               for q, res in zip(qids, results, strict=True)}
    final = {q: res.selected_ids for q, res in zip(qids, results, strict=True)}
    out: dict[str, Any] = {"questions": len(qids)}
    groups = {"overall": list(qids), **{k: [q for q in qids if q_kind.get(q) in (None, k)] for k in KINDS}}
    for name, qs in groups.items():
        det = detection_metrics({q: inputs[q] for q in qs}, flagged, kind_of, gold)
        inserted = [r for r in records if r.qid in set(qs)]
        det["poison_inserted"] = len(inserted)
        det["poison_in_output"] = sum(r.passage_id in final[r.qid] for r in inserted)
        out[name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in det.items()}
    out["selection_evidence"] = _selection_f1({q: qrels[q] for q in qids if q in qrels}, final)
    return out


def _safe_name(name: Any) -> str:
    """A model name for a results file: a local path is reduced to its last part."""
    text = str(name)
    return Path(text).name if ("/" in text and Path(text).expanduser().exists()) or text.startswith("/") else text


def _clean_train_texts(bench: Any, n: int) -> list[str]:
    """Gold evidence texts of the first ``n`` train questions (never test ones)."""
    test = set(bench.splits.get("test", []))
    evidence = bench.qrels.get("evidence", {})
    out = []
    for q in bench.query_ids("train"):
        if q in test:
            continue
        out.extend(bench.passage(pid).text for pid in evidence.get(q, {}))
        if len(out) >= n:
            break
    return out[:n]


def run_poisoning(
    config: PoisoningConfig, *, benchmark: Any = None, encoder: Any = None, scorer: Any = "default",
    logprob: Any = None, llm: Any = None, command: str | None = None, llm_api_key: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark (see the module doc) and return the results dict.

    Args:
        config: the run's settings.
        benchmark: a built PubMedQA-shaped benchmark (default: built from ``config.data_path``).
        encoder, scorer: the reranker's encoder and evidence scorer (built when not given).
        logprob: the :class:`~meteora.defences.LogProbScorer` of the perplexity defence and
            the learned check's fluency feature (default: SmolLM2 on transformers).
        llm: the LM of the ``llm`` defence (default: ``load_lm`` with ``config.llm``).
        llm_api_key: the API key of an OpenAI-compatible verifier server (never written
            into the results).
        command: the command line recorded in the results.
    """
    from meteora.bench.config import BenchmarkConfig
    from meteora.bench.context import BenchmarkContext
    from meteora.bench.report import environment_versions
    from meteora.defences import LogProbScorer, PerplexityDefence, PoisonCheck
    from meteora.reranker import Reranker

    config.validate()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    bcfg = BenchmarkConfig(methods=["hybrid"], split=config.split, limit=config.limit, candidates=config.candidates,
                           retrieve_k=config.retrieve_k, embedding_model=config.embedding_model,
                           data_path=config.data_path, num_threads=config.num_threads,
                           options={"scorer": config.scorer}, dataset=benchmark.name if benchmark is not None else "pubmedqa")
    ctx = BenchmarkContext(bcfg, benchmark=benchmark, scorer=None if scorer == "default" else scorer)
    bench, qids = ctx.data, ctx.qids
    if encoder is not None:
        ctx._cache["encoder"] = encoder
    poisoned, records = poison_benchmark(bench, qids, fraction=config.fraction, seed=config.seed, family=config.family)
    logger.info("poisoning: %d questions, %d poisoned (%s)", len(qids), len(records), config.family)
    enc = ctx.encoder()
    clean_emb = ctx.corpus_embeddings()
    clean_ids = [p.id for p in bench.corpus]
    retrievers = {
        "clean": _build_retriever(bench, enc, clean_emb, clean_ids, config.retrieve_k),
        "poisoned": _build_retriever(poisoned, enc, clean_emb, clean_ids, config.retrieve_k),
    }
    the_scorer = ctx.scorer() if scorer == "default" else scorer
    generator = None
    if config.generator is not None:
        from meteora.rationales.generator import RationaleGenerator

        generator = RationaleGenerator.from_pretrained(
            None if config.generator == "default" else config.generator, num_threads=config.num_threads, cache=True)

    def reranker(verifier: Any = None) -> Reranker:
        return Reranker(generator=generator, encoder=enc, scorer=the_scorer, verifier=verifier)

    base = reranker()
    queries = [bench.queries[q] for q in qids]
    pools = {name: base.retrieve(queries, r, k=config.candidates) for name, r in retrievers.items()}
    evidence = bench.qrels_for("evidence", qids)
    gold = {q: set(rels) for q, rels in evidence.items()}
    runs: dict[str, Any] = {}

    def run(name: str, verifier: Any, corpus: str, n: int | None = None) -> None:
        t0 = time.perf_counter()
        qs = qids[:n] if n else qids
        results = reranker(verifier).rerank_pools(pools[corpus][: len(qs)])
        recs = records if corpus == "poisoned" else []
        runs[name] = {"corpus": corpus, **_score_run(qs, results, recs, gold, evidence),
                      "seconds": round(time.perf_counter() - t0, 1)}
        logger.info("%s: selection F1 %.4f (%.0f s)", name, runs[name]["selection_evidence"]["F1"],
                    runs[name]["seconds"])

    run("clean", None, "clean")
    run("poisoned", None, "poisoned")
    defences_info: dict[str, Any] = {}
    needs_lm = any(d in config.defences for d in ("perplexity", "learned"))
    lp = logprob
    if lp is None and needs_lm:
        from meteora.lm import load_lm

        lp = LogProbScorer(load_lm("transformers", config.lm, device="cpu"))
    if "perplexity" in config.defences:
        t0 = time.perf_counter()
        calib = _clean_train_texts(bench, config.ppl_calibration)
        ppl = PerplexityDefence.calibrate(lp, calib, quantile=config.ppl_quantile)
        timings["perplexity_calibration"] = round(time.perf_counter() - t0, 1)
        defences_info["perplexity"] = {"threshold": round(ppl.threshold, 3), "quantile": config.ppl_quantile,
                                       "calibration": f"gold evidence of the first {len(calib)} train-side chunks",
                                       "lm": _safe_name(lp.name)}
        run("perplexity", ppl, "poisoned")
    if "learned" in config.defences:
        check = PoisonCheck.from_pretrained(config.check, corpus=poisoned.corpus, logprob=lp)
        defences_info["learned"] = {"weights": config.check or "meteora/weights/poison-check/model.json",
                                    "thresholds": check.thresholds}
        run("learned", check, "poisoned")
        run("learned-clean-corpus", PoisonCheck.from_pretrained(config.check, corpus=bench.corpus, logprob=lp), "clean")
    if "llm" in config.defences:
        from meteora.verifier import Verifier

        if llm is None:
            from meteora.lm import load_lm

            opts = dict(config.llm)
            if llm_api_key:
                opts["api_key"] = llm_api_key
            llm = load_lm(opts.pop("backend", "auto"), opts.pop("model", None),
                          **{k: v for k, v in opts.items() if v is not None})
        n = min(config.llm_limit or len(qids), len(qids))
        defences_info["llm"] = {"backend": getattr(llm, "backend", type(llm).__name__),
                                "model": _safe_name(getattr(llm, "model_id", "?")), "questions": n,
                                "note": f"run on the first {n} questions only (LM verification is slow on a CPU)"}
        run("llm", Verifier(llm), "poisoned", n)
        run(f"poisoned-first{n}", None, "poisoned", n)
    from meteora.bench.poison_gen import WRONG_ANSWER

    return {
        "command": command or "meteora bench poisoning",
        "config": dataclasses.asdict(config),
        "versions": environment_versions(),
        "protocol": {
            "dataset": "PubMedQA PQA-L", "split": config.split, "questions": len(qids),
            "questions_with_gold_evidence": len(evidence), "poisoned_questions": len(records),
            "kinds": {k: sum(r.kind == k for r in records) for k in KINDS}, "family": config.family,
            "insertion": "inside the question's own abstract, right after its gold evidence chunk",
            "wrong_answers": WRONG_ANSWER,
            "pipeline": f"hybrid (BM25 + dense, RRF) top-{config.candidates}, Reranker("
                        f"{'generator=None' if generator is None else 'LM rationales'}, scorer={config.scorer})"
                        ".rerank_pools, defence as the reranker's verifier",
            "detection": "over the passages that reach the verifier (the selection); per kind = clean questions "
                         "+ the questions poisoned with that kind",
        },
        "defences": defences_info,
        "runs": runs,
        "poison": [dataclasses.asdict(r) for r in records],
        "timings": timings,
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def format_poisoning(results: Mapping[str, Any]) -> str:
    """Console table: per run, detection P/R/F1 per kind, gold dropped, selection F1."""
    from meteora.bench.report import format_table

    rows = {}
    for name, r in results["runs"].items():
        o = r["overall"]
        rows[name] = {
            "questions": r["questions"], "P": _fmt(o["precision"]), "R": _fmt(o["recall"]), "F1": _fmt(o["F1"]),
            **{f"F1 {k[:4]}": _fmt(r[k]["F1"]) for k in KINDS},
            "gold drop": _fmt(o["gold_dropped_rate"]), "poison out": f"{o['poison_in_output']}/{o['poison_inserted']}",
            "sel F1": _fmt(r["selection_evidence"]["F1"]),
        }
    cols = ["questions", "P", "R", "F1", *(f"F1 {k[:4]}" for k in KINDS), "gold drop", "poison out", "sel F1"]
    return format_table(rows, cols)
