"""End to end: PubMedQA answer accuracy of the trained reader under each context selection.

The reader is SmolLM2-135M-Instruct + the LoRA adapter of ``meteora train reader``
(``runs/reader-smollm2``, ``--adapter``; not shipped, see the README), prompted with the Alpaca layout it was trained on
(``evaluate_qa(..., prompt_format="alpaca")``). Conditions (500 official test questions):

* ``none`` — the question alone; ``gold`` — the question's whole abstract;
* ``gold-results`` — only its RESULTS chunks (empty for the questions without one);
* ``meteora`` — the default ``Reranker`` (SmolLM2 rationales from the on-disk cache +
  the evidence scorer) over the hybrid top-50; ``meteora-query-only`` — ``generator=None``;
* ``dense-top3`` / ``hybrid-top3`` — the top 3 chunks of the dense / hybrid retriever.

Phases (each writes ``runs/reader-eval/<name>.json``; ``merge`` combines them, adds the
paired bootstraps and writes ``benchmarks/results/pubmedqa_qa_reader.json``)::

    .venv/bin/python benchmarks/pubmedqa_reader.py selections
    .venv/bin/python benchmarks/pubmedqa_reader.py eval --reader base --mode loglik --conditions none,gold
    .venv/bin/python benchmarks/pubmedqa_reader.py eval --reader trained --mode loglik --calibrate
    .venv/bin/python benchmarks/pubmedqa_reader.py eval --reader trained --mode generate --limit 100 --conditions none,gold
    .venv/bin/python benchmarks/pubmedqa_reader.py merge

``--reader-url URL --reader-model NAME`` evaluates a served model instead (any
OpenAI-compatible server that returns logprobs; next-token scoring), with the same
selections.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

from meteora.bench.report import environment_versions, write_results_json
from meteora.settings import apply_thread_setting

RUNS = Path("runs/reader-eval")
OUT = Path("benchmarks/results/pubmedqa_qa_reader.json")
ADAPTER = "runs/reader-smollm2"  # the --out of the training command in the README
ALL_CONDITIONS = (
    "none", "gold", "gold-results", "meteora", "meteora-query-only", "dense-top3", "hybrid-top3",
)
SELECTED = ("gold-results", "meteora", "meteora-query-only", "dense-top3", "hybrid-top3")

logger = logging.getLogger("pubmedqa_reader")


def _command() -> str:
    return "python benchmarks/pubmedqa_reader.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _context(threads: int | None, limit: int | None = None):
    from meteora.bench.config import BenchmarkConfig
    from meteora.bench.context import BenchmarkContext

    return BenchmarkContext(BenchmarkConfig(split="test", limit=limit, num_threads=threads))


def cmd_selections(args: argparse.Namespace) -> None:
    from meteora.evaluation.selections import fixed_k_selections, meteora_selections

    ctx = _context(args.threads, args.limit)
    bench, qids = ctx.data, ctx.qids
    timings: dict[str, float] = {}
    sel: dict[str, dict[str, list[str]]] = {}
    evidence = bench.qrels.get("evidence", {})
    sel["gold-results"] = {
        q: [p.id for p in sorted((bench.passage(pid) for pid, r in evidence.get(q, {}).items() if r >= 1),
                                 key=lambda p: p.position)]
        for q in qids
    }
    for name, gen in (("meteora", ctx.generator()), ("meteora-query-only", None)):
        t0 = time.perf_counter()
        sel[name] = meteora_selections(
            bench, qids, generator=gen, retriever=ctx.retriever("hybrid"), encoder=ctx.encoder()
        )
        timings[name] = round(time.perf_counter() - t0, 1)
    for name, retr in (("dense-top3", "dense"), ("hybrid-top3", "hybrid")):
        t0 = time.perf_counter()
        sel[name] = fixed_k_selections(bench, qids, retriever=ctx.retriever(retr), k=3)
        timings[name] = round(time.perf_counter() - t0, 1)
    RUNS.mkdir(parents=True, exist_ok=True)
    write_results_json(RUNS / "selections.json", {"command": _command(), "seconds": timings, "selections": sel})
    print({k: round(sum(len(v) for v in s.values()) / len(s), 2) for k, s in sel.items()}, timings)


def _reader(args: argparse.Namespace):
    from meteora.rationales.generator import RationaleGenerator

    if args.reader_url:
        return RationaleGenerator.from_pretrained(args.reader_model, backend="openai", base_url=args.reader_url)
    adapter = args.adapter if args.reader == "trained" else None
    return RationaleGenerator.from_pretrained(None, adapter=adapter, backend="transformers", num_threads=args.threads)


def cmd_eval(args: argparse.Namespace) -> None:
    from meteora.evaluation.qa import evaluate_qa
    from meteora.evaluation.qa_report import to_markdown

    conditions = [c for c in args.conditions.split(",") if c]
    unknown = sorted(set(conditions) - set(ALL_CONDITIONS))
    if unknown:
        raise SystemExit(f"unknown conditions {unknown}; known: {ALL_CONDITIONS}")
    saved = json.loads((RUNS / "selections.json").read_text())["selections"] if set(conditions) & set(SELECTED) else {}
    ctx = _context(args.threads)
    reader = _reader(args)
    result = evaluate_qa(
        reader,
        ctx.data,
        split="test",
        conditions=tuple(conditions),
        limit=args.limit,
        selections={c: saved[c] for c in conditions if c in SELECTED},
        answer_mode=args.mode,
        prompt_format="alpaca",
        max_new_tokens=10,
        batch_size=args.batch_size,
        calibrate=args.calibrate,
        keep_predictions=True,
    )
    name = args.name or f"{args.reader if not args.reader_url else 'served'}-{args.mode}"
    kind = args.kind or ("served" if args.reader_url else args.reader)
    RUNS.mkdir(parents=True, exist_ok=True)
    scores = result.get("label_scores")
    if args.calibrate:
        # one scoring pass, two decision rules: calibrated (as scored) and plain argmax
        write_results_json(RUNS / f"{name}-calibrated.json",
                           {"command": _command(), "reader_kind": f"{kind}-calibrated", **result})
        print(to_markdown(result))
        result = _plain_argmax(result, scores)
    result.pop("label_scores", None)
    write_results_json(RUNS / f"{name}.json", {"command": _command(), "reader_kind": kind, **result})
    print(to_markdown(result))


def _plain_argmax(result: dict, scores: dict) -> dict:
    """``result`` with predictions and metrics recomputed by the uncalibrated argmax."""
    import copy

    from meteora.datasets.pubmedqa import build_pubmedqa_benchmark
    from meteora.evaluation.reader import LABELS, qa_metrics

    bench = build_pubmedqa_benchmark()
    out = copy.deepcopy({k: v for k, v in result.items() if k != "label_scores"})
    out["calibrated"] = False
    for cond, rows in scores.items():
        qids = list(rows)
        preds = [LABELS[max(range(len(LABELS)), key=lambda i, r=rows[q]: r[i])] for q in qids]
        gold = [str(bench.answers[q]["final_decision"]).lower() for q in qids]
        m = qa_metrics(gold, preds)
        m.pop("gold_distribution")
        kept = {k: v for k, v in out["conditions"][cond].items() if k not in m and k != "calibration"}
        out["conditions"][cond] = {**m, **kept}
        out["predictions"][cond] = dict(zip(qids, preds, strict=True))
    return out


def _load_groups() -> dict[str, dict]:
    """Part files grouped by reader and answer mode (conditions may come from several parts)."""
    groups: dict[str, dict] = {}
    for path in sorted(RUNS.glob("*.json")):
        if path.stem == "selections":
            continue
        part = json.loads(path.read_text())
        key = f"{part['reader_kind']}-{part['answer_mode']}"
        g = groups.setdefault(key, {**{k: v for k, v in part.items() if k not in ("conditions", "predictions", "command", "label_scores")},
                                    "commands": [], "conditions": {}, "predictions": {}})
        if part["n_questions"] != g["n_questions"]:
            raise SystemExit(f"{path}: {part['n_questions']} questions, other parts of {key} have {g['n_questions']}")
        g["commands"].append(part["command"])
        g["conditions"].update(part["conditions"])
        g["predictions"].update(part["predictions"])
    return groups


def _portable(obj: dict) -> dict:
    """Machine paths written as ``$METEORA_HOME`` / ``$METEORA_DATA_DIR`` / repo-relative."""
    from meteora.settings import data_dir, meteora_home

    text = json.dumps(obj)
    for path, name in ((meteora_home(), "$METEORA_HOME"), (data_dir(), "$METEORA_DATA_DIR"), (Path.cwd(), ".")):
        text = text.replace(str(Path(path).resolve()), name).replace(str(path), name)
    return json.loads(text)


def cmd_merge(args: argparse.Namespace) -> None:
    from meteora.datasets.pubmedqa import build_pubmedqa_benchmark
    from meteora.evaluation.reader import paired_bootstrap_accuracy

    groups = _load_groups()
    sel = json.loads((RUNS / "selections.json").read_text())
    prov_path = Path(args.adapter) / "provenance.json"
    out: dict = {
        "what": "PubMedQA test answer accuracy of SmolLM2-135M before / after reader fine-tuning, by context condition",
        "command": _command(),
        "commands": list(dict.fromkeys([sel["command"], *(c for g in groups.values() for c in g["commands"])])),
        "adapter": args.adapter,
        "training": json.loads(prov_path.read_text()) if prov_path.is_file() else None,
        "other_training_runs": {
            str(p.parent): json.loads(p.read_text()) for p in sorted(Path(args.other_runs).glob("*/provenance.json"))
        } if args.other_runs else {},
        "selection_seconds": sel["seconds"],
        "results": {},
        "bootstrap": {},
        "versions": environment_versions(),
    }
    bench = build_pubmedqa_benchmark()
    pairs = [("meteora", "dense-top3"), ("meteora-query-only", "dense-top3"), ("gold", "none"),
             ("meteora", "gold"), ("meteora", "none"), ("gold-results", "gold")]
    for name, g in groups.items():
        preds = g.pop("predictions")
        g.pop("commands")
        out["results"][name] = g
        qids = list(next(iter(preds.values())).keys())
        gold = [str(bench.answers[q]["final_decision"]).lower() for q in qids]
        boots = {}
        for a, b in pairs:
            if a in preds and b in preds:
                boots[f"{a} - {b}"] = paired_bootstrap_accuracy(
                    gold, [preds[a][q] for q in qids], [preds[b][q] for q in qids]
                )
        for a in preds:
            boots[f"{a} - always-yes"] = paired_bootstrap_accuracy(
                gold, [preds[a][q] for q in qids], ["yes"] * len(qids)
            )
        out["bootstrap"][name] = boots
        out["results"][name]["always_yes_accuracy"] = round(gold.count("yes") / len(gold), 4)
    write_results_json(args.out, _portable(out))
    for name, g in out["results"].items():
        print(f"\n## {name} (n={g['n_questions']}, always-yes {g['always_yes_accuracy']})")
        for cond, m in g["conditions"].items():
            tok = m.get("mean_context_tokens")
            print(f"{cond:20s} acc {m['accuracy']:.3f} F1 {m['macro_f1']:.3f} ctx tokens {tok if tok is None else round(tok)}"
                  f" pred {m['predicted_distribution']}")
        for k, v in out["bootstrap"][name].items():
            print(f"  {k}: {v['difference']:+.3f} {v['ci95']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    sub = p.add_subparsers(dest="phase", required=True)
    s = sub.add_parser("selections")
    s.add_argument("--limit", type=int, default=None, help="the first N test questions")
    s.set_defaults(func=cmd_selections)
    e = sub.add_parser("eval")
    e.add_argument("--reader", choices=["base", "trained"], default="trained")
    e.add_argument("--adapter", default=ADAPTER)
    e.add_argument("--reader-url", default=None)
    e.add_argument("--reader-model", default=None)
    e.add_argument("--mode", choices=["loglik", "generate"], default="loglik")
    e.add_argument("--conditions", default=",".join(ALL_CONDITIONS))
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--calibrate", action="store_true",
                   help="loglik: also write NAME-calibrated.json (contextual calibration, same scores)")
    e.add_argument("--name", default=None, help="part name (default: READER-MODE)")
    e.add_argument("--kind", default=None, help="group name in the merged results (default: base / trained / served)")
    e.set_defaults(func=cmd_eval)
    m = sub.add_parser("merge")
    m.add_argument("--out", default=str(OUT))
    m.add_argument("--adapter", default=ADAPTER, help="the trained reader's folder (its provenance.json is recorded)")
    m.add_argument("--other-runs", default=None, help="folder whose */provenance.json (earlier training runs) are recorded")
    m.set_defaults(func=cmd_merge)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    apply_thread_setting(args.threads)
    args.func(args)


if __name__ == "__main__":
    main()
