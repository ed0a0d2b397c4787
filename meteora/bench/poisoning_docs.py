"""The added-document poisoning benchmark (``meteora bench poisoning --attack new-document``).

A real attacker does not edit PubMed abstracts, it **adds documents**. For a seeded
``fraction`` of the split's questions that have gold evidence, each attack family
(:mod:`meteora.bench.attacks`) writes one new document per question; the family's
documents join the clean corpus (one corpus per family), and the user path runs on it:
``Reranker.retrieve`` (dense top-``candidates`` by default, stored corpus embeddings
reused) then ``Reranker.rerank_pools`` — what ``Reranker.search`` runs — once per
defence, each the reranker's ``verifier`` (:data:`DEFENCES`; ``default`` is what
``Reranker()`` ships).

Reported per defence and family:

* **poison selected**: the share of attacked questions with any added passage selected;
* **gold kept**: among the attacked questions whose gold evidence the undefended
  pipeline selects on the clean corpus, the share that still select it;
* **conflicts**: attacked questions whose result reports a conflict, and those whose
  conflict names both the added document and the gold evidence;

the trained-on and held-out families pooled separately; and on the clean corpus (every
question): **clean gold dropped** (among questions whose gold the undefended pipeline
selects), **evidence F1** and its change, conflicts reported. A last condition tests the
shape prior's weak spot: the attacked questions' own abstracts indexed as *one* passage
each (no attack) — how often each defence keeps that honest one-passage evidence.

Example:
    >>> cfg = NewDocumentConfig(limit=20, families=["study_restated"], defences=["none", "default"])
    >>> cfg.validate()
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meteora.bench.attacks import (
    FAMILIES,
    FAMILY_IDS,
    HELDOUT_FAMILIES,
    TRAIN_FAMILIES,
    AttackRecord,
    lm_attacks,
    make_attack,
)
from meteora.errors import InvalidInputError
from meteora.types import Passage

__all__ = [
    "DEFENCES",
    "NewDocumentConfig",
    "attack_records",
    "evidence_attack_records",
    "attack_documents",
    "corpus_retriever",
    "family_metrics",
    "run_new_document",
    "format_new_document",
]

logger = logging.getLogger(__name__)

#: defences of the benchmark: ``default`` is what ``Reranker()`` ships, the rest ablate it
DEFENCES = ("none", "default", "shape-prior", "no-conflict-gate", "no-guard", "passage-level", "suspicion-only",
            "guard-only")


def build_defence(name: str) -> Any:
    """The ``verifier`` argument of defence ``name`` (:data:`DEFENCES`)."""
    from meteora.pool_defence import PoolDefence
    from meteora.suspicion import SuspicionModel

    never = {"features": ["cos"], "mean": [0.0], "std": [1.0], "coef": [0.0], "intercept": -60.0, "threshold": 0.5}
    return {
        "none": lambda: None,
        "default": lambda: "default",
        "shape-prior": lambda: PoolDefence(shape_prior=True),
        "no-conflict-gate": lambda: PoolDefence(conflict_gate=False),
        "no-guard": lambda: PoolDefence(guard=False),
        "passage-level": lambda: PoolDefence(document_level=False),
        "suspicion-only": lambda: PoolDefence(conflict_gate=False, guard=False, document_level=False),
        "guard-only": lambda: PoolDefence(SuspicionModel(never), conflict_gate=False),
    }[name]()


@dataclass
class NewDocumentConfig:
    """Settings of one added-document run (all written into the results file).

    ``limit``: the first N questions of the split with gold evidence (the clean runs);
    ``fraction`` of them (seeded) are attacked by every family; ``lm_limit`` caps the
    questions the SmolLM2-written family attacks (it is slow on a CPU). ``generator``:
    ``None`` runs ``Reranker(generator=None)``; ``"default"`` the default ``Reranker()``
    (SmolLM2 rationales, from the persistent cache when present).
    """

    split: str = "test"
    limit: int | None = 250
    fraction: float = 0.32
    seed: int = 0
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    defences: list[str] = field(default_factory=lambda: ["none", "default", "shape-prior"])
    retriever: str = "dense"
    candidates: int = 20
    lm_limit: int | None = None
    generator: str | None = None
    scorer: str = "default"
    embedding_model: str | None = None
    data_path: str | None = None
    num_threads: int | None = None
    one_passage: bool = True

    def validate(self) -> None:
        """Raises :class:`InvalidInputError` on a bad value (before any data is loaded)."""
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise InvalidInputError(f"unknown attack families {bad}; choose among {list(FAMILIES)} "
                                    f"(or their letters {sorted(FAMILY_IDS.values())})")
        bad = [d for d in self.defences if d not in DEFENCES]
        if bad or "none" not in self.defences:
            raise InvalidInputError(f"defences must include 'none' and be among {list(DEFENCES)}; got {self.defences}")
        if not 0.0 < self.fraction <= 1.0:
            raise InvalidInputError(f"fraction must be in (0, 1], got {self.fraction!r}")
        if self.retriever not in ("dense", "hybrid"):
            raise InvalidInputError(f"retriever must be 'dense' or 'hybrid', got {self.retriever!r}")
        for name in ("limit", "lm_limit", "candidates"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InvalidInputError(f"{name} must be a positive integer or None, got {v!r}")


def attack_records(bench: Any, qids: Sequence[str]) -> list[AttackRecord]:
    """What the attacker knows about each question (its abstract is the document ``qid``)."""
    out = []
    for q in qids:
        answer = bench.answers.get(q) or {}
        out.append(AttackRecord(q, bench.queries[q], str(answer.get("final_decision", "yes")),
                                [p.text for p in bench.doc_passages(q)], str(answer.get("long_answer") or "")))
    return out


def evidence_attack_records(bench: Any, qids: Sequence[str], *, max_chunks: int = 6) -> list[AttackRecord]:
    """What the attacker knows about each question of a corpus where the question is not
    a document (BioASQ): its relevant passages (first ``max_chunks``, in the order of the
    evidence judgments), its ideal answer as the conclusion, and no yes/no decision (the
    pushed stance is drawn per question, seeded)."""
    by_id = {p.id: p for p in bench.corpus}
    evidence = bench.qrels.get("evidence", {})
    out = []
    for q in qids:
        chunks = [by_id[i].text for i in evidence.get(q, ()) if i in by_id][:max_chunks]
        ideal = (bench.answers.get(q) or {}).get("ideal_answer")
        ideal = ideal[0] if isinstance(ideal, list) and ideal else ideal
        out.append(AttackRecord(q, bench.queries[q], "", chunks, str(ideal or "")))
    return out


def attack_documents(family: str, records: Sequence[AttackRecord], *, seed: int | str = 0, lm: Any = None,
                     lm_texts: dict[str, list[str]] | None = None) -> list[Passage]:
    """The added documents of ``family`` (doc ``poison-<qid>``, one passage per part).

    The LM family is written by ``lm`` (its texts are stored in ``lm_texts`` when given).
    """
    if family == "lm":
        if lm is None:
            raise InvalidInputError("the 'lm' family needs an LM (the offline SmolLM2: meteora.lm.load_lm('llamacpp'))")
        rows = lm_attacks(records, lm, seed)
        if lm_texts is not None:
            lm_texts.update(rows)
    else:
        rows = {r.qid: make_attack(family, r, seed) for r in records}
    return [Passage(text, id=f"poison-{q}-{i}", doc_id=f"poison-{q}", position=i, metadata={"poison": family})
            for q, texts in rows.items() for i, text in enumerate(texts)]


def corpus_retriever(kind: str, corpus: Sequence[Passage], encoder: Any, clean_emb: np.ndarray,
                     clean_row: Mapping[str, int], *, retrieve_k: int = 100) -> Any:
    """A dense (or hybrid BM25 + dense) retriever over ``corpus``: stored clean
    embeddings reused, the other passages encoded."""
    from meteora.retrievers.bm25 import BM25Retriever
    from meteora.retrievers.dense import DenseRetriever
    from meteora.retrievers.hybrid import HybridRetriever

    new = [p for p in corpus if p.id not in clean_row]
    fresh = encoder.encode([p.text for p in new]) if new else np.zeros((0, clean_emb.shape[1]), dtype=np.float32)
    extra = {p.id: fresh[i] for i, p in enumerate(new)}
    emb = np.stack([clean_emb[clean_row[p.id]] if p.id in clean_row else extra[p.id] for p in corpus])
    dense = DenseRetriever(encoder).index(list(corpus), embeddings=emb)
    if kind == "dense":
        return dense
    return HybridRetriever([BM25Retriever().index(list(corpus)), dense], fusion="rrf", rrf_k=60, candidate_k=retrieve_k)


def _pct(a: int, b: int) -> float | None:
    return round(100.0 * a / b, 1) if b else None


def family_metrics(qids: Sequence[str], results: Sequence[Any], gold: Mapping[str, set[str]],
                   base_gold: set[str]) -> dict[str, Any]:
    """Poison selected, gold kept and conflicts over one family's attacked questions."""
    selected = reported = named = kept = 0
    base = [q for q in qids if q in base_gold]
    for q, res in zip(qids, results, strict=True):
        ids = set(res.selected_ids)
        own = f"poison-{q}"
        selected += any(i.startswith(own + "-") for i in ids)
        kept += q in base_gold and bool(gold[q] & ids)
        reported += bool(res.conflicts)
        named += any(any(i.startswith(own + "-") for s in c.sides.values() for i in s)
                     and any(i in gold[q] for s in c.sides.values() for i in s) for c in res.conflicts)
    return {"attacked": len(qids), "poison_selected": selected, "poison_selected_pct": _pct(selected, len(qids)),
            "gold_base": len(base), "gold_kept": kept, "gold_kept_pct": _pct(kept, len(base)),
            "conflict_reported": reported, "conflict_names_poison_and_gold": named}


def _pooled(per_family: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any] | None:
    rows = [per_family[f] for f in names if f in per_family]
    if not rows:
        return None
    a, s = sum(r["attacked"] for r in rows), sum(r["poison_selected"] for r in rows)
    b, k = sum(r["gold_base"] for r in rows), sum(r["gold_kept"] for r in rows)
    return {"families": [f for f in names if f in per_family], "attacked": a, "poison_selected": s,
            "poison_selected_pct": _pct(s, a), "gold_base": b, "gold_kept": k, "gold_kept_pct": _pct(k, b),
            "worst_family_poison_selected_pct": max(r["poison_selected_pct"] or 0 for r in rows)}


def _clean_metrics(qids, results, gold, base_gold, qrels, base_f1: float | None) -> dict[str, Any]:
    from meteora.set_metrics import set_metrics

    sel = {q: list(r.selected_ids) for q, r in zip(qids, results, strict=True)}
    m = set_metrics({q: qrels[q] for q in qids if q in qrels}, sel)
    dropped = sum(1 for q in base_gold if not gold[q] & set(sel[q]))
    f1 = round(float(m["F1"]), 4)
    return {"questions": len(qids), "gold_selected_undefended": len(base_gold), "gold_dropped": dropped,
            "gold_dropped_pct": _pct(dropped, len(base_gold)), "F1": f1,
            "F1_change": None if base_f1 is None else round(f1 - base_f1, 4),
            "mean_chunks": round(float(m["mean_chunks"]), 3),
            "conflict_reported": sum(bool(r.conflicts) for r in results)}


def run_new_document(config: NewDocumentConfig, *, benchmark: Any = None, encoder: Any = None, scorer: Any = None,
                     lm: Any = None, command: str | None = None) -> dict[str, Any]:
    """Run the benchmark (module doc) and return the results dict.

    Args:
        config: the run's settings.
        benchmark, encoder, scorer: built objects to use instead of the defaults.
        lm: the LM that writes the ``lm`` family (default: the offline SmolLM2 on llama.cpp).
        command: the command line recorded in the results.
    """
    from meteora.bench.config import BenchmarkConfig
    from meteora.bench.context import BenchmarkContext
    from meteora.bench.report import environment_versions
    from meteora.reranker import Reranker

    config.validate()
    t_start = time.perf_counter()
    bcfg = BenchmarkConfig(methods=["dense"], split=config.split, limit=None, embedding_model=config.embedding_model,
                           data_path=config.data_path, num_threads=config.num_threads,
                           options={"scorer": config.scorer}, dataset=benchmark.name if benchmark is not None else "pubmedqa")
    ctx = BenchmarkContext(bcfg, benchmark=benchmark, scorer=scorer)
    if encoder is not None:
        ctx._cache["encoder"] = encoder
    bench = ctx.data
    evidence = bench.qrels.get("evidence", {})
    qids = [q for q in bench.query_ids(config.split) if evidence.get(q)][: config.limit]
    n_attack = max(1, round(config.fraction * len(qids)))
    attacked = set(random.Random(f"new-document-{config.seed}").sample(qids, n_attack))
    attacked_q = [q for q in qids if q in attacked]
    enc, clean_emb = ctx.encoder(), ctx.corpus_embeddings()
    clean_row = {p.id: i for i, p in enumerate(bench.corpus)}
    the_scorer = ctx.scorer()
    generator = None
    if config.generator is not None:
        from meteora.rationales.generator import RationaleGenerator

        generator = RationaleGenerator.from_pretrained(
            None if config.generator == "default" else config.generator, num_threads=config.num_threads, cache=True)

    def reranker(defence: str) -> Any:
        return Reranker(generator=generator, encoder=enc, scorer=the_scorer, verifier=build_defence(defence))

    base = reranker("none")
    rationales = dict(zip(qids, base.rationales_for([bench.queries[q] for q in qids]), strict=True))
    gold = {q: set(evidence[q]) for q in qids}
    qrels = bench.qrels_for("evidence", qids)
    timings: dict[str, float] = {}

    def select(corpus: Sequence[Passage], qs: Sequence[str]) -> dict[str, list[Any]]:
        retriever = corpus_retriever(config.retriever, corpus, enc, clean_emb, clean_row)
        pools = base.retrieve([bench.queries[q] for q in qs], retriever, k=config.candidates)
        # query-only (no generator): nothing to hand over (a given rationale list would make
        # the learned cut's query-only model warn that it does not read rationales)
        rats = [rationales[q][1] or rationales[q][0] for q in qs] if generator is not None else None
        out = {}
        for d in config.defences:
            t0 = time.perf_counter()
            out[d] = reranker(d).rerank_pools(pools, rationales=rats)
            timings[d] = timings.get(d, 0.0) + time.perf_counter() - t0
        return out

    logger.info("new-document poisoning: %d questions, %d attacked, families %s", len(qids), len(attacked_q),
                config.families)
    clean = select(bench.corpus, qids)
    base_gold = {q for q, r in zip(qids, clean["none"], strict=True) if gold[q] & set(r.selected_ids)}
    runs: dict[str, Any] = {d: {"families": {}} for d in config.defences}
    f1_none = None
    for d in config.defences:
        runs[d]["clean"] = _clean_metrics(qids, clean[d], gold, base_gold, qrels, f1_none)
        if d == "none":
            f1_none = runs[d]["clean"]["F1"]
            runs[d]["clean"]["F1_change"] = 0.0
    records = attack_records(bench, attacked_q)
    lm_texts: dict[str, list[str]] = {}
    for fam in config.families:
        t0 = time.perf_counter()
        recs = records[: config.lm_limit] if fam == "lm" and config.lm_limit else records
        if fam == "lm" and lm is None:
            from meteora.lm import load_lm

            lm = load_lm("llamacpp", None, n_threads=config.num_threads or 1)
        added = attack_documents(fam, recs, seed=config.seed, lm=lm, lm_texts=lm_texts)
        qs = [r.qid for r in recs]
        results = select(list(bench.corpus) + added, qs)
        for d in config.defences:
            runs[d]["families"][fam] = family_metrics(qs, results[d], gold, base_gold & set(qs))
        logger.info("%s: %s (%.0f s)", fam, {d: runs[d]["families"][fam]["poison_selected_pct"] for d in config.defences},
                    time.perf_counter() - t0)
    for d in config.defences:
        runs[d]["trained_on"] = _pooled(runs[d]["families"], TRAIN_FAMILIES)
        runs[d]["held_out"] = _pooled(runs[d]["families"], HELDOUT_FAMILIES)
    if config.one_passage:
        merged = {q: Passage(" ".join(p.text for p in bench.doc_passages(q)), id=f"{q}-whole", doc_id=q, position=0)
                  for q in attacked_q}
        corpus = [p for p in bench.corpus if p.doc_id not in merged] + list(merged.values())
        res = select(corpus, attacked_q)
        base_sel = [q for q, r in zip(attacked_q, res["none"], strict=True) if f"{q}-whole" in r.selected_ids]
        for d in config.defences:
            kept = sum(f"{q}-whole" in r.selected_ids for q, r in zip(attacked_q, res[d], strict=True) if q in base_sel)
            runs[d]["one_passage_evidence"] = {"selected_undefended": len(base_sel), "kept": kept,
                                               "kept_pct": _pct(kept, len(base_sel))}
    return {
        "command": command or "meteora bench poisoning --attack new-document",
        "attack": "new-document",
        "config": dataclasses.asdict(config),
        "versions": environment_versions(),
        "protocol": {
            "dataset": "PubMedQA PQA-L", "split": config.split, "questions": len(qids), "attacked": len(attacked_q),
            "families": {f: {"id": FAMILY_IDS[f], "role": "trained on" if f in TRAIN_FAMILIES else "held out"}
                         for f in config.families},
            "pipeline": f"{config.retriever} top-{config.candidates} -> Reranker(generator="
                        f"{'None' if generator is None else config.generator}, scorer={config.scorer}, verifier="
                        "<defence>).rerank_pools (the code Reranker.search runs)",
            "poison_selected": "attacked questions with any added passage selected",
            "gold_kept": "among attacked questions whose gold the undefended pipeline selects on the clean corpus",
            "clean_gold_dropped": "among all questions whose gold the undefended pipeline selects on the clean corpus",
            "one_passage_evidence": "the attacked questions' own abstracts indexed as one passage each, no attack",
        },
        "runs": runs,
        "lm_texts": lm_texts,
        "seconds_per_defence": {d: round(s, 1) for d, s in timings.items()},
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }


def format_new_document(results: Mapping[str, Any]) -> str:
    """Console table: per defence, the clean cost and per family ``selected / kept`` (%)."""
    from meteora.bench.report import format_table

    fams = [f for f in (*TRAIN_FAMILIES, *HELDOUT_FAMILIES) if f in results["config"]["families"]]
    rows = {}
    for name, r in results["runs"].items():
        c = r["clean"]
        row = {"clean drop %": c["gold_dropped_pct"], "F1 Δ": f"{c['F1_change']:+.4f}"}
        for f in fams:
            v = r["families"][f]
            row[f"{FAMILY_IDS[f]}{'*' if f in HELDOUT_FAMILIES else ''}"] = f"{v['poison_selected_pct']:.0f}/{v['gold_kept_pct'] or 0:.0f}"
        for group in ("trained_on", "held_out"):
            g = r.get(group)
            if g:
                row[group] = f"{g['poison_selected_pct']:.0f}/{g['gold_kept_pct'] or 0:.0f}"
        rows[name] = row
    cols = list(next(iter(rows.values())).keys()) if rows else []
    return format_table(rows, cols) + "\n(cells: poison selected % / gold kept %; * held-out family)"
