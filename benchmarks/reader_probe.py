"""How much yes/no signal a small encoder can read from each kind of PubMedQA context.

A linear probe (logistic regression, 5-fold cross-validation) on the all-MiniLM-L6-v2
embedding of ``question + context``, over the 500 PubMedQA *train*-side questions only
(no test question is read). Contexts: none, the RESULTS chunks, the whole abstract, and
the conclusion (the long answer, which states the finding the answer rests on). The
yes-vs-no AUC says how separable the two answers are from that text; the 3-class
accuracy is compared with always-"yes" on the same questions.

It explains the reader results (``pubmedqa_qa_reader.json``): when even the conclusion
sentence barely separates "yes" from "no" for the encoder meteora ships, a reader needs to
compose question and finding (a larger LM), not a surface cue.

    .venv/bin/python benchmarks/reader_probe.py
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from meteora.bench.report import command_line, environment_versions, write_results_json

OUT = "benchmarks/results/pubmedqa_reader_probe.json"
CONTEXTS = ("none", "results", "abstract", "conclusion")


def _context(bench, qid: str, kind: str) -> str:
    passages = bench.doc_passages(qid)
    if kind == "none":
        return ""
    if kind == "conclusion":
        return str(bench.answers[qid]["long_answer"])
    if kind == "results":
        res = [p.text for p in passages if bench.section_labels.get(p.id, "").upper() == "RESULTS"]
        if res:
            return " ".join(res)
    return " ".join(p.text for p in passages)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=OUT)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from meteora.datasets.pubmedqa import build_pubmedqa_benchmark
    from meteora.embeddings.encoder import Encoder
    from meteora.settings import apply_thread_setting

    apply_thread_setting(args.threads)
    t0 = time.perf_counter()
    bench = build_pubmedqa_benchmark()
    qids = list(bench.splits["train"])
    gold = np.array([str(bench.answers[q]["final_decision"]).lower() for q in qids])
    yn = gold != "maybe"
    encoder = Encoder(None)
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    results = {}
    for kind in CONTEXTS:
        x = np.asarray(encoder.encode([f"{bench.queries[q]} {_context(bench, q, kind)}".strip() for q in qids]))
        x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
        row = {}
        for c in (0.01, 0.1, 1.0):
            proba = cross_val_predict(
                LogisticRegression(C=c, max_iter=3000, class_weight="balanced"),
                x[yn], gold[yn], cv=folds, method="predict_proba",
            )
            auc = roc_auc_score(gold[yn] == "yes", proba[:, sorted(set(gold[yn])).index("yes")])
            pred = cross_val_predict(LogisticRegression(C=c, max_iter=3000), x, gold, cv=folds)
            row[f"C={c}"] = {"yes_vs_no_auc": round(float(auc), 4),
                             "accuracy_3class": round(float(np.mean(pred == gold)), 4)}
        results[kind] = row
        logging.info("%s: %s", kind, row)
    write_results_json(args.out, {
        "what": "linear probe (5-fold CV) on all-MiniLM-L6-v2 embeddings of question + context, "
                "PubMedQA train-side questions",
        "command": command_line(),
        "questions": len(qids),
        "gold_distribution": {lab: int(np.sum(gold == lab)) for lab in ("yes", "no", "maybe")},
        "always_yes_accuracy": round(float(np.mean(gold == "yes")), 4),
        "results": results,
        "seconds": round(time.perf_counter() - t0, 1),
        "versions": environment_versions(),
    })


if __name__ == "__main__":
    main()
