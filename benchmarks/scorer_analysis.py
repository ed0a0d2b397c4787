"""What the evidence scorer learned, and why the selector uses it only inside a document.

On the 100 PubMedQA *train* questions held out from the scorer's training (the same
seed-0 split ``meteora train scorer`` uses) and on the first ``--bioasq`` BioASQ-dev
questions, with the base encoder's top-50 candidates per question:

* within the right abstract: how often the scorer's / the cosine's best chunk is a
  RESULTS chunk (and the chance rate);
* over all candidates: how often the best chunk comes from the right abstract;
* NDCG@10 (evidence view) of the cosine alone, the scorer alone, and the selector's
  document + within-document-evidence score.

Writes ``benchmarks/results/scorer_analysis.json``::

    .venv/bin/python benchmarks/scorer_analysis.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shlex
import sys
import time

import numpy as np

from meteora.bench.report import environment_versions, write_results_json
from meteora.datasets.bioasq import build_bioasq_benchmark
from meteora.datasets.pubmedqa import build_pubmedqa_benchmark
from meteora.embeddings.encoder import Encoder
from meteora.metrics import evaluate_ranking
from meteora.pipeline import CandidatePool
from meteora.reranker import Reranker
from meteora.scorer import EvidenceScorer
from meteora.selection.selector_settings import SelectorSettings
from meteora.settings import apply_thread_setting


def held_out_train(bench, fraction: float = 0.2, seed: int = 0) -> list[str]:
    """The train questions ``train_scorer`` holds out (same shuffle and order)."""
    train = bench.query_ids("train")
    shuffled = list(train)
    random.Random(seed).shuffle(shuffled)
    n = int(round(len(shuffled) * fraction))
    return sorted(shuffled[:n], key=train.index)


def analyse(bench, qids, scorer, encoder, k: int) -> dict:
    corpus = bench.corpus
    emb = encoder.encode([p.text for p in corpus])
    qemb = encoder.encode([bench.queries[q] for q in qids])
    top = np.argsort(-(qemb @ emb.T), axis=1, kind="stable")[:, :k]
    pools = [[corpus[i] for i in row] for row in top]
    t0 = time.perf_counter()
    logits = scorer.evidence_logits([bench.queries[q] for q in qids], [[p.text for p in pool] for pool in pools])
    seconds = time.perf_counter() - t0
    qrels = bench.qrels_for("evidence", qids)
    runs = {"cosine": {}, "scorer": {}, "document+evidence": {}}
    # the selector's score, through the real pipeline (it reads the scorer only where a
    # document has several candidates; the logits above are remembered, so no re-scoring)
    reranker = Reranker(generator=None, encoder=encoder, scorer=scorer, settings=SelectorSettings(use_pairing=False))
    results = reranker.rerank_pools(
        [
            CandidatePool(query=bench.queries[q], passages=pool, embeddings=emb[row], query_embedding=qv)
            for q, qv, row, pool in zip(qids, qemb, top, pools, strict=True)
        ]
    )
    within_ce, within_cos, chance, top_doc_ce, top_doc_cos = [], [], [], [], []
    for q, qv, row, pool, lg, res in zip(qids, qemb, top, pools, logits, results, strict=True):
        cos = emb[row] @ qv
        ids = [p.id for p in pool]
        runs["cosine"][q] = dict(zip(ids, map(float, cos), strict=True))
        runs["scorer"][q] = dict(zip(ids, map(float, lg), strict=True))
        runs["document+evidence"][q] = res.ranked.to_run()
        gold = set(qrels.get(q, {}))
        if bench.name == "pubmedqa":
            own = [i for i, p in enumerate(pool) if p.doc_id == q]
            top_doc_ce.append(pool[int(np.argmax(lg))].doc_id == q)
            top_doc_cos.append(pool[int(np.argmax(cos))].doc_id == q)
            if own and gold:
                within_ce.append(ids[max(own, key=lambda i: lg[i])] in gold)
                within_cos.append(ids[max(own, key=lambda i: cos[i])] in gold)
                chance.append(sum(ids[i] in gold for i in own) / len(own))
    out = {
        "questions": len(qids),
        "candidates": k,
        "scorer_pairs_per_second": round(len(qids) * k / seconds, 1),
        "NDCG@10_evidence": {
            name: round(evaluate_ranking(qrels, run, ["NDCG@10"])["NDCG@10"], 4) for name, run in runs.items()
        },
    }
    if within_ce:
        out["best_chunk_of_right_abstract_is_results"] = {
            "scorer": round(float(np.mean(within_ce)), 4),
            "cosine": round(float(np.mean(within_cos)), 4),
            "chance": round(float(np.mean(chance)), 4),
            "questions": len(within_ce),
        }
        out["best_chunk_is_from_right_abstract"] = {
            "scorer": round(float(np.mean(top_doc_ce)), 4),
            "cosine": round(float(np.mean(top_doc_cos)), 4),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bioasq", type=int, default=200, help="first N BioASQ-dev questions")
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/scorer_analysis.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    apply_thread_setting(args.threads)
    scorer = EvidenceScorer("default")
    encoder = Encoder()
    pubmedqa = build_pubmedqa_benchmark()
    bioasq = build_bioasq_benchmark()
    result = {
        "command": "python benchmarks/scorer_analysis.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "scorer": repr(scorer),
        "versions": environment_versions(),
        "pubmedqa_held_out_train": analyse(pubmedqa, held_out_train(pubmedqa), scorer, encoder, args.candidates),
        "bioasq_dev": analyse(bioasq, bioasq.query_ids("dev")[: args.bioasq], scorer, encoder, args.candidates),
    }
    write_results_json(args.out, result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
