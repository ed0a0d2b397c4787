"""Start-up cost of a reranker, and the agreement of the ONNX and torch runtimes.

Two sections of ``benchmarks/results/rerank_latency.json``, written by
``benchmarks/rerank_latency.py --sections startup,agreement`` (the per-query section of
that file is left as it is when it is not run):

``startup``
    Wall time from starting ``python -c`` to the first result of the real user path,
    ``from meteora import Reranker; Reranker(generator=None).rerank(question, candidates)``
    (``query_only``) and ``Reranker().rerank(...)`` with the default SmolLM2 llama.cpp
    generator (``default``; its rationales come from the rationale cache, filled by an
    untimed warm-up run), each in a fresh interpreter. Each is run with
    ``METEORA_RUNTIME`` unset (``auto``: ONNX Runtime, the new default) and with
    ``METEORA_RUNTIME=torch`` (the torch path every earlier version ran), alternating
    run by run so that both see the same machine load; medians are reported, and their
    ratios torch/ONNX (``<mode>_ratio_torch_over_onnx``: time to the first result,
    start-up overhead, peak RSS). The child reports its own split (``import meteora``,
    the constructor, the first ``rerank``), then makes the same call again with its
    caches emptied: the difference, ``startup_overhead_s``, is what starting cost on top
    of the call itself. It also reports its peak resident memory up to the first result
    (``ru_maxrss``: imports, construction and the first ``rerank``) and which heavy
    modules it imported; one more child per variant runs under ``python -X importtime``
    for the heaviest top-level imports. One untimed run per variant comes first (it
    makes the ONNX exports if they are missing and warms the OS file cache: a warm cache
    is measured, not a cold one). ``torch`` is this version's torch runtime, the
    fallback (it also gains the lazy imports of this version), not an older release.

``runtime_agreement``
    For the first ``--agreement-questions`` PubMedQA test questions and their BM25
    top-``--candidates``, a query-only reranker on each runtime (caches emptied before
    each call): the largest absolute difference of an embedding component, of a
    query-passage cosine and of an evidence logit, whether the ranked order and the
    selected passages are identical, and the cold ``rerank`` time per runtime
    (interleaved, question by question).

Example:
    .venv/bin/python benchmarks/rerank_latency.py --sections startup,agreement --startup-runs 7
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from meteora.bench.report import command_line, environment_versions, load_average

SECTIONS = ("per_query", "startup", "agreement")
HEAVY = ("torch", "transformers", "sentence_transformers", "peft", "sklearn", "onnx", "onnxscript", "onnxruntime", "xllamacpp")
PACKAGES = ("meteora-rerank", "numpy", "torch", "transformers", "sentence-transformers", "onnxruntime", "tokenizers", "xllamacpp")
RUNTIMES = {"onnx": None, "torch": "torch"}  # label -> METEORA_RUNTIME (None: unset, i.e. auto)

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from meteora import Reranker
t1 = time.perf_counter()
rr = Reranker(generator=None) if sys.argv[2] == "query_only" else Reranker()
t2 = time.perf_counter()
job = json.load(open(sys.argv[1], encoding="utf-8"))
res = rr.rerank(job["question"], job["passages"])
t3 = time.perf_counter()
done = time.time()
# the process's peak resident memory up to the first result (KiB on Linux, bytes on macOS)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 * 1024)
heavy = [m for m in json.loads(sys.argv[3]) if m in sys.modules]
rr.encoder.cache.clear()  # the same call again, nothing remembered but the rationales
rr.scorer.clear_cache()
t4 = time.perf_counter()
again = rr.rerank(job["question"], job["passages"])
t5 = time.perf_counter()
print(json.dumps({"done": done, "import_s": t1 - t0, "construct_s": t2 - t1, "first_rerank_s": t3 - t2,
                  "second_rerank_s": t5 - t4, "peak_rss_mib": peak, "same_again": again.selected_ids == res.selected_ids,
                  "selected": res.selected_ids, "heavy_modules": heavy,
                  "runtimes": [getattr(rr.encoder, "runtime", None), getattr(rr.scorer, "runtime", None)],
                  "rationales_from_cache": bool(getattr(res.rationale_set, "from_cache", False))}))
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the start-up and agreement sections."""
    p.add_argument("--sections", default="per_query,startup,agreement",
                   help=f"what to measure, comma-separated among {', '.join(SECTIONS)} (default all); the file's "
                   "other sections are kept")
    p.add_argument("--startup-runs", type=int, default=7, help="timed fresh processes per variant (default 7)")
    p.add_argument("--startup-candidates", type=int, default=10, help="BM25 candidates of the start-up query (default 10)")
    p.add_argument("--agreement-questions", type=int, default=30, help="questions compared across runtimes (default 30)")


def sections_of(args: argparse.Namespace) -> list[str]:
    """The sections asked for, validated."""
    got = [s.strip().replace("-", "_") for s in args.sections.split(",") if s.strip()]
    bad = [s for s in got if s not in SECTIONS]
    if not got or bad:
        raise SystemExit(f"--sections takes {', '.join(SECTIONS)}; got {args.sections!r}")
    return got


def portable_command() -> str:
    """:func:`command_line` with an interpreter outside the working tree written as
    ``.venv/bin/python`` (no machine paths in results)."""
    return re.sub(r"^\S*/\.venv/bin/python\S*", ".venv/bin/python", command_line())


def _bm25_items(args: argparse.Namespace, n: int, k: int) -> list[tuple[str, str, list[Any]]]:
    from meteora.datasets.pubmedqa import build_pubmedqa_benchmark
    from meteora.retrievers.bm25 import BM25Retriever

    bench = build_pubmedqa_benchmark(args.data)
    qids = list(bench.splits["test"])[:n]
    questions = [bench.queries[q] for q in qids]
    rankings = BM25Retriever().index(bench.corpus).search(questions, k=k)
    return [(qid, q, list(r.passages)) for qid, q, r in zip(qids, questions, rankings, strict=True)]


def _importtime(env: dict[str, str], job: Path, mode: str) -> dict[str, Any]:
    """The heaviest top-level imports of one child run under ``-X importtime``."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", _CHILD, str(job), mode, json.dumps(HEAVY)],
                         env=env, capture_output=True, text=True, timeout=900, check=True)
    top: list[tuple[str, float]] = []
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2][1:]
        if not name.startswith(" "):  # a top-level import (nested ones are indented)
            top.append((name.strip(), int(parts[1]) / 1e6))
    top.sort(key=lambda kv: -kv[1])
    return {"total_import_s": round(sum(s for _, s in top), 3), "heaviest": {n: round(s, 3) for n, s in top[:8]}}


def measure_startup(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """The ``startup`` section (see the module doc)."""
    [(qid, question, passages)] = _bm25_items(args, 1, args.startup_candidates)
    base_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    base_env.pop("METEORA_RUNTIME", None)
    modes = ("query_only", "default")
    result: dict[str, Any] = {
        "command": portable_command(),
        "what": "wall seconds from starting `python -c` to the first Reranker(...).rerank(question, candidates) "
        "result, fresh interpreter per run, warm OS file cache",
        "question_id": qid,
        "candidates": len(passages),
        "candidate_source": f"BM25 (bm25s) top-{len(passages)} over the PubMedQA chunks",
        "runs_per_variant": args.startup_runs,
        "versions": environment_versions(PACKAGES),
        "machine": {"cpu_count": os.cpu_count(), "loadavg_start": load_average()},
        "variants": {},
    }
    with tempfile.TemporaryDirectory(prefix="meteora-startup-") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"question": question, "passages": [p.text for p in passages]}), encoding="utf-8")
        envs = {label: {**base_env, **({"METEORA_RUNTIME": value} if value else {})} for label, value in RUNTIMES.items()}

        def child(label: str, mode: str) -> dict[str, Any]:
            start = time.time()
            out = subprocess.run([sys.executable, "-c", _CHILD, str(job), mode, json.dumps(HEAVY)], env=envs[label],
                                 capture_output=True, text=True, timeout=900, check=False)
            exited = time.time()
            if out.returncode != 0:
                raise RuntimeError(f"{mode}/{label} child failed:\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["to_first_result_s"] = row.pop("done") - start
            row["process_s"] = exited - start
            # what starting cost on top of the call itself (the same call, made again)
            row["startup_overhead_s"] = row["to_first_result_s"] - row["second_rerank_s"]
            return row

        for mode in modes:
            rows: dict[str, list[dict[str, Any]]] = {label: [] for label in RUNTIMES}
            for label in RUNTIMES:  # untimed: exports, rationale cache, OS file cache
                warm = child(label, mode)
                log(f"  startup {mode}/{label}: warm-up {warm['to_first_result_s']:.2f} s (runtimes {warm['runtimes']})")
            for i in range(args.startup_runs):
                for label in (RUNTIMES if i % 2 == 0 else reversed(list(RUNTIMES))):
                    rows[label].append(child(label, mode))
            for label, runs in rows.items():
                med = {k: round(float(np.median([r[k] for r in runs])), 3)
                       for k in ("to_first_result_s", "startup_overhead_s", "process_s", "import_s", "construct_s",
                                 "first_rerank_s", "second_rerank_s", "peak_rss_mib")}
                result["variants"][f"{mode}.{label}"] = {
                    "METEORA_RUNTIME": RUNTIMES[label] or "unset (auto)",
                    "median": med,
                    "to_first_result_s": [round(r["to_first_result_s"], 3) for r in runs],
                    "peak_rss_mib": [round(r["peak_rss_mib"], 1) for r in runs],
                    "runtimes": runs[0]["runtimes"],
                    "heavy_modules_imported": runs[0]["heavy_modules"],
                    "selected": runs[0]["selected"],
                    "same_selection_every_run": all(r["selected"] == runs[0]["selected"] and r["same_again"] for r in runs),
                    "rationales_from_cache": [r["rationales_from_cache"] for r in runs] if mode == "default" else None,
                    "importtime": _importtime(envs[label], job, mode),
                }
                log(f"  startup {mode}/{label}: median {med['to_first_result_s']:.2f} s to the first result "
                    f"(import {med['import_s']:.2f}, construct {med['construct_s']:.2f}, rerank {med['first_rerank_s']:.2f}; "
                    f"peak RSS {med['peak_rss_mib']:.0f} MiB; "
                    f"the same rerank again {med['second_rerank_s']:.2f})")
            new, old = (result["variants"][f"{mode}.{label}"]["median"] for label in ("onnx", "torch"))
            result[f"{mode}_ratio_torch_over_onnx"] = {
                k: round(old[k] / new[k], 2) for k in ("to_first_result_s", "startup_overhead_s", "peak_rss_mib")
            }
            result[f"{mode}_same_selection_both_runtimes"] = (
                result["variants"][f"{mode}.onnx"]["selected"] == result["variants"][f"{mode}.torch"]["selected"]
            )
    result["machine"]["loadavg_end"] = load_average()
    return result


def measure_runtime_agreement(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """The ``runtime_agreement`` section (see the module doc)."""
    from meteora import Reranker
    from meteora.embeddings.encoder import Encoder
    from meteora.inference.export import ENCODER_TOLERANCE, SCORER_TOLERANCE
    from meteora.scorer import EvidenceScorer

    items = _bm25_items(args, args.agreement_questions, args.candidates)
    # caches on, emptied before each timed call: the embeddings and logits compared
    # afterwards are the ones the call computed (read back, not computed again)
    rerankers = {label: Reranker(None, Encoder(runtime=label), EvidenceScorer(runtime=label)) for label in ("onnx", "torch")}
    assert [rr.encoder.runtime for rr in rerankers.values()] == ["onnx", "torch"]
    emb_diff = cos_diff = logit_diff = 0.0
    same_selected = same_ranked = 0
    seconds: dict[str, list[float]] = {label: [] for label in rerankers}
    rows = []
    for i, (qid, question, passages) in enumerate(items):
        texts = [p.text for p in passages]
        out = {}
        for label in (list(rerankers) if i % 2 == 0 else list(reversed(list(rerankers)))):
            rr = rerankers[label]
            rr.encoder.cache.clear()
            rr.scorer.clear_cache()
            t0 = time.perf_counter()
            res = rr.rerank(question, passages)
            seconds[label].append(time.perf_counter() - t0)
            emb = rr.encoder.encode([question, *texts])
            logits = rr.scorer.evidence_logits([question], [texts])[0]
            out[label] = (res, emb, logits)
        (r_o, e_o, l_o), (r_t, e_t, l_t) = out["onnx"], out["torch"]
        emb_diff = max(emb_diff, float(np.max(np.abs(e_o - e_t))))
        cos_diff = max(cos_diff, float(np.max(np.abs(e_o[1:] @ e_o[0] - e_t[1:] @ e_t[0]))))
        logit_diff = max(logit_diff, float(np.max(np.abs(l_o - l_t))))
        same_selected += r_o.selected_ids == r_t.selected_ids
        same_ranked += [h.id for h in r_o.ranked] == [h.id for h in r_t.ranked]
        rows.append({"qid": qid, "selected_onnx": r_o.selected_ids, "selected_torch": r_t.selected_ids})
    log(f"  agreement: {same_selected}/{len(items)} identical selections; max |diff| embedding {emb_diff:.2e}, "
        f"cosine {cos_diff:.2e}, logit {logit_diff:.2e}")
    med = {label: round(float(np.median(s)), 4) for label, s in seconds.items()}
    return {
        "command": portable_command(),
        "questions": len(items),
        "split": "test (first questions; nothing is fitted or chosen on them: the tolerances were fixed beforehand)",
        "candidates": args.candidates,
        "candidate_source": f"BM25 (bm25s) top-{args.candidates} over the PubMedQA chunks",
        "max_abs_diff": {"embedding_component": emb_diff, "cosine": cos_diff, "evidence_logit": logit_diff},
        "tolerance": {"embedding_component": ENCODER_TOLERANCE, "evidence_logit": SCORER_TOLERANCE},
        "within_tolerance": emb_diff <= ENCODER_TOLERANCE and logit_diff <= SCORER_TOLERANCE,
        "identical_selections": same_selected,
        "identical_rankings": same_ranked,
        "cold_rerank_seconds_median": med,
        "cold_rerank_speedup_torch_over_onnx": round(med["torch"] / med["onnx"], 2),
        "per_query": rows,
    }


def run_sections(args: argparse.Namespace, sections: list[str], log: Callable[[str], None]) -> dict[str, Any]:
    """The start-up sections asked for, by their key in the results file."""
    out: dict[str, Any] = {}
    if "startup" in sections:
        out["startup"] = measure_startup(args, log)
    if "agreement" in sections:
        out["runtime_agreement"] = measure_runtime_agreement(args, log)
    return out
