"""The ``meteora`` command line.

Commands::

    meteora models pull                      # install + convert the offline default models
    meteora index corpus.jsonl --out DIR     # build a BM25 + dense (hybrid) index
    meteora search DIR "query" [--rerank]    # search it, optionally select with METEORA
    meteora rerank --query Q --passages F    # select evidence among given passages
    meteora serve [--no-lm] [--port 8080]    # HTTP rerank service (/v1/rerank, /v1/select)
    meteora bench pubmedqa [--methods ...]   # PubMedQA retrieval / selection benchmark
    meteora bench bioasq [DIR] [--methods ...]   # the same on BioASQ golden files
    meteora bench beir DIR [--methods ...]   # the same on any BEIR-format folder
    meteora bench poisoning [--limit N]      # poisoning benchmark of the verifier stage (defences)
    meteora doctor                           # versions, backends, models, caches
    meteora train sft|dpo --base B ...       # fine-tune rationale adapters (QLoRA SFT, DPO)
    meteora eval adapter --base B --adapter A --data F   # base vs adapter perplexity
    meteora eval qa [--limit N]              # PubMedQA answer accuracy: none/gold/meteora/fixed-k

Run ``meteora COMMAND --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence

from meteora.cli_options import (  # noqa: F401  (re-exported: the CLI option API)
    _BACKEND_ONLY_FLAGS,
    API_KEY_ENV_VARS,
    _calibrated_or_number,
    _command_line,
    _csv,
    _csv_ints,
    _floor_value,
    _positive_float,
    _positive_int,
    add_backend_options,
    add_scorer_option,
    add_selector_options,
    api_key_from_args,
    backend_kwargs_from_args,
    scorer_from_args,
    selector_settings_from_args,
)
from meteora.errors import MeteoraError

__all__ = [
    "main",
    "build_parser",
    "add_selector_options",
    "selector_settings_from_args",
    "add_backend_options",
    "backend_kwargs_from_args",
]

logger = logging.getLogger("meteora")


# ---------------------------------------------------------------- models
def _cmd_models_pull(args: argparse.Namespace) -> int:
    from meteora.models import pull

    paths = pull(install=not args.no_install, force=args.force)
    print(f"embedding model: {paths.embedding}")
    print(f"rationale model: {paths.generator}")
    return 0


# ---------------------------------------------------------------- bench
def _cmd_bench(args: argparse.Namespace) -> int:
    import os

    from meteora.bench.pubmedqa import BenchmarkConfig, format_results, run_benchmark

    # the api key stays out of config.options (written into the results file): the
    # generator reads it from $METEORA_API_KEY, set here for this run when --api-key is given
    backend = backend_kwargs_from_args(args, model=args.generator, adapter=args.adapter, with_api_key=False)
    config = BenchmarkConfig(
        methods=args.methods,
        split=args.split,
        limit=args.limit,
        views=args.views,
        ks=args.ks,
        retrieve_k=args.retrieve_k,
        rrf_k=args.rrf_k,
        candidates=args.candidates,
        embedding_model=args.embedding_model,
        data_path=getattr(args, "data_dir", None) or args.data,
        out_dir=args.out,
        num_threads=args.threads,
        plot=not args.no_plot,
        tag=args.tag,
        options={
            "generator": args.generator,
            "scorer": None if str(args.scorer).lower() == "default" else args.scorer,
            "adapter": args.adapter,
            "template": args.template,
            "n": args.n_rationales,
            "include_query": not args.no_query_anchor,
            "max_new_tokens": args.max_new_tokens,
            "batch_size": args.gen_batch_size,
            **backend,
        },
        dataset=args.dataset,
        selector=selector_settings_from_args(args),
        compare=args.compare,
    )
    saved = os.environ.get(API_KEY_ENV_VARS[0])
    if args.api_key:
        os.environ[API_KEY_ENV_VARS[0]] = args.api_key
    try:
        results = run_benchmark(config, command=_command_line(args), write=not args.no_write)
    finally:
        if args.api_key:
            if saved is None:
                os.environ.pop(API_KEY_ENV_VARS[0], None)
            else:
                os.environ[API_KEY_ENV_VARS[0]] = saved
    print(format_results(results))
    return 0


# ---------------------------------------------------------------- index / search / rerank
def _reranker_from_args(args: argparse.Namespace, encoder=None):
    from meteora.reranker import Reranker

    generator = None
    if not args.no_lm:
        from meteora.rationales import RationaleGenerator

        model = None if args.generator in (None, "default") else args.generator
        generator = RationaleGenerator.from_pretrained(
            model,
            template=args.template,
            num_threads=args.threads,
            cache=True,
            **backend_kwargs_from_args(args, model=model),
        )
    return Reranker(
        generator=generator,
        encoder=encoder if encoder is not None else args.embedding_model,
        scorer=scorer_from_args(args),
        template=args.template,
        n_rationales=args.n_rationales,
        settings=selector_settings_from_args(args),
        verifier=True if args.verify else None,
        top_k=args.top_k,
        num_threads=args.threads,
    )


def _cmd_index(args: argparse.Namespace) -> int:
    from meteora.corpus import read_passages
    from meteora.retrievers import BM25Retriever, DenseRetriever, HybridRetriever
    from meteora.retrievers.storage import check_index_target

    check_index_target(args.out)  # refuse a file or a foreign folder before minutes of encoding
    passages = read_passages(args.corpus)
    if args.kind == "bm25":
        retriever = BM25Retriever()
    elif args.kind == "dense":
        retriever = DenseRetriever(args.embedding_model, index_type=args.index_type)
    else:
        retriever = HybridRetriever([BM25Retriever(), DenseRetriever(args.embedding_model, index_type=args.index_type)])
    retriever.index(passages)
    retriever.save(args.out)
    print(f"indexed {len(passages)} passages ({args.kind}) into {args.out}")
    return 0


def _print_passages(title: str, rows) -> None:
    print(title)
    for rank, (pid, score, text) in enumerate(rows, 1):
        snippet = text if len(text) <= 160 else text[:157] + "..."
        print(f"{rank:>3}. [{pid}] {score:.4f}  {snippet}")


def _cmd_search(args: argparse.Namespace) -> int:
    import json

    from meteora.retrievers import load_retriever

    retriever = load_retriever(args.index)
    if not args.rerank:
        ranking = retriever.search(args.query, k=args.k)
        if args.json:
            print(json.dumps([{"id": h.id, "score": h.score, "rank": h.rank, "text": h.text} for h in ranking], indent=2))
        else:
            _print_passages(f"top {len(ranking)} for: {args.query}", [(h.id, h.score, h.text) for h in ranking])
        return 0
    encoder = None
    for r in [retriever, *getattr(retriever, "retrievers", [])]:
        if hasattr(r, "embeddings_for"):
            encoder = r.encoder
    reranker = _reranker_from_args(args, encoder=encoder)
    result = reranker.search(args.query, retriever, k=args.k)
    _print_rerank(result, args)
    return 0


def _print_rerank(result, args: argparse.Namespace) -> None:
    import json

    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    scores = {h.id: h.score for h in result.ranked}
    _print_passages(
        f"selected {len(result.selected)} of {len(result.ranked)} for: {result.query}",
        [(p.id, scores.get(p.id, float("nan")), p.text) for p in result.selected],
    )
    if args.explain:
        print()
        print(result.explain())


def _cmd_rerank(args: argparse.Namespace) -> int:
    from meteora.corpus import read_passages

    passages = read_passages(args.passages)
    reranker = _reranker_from_args(args)
    result = reranker.rerank(args.query, passages)
    _print_rerank(result, args)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from meteora.server.run import serve, settings_from_args

    settings = settings_from_args(args)  # bad limits fail before any model loads
    serve(_reranker_from_args(args), settings, host=args.host, port=args.port)
    return 0


def _add_reranker_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reranker")
    g.add_argument("--no-lm", action="store_true", help="query-only mode: no rationale LM")
    g.add_argument("--generator", default=None, help="rationale LM: hub id or folder (default: offline SmolLM2)")
    g.add_argument("--template", default=None, help="prompt template name")
    g.add_argument("--n-rationales", type=_positive_int, default=None)
    g.add_argument("--verify", action="store_true", help="run the LLM verifier on the selection")
    g.add_argument("--top-k", type=_positive_int, default=None, help="keep at most K selected passages")
    g.add_argument("--embedding-model", default=None, help="hub id or folder (default: packaged all-MiniLM-L6-v2)")
    g.add_argument("--threads", type=_positive_int, default=None)
    g.add_argument("--json", action="store_true", help="print JSON")
    g.add_argument("--explain", action="store_true", help="print which rationale chose which passage")
    add_scorer_option(g)
    add_backend_options(p)
    add_selector_options(p)


# ---------------------------------------------------------------- train / eval
def _existing_file(value: str) -> str:
    import os

    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError(f"file {value!r} does not exist")
    return value


def _training_settings(args: argparse.Namespace, cls):
    fields = {
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "max_length": args.max_length,
        "save_steps": args.save_steps,
        "logging_steps": args.logging_steps,
        "lora_r": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "target_modules": args.target_modules,
        "template": args.template,
        "num_threads": args.threads,
        "seed": args.seed,
        "load_in_4bit": not args.no_4bit,
        "trust_remote_code": args.trust_remote_code,
    }
    if args.epochs is not None:
        fields["num_epochs"] = args.epochs
    if args.lr is not None:
        fields["learning_rate"] = args.lr
    if getattr(args, "beta", None) is not None:
        fields["beta"] = args.beta
    settings = cls(**{k: v for k, v in fields.items() if v is not None})
    settings.validate()
    return settings


def _print_train_result(result) -> None:
    print(f"adapter saved to {result.out_dir}")
    print(f"steps: {result.global_step}  final loss: {result.final_loss}  seconds: {result.seconds:.0f}")
    if result.resumed_from:
        print(f"resumed from {result.resumed_from}")


def _cmd_train_sft(args: argparse.Namespace) -> int:
    from meteora.training import SFTSettings, train_sft

    settings = _training_settings(args, SFTSettings)
    result = train_sft(args.base, args.data, args.out, settings, adapter=args.adapter, resume=not args.no_resume)
    _print_train_result(result)
    return 0


def _cmd_train_dpo(args: argparse.Namespace) -> int:
    from meteora.training import DPOSettings, train_dpo

    settings = _training_settings(args, DPOSettings)
    result = train_dpo(args.base, args.pairs, args.out, settings, sft_adapter=args.sft_adapter, resume=not args.no_resume)
    _print_train_result(result)
    return 0


def _cmd_train_scorer(args: argparse.Namespace) -> int:
    from meteora.training.scorer import ScorerSettings, train_scorer

    settings = ScorerSettings(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, r=args.rank, alpha=args.alpha,
        in_document_label=args.in_document_label, hard_negatives=args.hard_negatives,
        dev_fraction=args.dev_fraction, seed=args.seed, max_length=args.max_length,
    )
    command = "meteora " + " ".join(shlex.quote(a) for a in args._argv)
    prov = train_scorer(
        args.out, settings, data_path=args.data, limit=args.limit, overwrite=args.overwrite,
        num_threads=args.threads, command=command,
    )
    m = prov["metrics"]
    cal = prov["calibration"]
    print(f"scorer written to {args.out} in {prov['seconds']:.0f} s; evidence_weight {cal.get('evidence_weight')}, "
          f"evidence_band {cal.get('evidence_band')}; held-out train F1 evidence "
          f"{m.get('dev_F1_evidence', float('nan')):.3f}, abstract {m.get('dev_F1_abstract', float('nan')):.3f}")
    return 0


def _cmd_train_pairs(args: argparse.Namespace) -> int:
    from meteora.bench.pubmedqa import BenchmarkConfig, BenchmarkContext
    from meteora.rationales import RationaleGenerator
    from meteora.training import build_preference_pairs

    ctx = BenchmarkContext(
        BenchmarkConfig(
            split="train", data_path=args.data, embedding_model=args.embedding_model, num_threads=args.threads
        )
    )
    generator = RationaleGenerator.from_pretrained(
        args.base,
        adapter=args.adapter,
        template=args.template,
        load_in_4bit=args.load_in_4bit,
        num_threads=args.threads,
        cache=True,
        **backend_kwargs_from_args(args, model=args.base, adapter=args.adapter, torch_only=args.load_in_4bit),
    )
    result = build_preference_pairs(
        generator,
        ctx.data,
        split="train",
        view=args.view,
        n_samples=args.samples,
        candidates=args.candidates,
        settings=selector_settings_from_args(args),
        encoder=ctx.encoder(),
        retriever=ctx.retriever("hybrid"),
        temperature=args.temperature,
        seed=args.seed,
        limit=args.limit,
        min_margin=args.min_margin,
        batch_size=args.batch_size,
        out=args.out,
    )
    stats = result.stats
    print(f"{stats['pairs']} pairs from {stats['queries']} train questions written to {args.out}")
    print(f"skipped: {stats['skipped']}  fallback rate: {stats['fallback_rate']:.3f}")
    print(f"mean chosen / rejected score: {stats['mean_chosen_score']} / {stats['mean_rejected_score']}")
    return 0


def _cmd_eval_adapter(args: argparse.Namespace) -> int:
    from meteora._io import atomic_write_json
    from meteora.evaluation import evaluate_adapter, to_markdown

    exclude = None
    if args.exclude_queries_from:
        from meteora.training import load_rationale_sft

        exclude = load_rationale_sft(args.exclude_queries_from).queries()
    result = evaluate_adapter(
        args.base,
        args.adapter,
        args.data,
        exclude_queries=exclude,
        template=args.template,
        max_examples=args.max_examples,
        batch_size=args.batch_size,
        load_in_4bit=args.load_in_4bit,
        num_threads=args.threads,
    )
    if args.out:
        atomic_write_json(args.out, {"command": "meteora " + " ".join(shlex.quote(a) for a in args._argv), **result})
    print(to_markdown(result))
    return 0


def _cmd_eval_qa(args: argparse.Namespace) -> int:
    from meteora._io import atomic_write_json
    from meteora.bench.pubmedqa import BenchmarkConfig, BenchmarkContext
    from meteora.bench.report import environment_versions
    from meteora.errors import InvalidInputError
    from meteora.evaluation.qa import evaluate_qa, meteora_selections
    from meteora.evaluation.qa import to_markdown as qa_to_markdown
    from meteora.rationales import RationaleGenerator

    gen_model = None if args.generator in (None, "default") else args.generator
    gen_args = args
    if args.reader_url and not args.base_url and args.backend != "openai":
        gen_args = argparse.Namespace(**{**vars(args), "lm_timeout": None})  # --lm-timeout: the reader's server
    # the rationale LM is the reader unless a model, adapter or backend flag asks for another one
    own_generator = (
        gen_model is not None
        or args.generator_adapter is not None
        or args.backend != "auto"
        or args.base_url is not None
        or any(getattr(gen_args, a) is not None for a in _BACKEND_ONLY_FLAGS)
    )
    backend = backend_kwargs_from_args(gen_args, model=gen_model, adapter=args.generator_adapter) if own_generator else {}
    if args.reader_url:
        if args.reader != "default" or args.reader_adapter:
            raise InvalidInputError(
                "--reader and --reader-adapter name a local reader; with --reader-url the server holds the "
                "weights: pass the served model name as --reader-model (and serve the adapter there)"
            )
    elif args.reader_model:
        raise InvalidInputError(
            "--reader-model names the model served at --reader-url; pass --reader-url too "
            "(a local reader is --reader)"
        )
    ctx = BenchmarkContext(
        BenchmarkConfig(split=args.split, limit=args.limit, data_path=args.data, num_threads=args.threads)
    )
    retriever = ctx.retriever("hybrid")
    if args.reader_url:
        reader = RationaleGenerator.from_pretrained(
            args.reader_model,
            backend="openai",
            base_url=args.reader_url,
            api_key=api_key_from_args(args),
            cache=True,
            lm_options={"timeout": args.lm_timeout} if args.lm_timeout is not None else None,
        )
    else:
        reader = RationaleGenerator.from_pretrained(
            None if args.reader == "default" else args.reader,
            adapter=args.reader_adapter,
            num_threads=args.threads,
            cache=True,
        )
    generator = reader
    if own_generator:
        generator = RationaleGenerator.from_pretrained(
            gen_model,
            adapter=args.generator_adapter,
            num_threads=args.threads,
            cache=True,
            **backend,
        )
    settings = selector_settings_from_args(args)
    selections = {}
    for cond in args.conditions:
        if cond.startswith("meteora"):
            selections[cond] = meteora_selections(
                ctx.data,
                ctx.qids,
                generator=None if cond == "meteora-query-only" else generator,
                retriever=retriever,
                encoder=ctx.encoder(),
                candidates=args.candidates,
                settings=settings,
            )
    result = evaluate_qa(
        reader,
        ctx.data,
        split=args.split,
        conditions=tuple(args.conditions),
        k=args.k,
        limit=args.limit,
        selections=selections,
        retriever=retriever,
        answer_mode=args.answer_mode,
        calibrate=args.calibrate,
        prompt_format=args.prompt_format,
    )
    if args.out:
        atomic_write_json(
            args.out,
            {
                "command": _command_line(args),
                "versions": environment_versions(),
                **result,
            },
        )
    print(qa_to_markdown(result))
    return 0


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="base model: hub id, folder, or 'smollm2' (offline default)")
    p.add_argument("--out", required=True, help="adapter output folder (checkpoints go in OUT/checkpoints)")
    p.add_argument("--template", default=None, help="prompt template (default: med-rationale)")
    p.add_argument("--max-steps", type=_positive_int, default=None, help="stop after N optimiser steps")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--grad-accum", type=_positive_int, default=None)
    p.add_argument("--max-length", type=_positive_int, default=None)
    p.add_argument("--save-steps", type=_positive_int, default=None)
    p.add_argument("--logging-steps", type=_positive_int, default=None)
    p.add_argument("--lora-r", type=_positive_int, default=None)
    p.add_argument("--lora-alpha", type=float, default=None)
    p.add_argument("--target-modules", default=None, help="'q-v', 'all-attn', 'all-linear' or comma-separated names")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--no-4bit", action="store_true", help="plain LoRA instead of 4-bit QLoRA")
    p.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")


def _add_bench_parser(bsub, dataset: str, help_text: str) -> None:
    from meteora.bench.context import DATASET_SPLITS
    from meteora.bench.methods import available_methods

    splits = list(DATASET_SPLITS[dataset])
    pq = bsub.add_parser(dataset, help=help_text)
    pq.add_argument("--methods", type=_csv, default=["bm25", "dense", "hybrid"],
                    help=f"comma-separated methods (available: {','.join(available_methods())}; "
                    "METEORA ones also as NAME-wN for window N)")
    pq.add_argument("--split", choices=splits or None, default="test", help="question split (default: test)")
    pq.add_argument("--limit", type=_positive_int, default=None, help="only the first N questions of the split")
    pq.add_argument("--views", type=_csv, default=None, help="qrels views to score (default: all of the dataset's)")
    pq.add_argument("--ks", type=_csv_ints, default=[1, 2, 3, 4, 5, 8, 16, 32], help="fixed-k baselines")
    pq.add_argument("--retrieve-k", type=_positive_int, default=100, help="depth of each ranking (default 100)")
    pq.add_argument("--rrf-k", type=_positive_int, default=60, help="RRF constant of the hybrid (default 60)")
    pq.add_argument("--candidates", type=_positive_int, default=50, help="hybrid candidates per query for selection methods")
    pq.add_argument("--embedding-model", default=None, help="hub id or folder (default: packaged all-MiniLM-L6-v2)")
    pq.add_argument("--data", default=None, help=f"{dataset} data file or folder (default: $METEORA_DATA_DIR or ../shared/data)")
    if dataset != "pubmedqa":  # bench bioasq [DIR], bench beir DIR
        pq.add_argument("data_dir", metavar="DIR", nargs=None if dataset == "beir" else "?", default=None,
                        help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)" if dataset == "beir"
                        else "folder of *_golden.json files (default: $METEORA_DATA_DIR/bioasq-dev)")
    pq.add_argument("--out", default="benchmarks/results",
                    help="results folder, or the results .json file (the PNG goes beside it); checked before the run")
    pq.add_argument("--threads", type=_positive_int, default=None, help="torch threads (default: $METEORA_NUM_THREADS)")
    g = pq.add_argument_group("METEORA methods")
    g.add_argument("--generator", default=None, help="rationale LM: hub id or folder (default: offline SmolLM2)")
    g.add_argument("--adapter", default=None, help="PEFT adapter (hub id or folder) for the rationale LM")
    g.add_argument("--template", default=None, help="prompt template (default: the model's preset, 'chat' for SmolLM2)")
    g.add_argument("--n-rationales", type=_positive_int, default=None, help="rationales per query (default: template's)")
    g.add_argument("--no-query-anchor", action="store_true", help="do not keep the query as an extra rationale")
    g.add_argument("--max-new-tokens", type=_positive_int, default=None, help="generation cap (default: template's)")
    g.add_argument("--gen-batch-size", type=_positive_int, default=8, help="queries per generation batch")
    g.add_argument("--scorer", default="default",
                   help="evidence scorer of the methods that use one: 'default' (the packaged adapter) or a folder "
                        "from `meteora train scorer` (the *-no-scorer methods run without)")
    add_backend_options(pq, title="rationale LM backend of the METEORA methods")
    add_selector_options(pq, title="evidence selector of the METEORA methods (-wN and ablations override)")
    pq.add_argument("--compare", type=_csv, default=[],
                    help="paired bootstrap of F1 differences, e.g. meteora:dense@3,meteora:meteora-no-scorer")
    pq.add_argument("--tag", default=None, help=f"suffix of the results file names ({dataset}_<split>_<tag>.json)")
    pq.add_argument("--no-plot", action="store_true", help="skip the PNG")
    pq.add_argument("--no-write", action="store_true", help="print only; write no files")
    pq.set_defaults(func=_cmd_bench, dataset=dataset)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``meteora`` command."""
    parser = argparse.ArgumentParser(prog="meteora", description="Rationale-driven evidence selection for medical RAG.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    from meteora import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="manage the offline default models")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    pull = msub.add_parser("pull", help="install and convert the offline default models (idempotent)")
    pull.add_argument("--force", action="store_true", help="redo the SmolLM2 conversion")
    pull.add_argument("--no-install", action="store_true", help="do not pip-install missing model packages")
    pull.set_defaults(func=_cmd_models_pull)

    idx = sub.add_parser("index", help="index a passage file (JSONL/JSON/text) into a folder")
    idx.add_argument("corpus", help="passages: .jsonl (objects with 'text'), .json list, or text (one per line)")
    idx.add_argument("--out", required=True, help="index folder to write (atomically)")
    idx.add_argument("--kind", choices=["bm25", "dense", "hybrid"], default="hybrid")
    idx.add_argument("--index-type", choices=["flat", "hnsw", "ivf"], default="flat", help="FAISS index type")
    idx.add_argument("--embedding-model", default=None, help="hub id or folder (default: packaged all-MiniLM-L6-v2)")
    idx.set_defaults(func=_cmd_index)

    se = sub.add_parser("search", help="search an index folder, optionally reranking with METEORA")
    se.add_argument("index", help="folder written by `meteora index`")
    se.add_argument("query")
    se.add_argument("-k", type=_positive_int, default=10, help="hits (candidates when --rerank); default 10")
    se.add_argument("--rerank", action="store_true", help="select evidence among the k hits with METEORA")
    _add_reranker_options(se)
    se.set_defaults(func=_cmd_search)

    rr = sub.add_parser("rerank", help="select evidence for one query among given passages")
    rr.add_argument("--query", required=True)
    rr.add_argument("--passages", required=True, help=".jsonl / .json / text file of candidate passages")
    _add_reranker_options(rr)
    rr.set_defaults(func=_cmd_rerank)

    from meteora.server.run import add_serve_options

    sv = sub.add_parser("serve", help="serve the reranker over HTTP: /v1/rerank (Cohere/Jina shape), /v1/select")
    _add_reranker_options(sv)
    add_serve_options(sv)
    sv.set_defaults(func=_cmd_serve)

    train = sub.add_parser("train", help="fine-tune rationale adapters (needs the 'train' extra)")
    tsub = train.add_subparsers(dest="train_command", required=True, metavar="METHOD")
    sft = tsub.add_parser("sft", help="QLoRA supervised fine-tuning on med-rationale JSONL")
    sft.add_argument("--data", required=True, type=_existing_file, help="JSONL rows {query, rationales[, text]}")
    sft.add_argument("--adapter", default=None, help="continue training this adapter")
    _add_training_options(sft)
    sft.set_defaults(func=_cmd_train_sft)
    dpo = tsub.add_parser("dpo", help="DPO on preference pairs (JSONL {prompt|query, chosen, rejected})")
    dpo.add_argument("--pairs", required=True, type=_existing_file)
    dpo.add_argument("--sft-adapter", default=None, help="start from this SFT adapter")
    dpo.add_argument("--beta", type=float, default=None, help="DPO beta (default 0.05)")
    _add_training_options(dpo)
    dpo.set_defaults(func=_cmd_train_dpo)

    from meteora.training.scorer import ScorerSettings

    sd = ScorerSettings()
    ts = tsub.add_parser(
        "scorer", help="train the evidence scorer (LoRA cross-encoder) on PubMedQA train questions"
    )
    ts.add_argument("--out", required=True, help="adapter folder to write (adapter + provenance.json)")
    ts.add_argument("--overwrite", action="store_true", help="replace an existing scorer folder")
    ts.add_argument("--epochs", type=float, default=sd.epochs)
    ts.add_argument("--lr", type=float, default=sd.lr)
    ts.add_argument("--batch-size", type=_positive_int, default=sd.batch_size)
    ts.add_argument("--rank", type=_positive_int, default=sd.r, help="LoRA rank")
    ts.add_argument("--alpha", type=_positive_int, default=sd.alpha, help="LoRA alpha")
    ts.add_argument("--max-length", type=_positive_int, default=sd.max_length)
    ts.add_argument("--in-document-label", type=float, default=sd.in_document_label,
                    help="soft label of the non-evidence chunks of a question's own abstract")
    ts.add_argument("--hard-negatives", type=int, default=sd.hard_negatives,
                    help="chunks of other abstracts per question (label 0)")
    ts.add_argument("--dev-fraction", type=float, default=sd.dev_fraction,
                    help="train questions held out to calibrate the selector's evidence weight and band")
    ts.add_argument("--seed", type=int, default=sd.seed)
    ts.add_argument("--limit", type=_positive_int, default=None, help="only the first N train questions (smoke runs)")
    ts.add_argument("--data", default=None, help="folder or ori_pqal.json (default: $METEORA_DATA_DIR or ../shared/data)")
    ts.add_argument("--threads", type=_positive_int, default=None)
    ts.set_defaults(func=_cmd_train_scorer)

    pp = tsub.add_parser(
        "pairs", help="build DPO preference pairs on PubMedQA train questions (gold hits of the selection)"
    )
    pp.add_argument("--base", default="smollm2", help="generator: hub id, folder, or 'smollm2' (offline default)")
    pp.add_argument("--adapter", default=None, help="PEFT adapter of the generator (e.g. the SFT adapter)")
    pp.add_argument("--template", default=None, help="prompt template (default: the generator's)")
    pp.add_argument("--load-in-4bit", action="store_true", help="load the generator in 4-bit NF4 (bitsandbytes)")
    pp.add_argument("--out", required=True, help="pairs JSONL to write (stats go to <stem>.stats.json)")
    pp.add_argument("--view", choices=["evidence", "abstract"], default="evidence", help="which chunks are gold")
    pp.add_argument("--samples", type=_positive_int, default=4, help="rationale sets sampled per question")
    pp.add_argument("--limit", type=_positive_int, default=None, help="only the first N train questions")
    pp.add_argument("--candidates", type=_positive_int, default=50)
    pp.add_argument("--temperature", type=float, default=0.7)
    pp.add_argument("--min-margin", type=float, default=0.1)
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--batch-size", type=_positive_int, default=8, help="questions per generation batch")
    pp.add_argument("--embedding-model", default=None, help="hub id or folder (default: packaged all-MiniLM-L6-v2)")
    pp.add_argument("--data", default=None, help="folder or ori_pqal.json (default: $METEORA_DATA_DIR or ../shared/data)")
    pp.add_argument("--threads", type=_positive_int, default=None)
    add_backend_options(pp, title="generator backend (--base is the served model name with --base-url)")
    add_selector_options(pp)
    pp.set_defaults(func=_cmd_train_pairs)

    from meteora.training.reader import add_train_reader_parser

    add_train_reader_parser(tsub)

    ev = sub.add_parser("eval", help="evaluate adapters and answer accuracy")
    esub = ev.add_subparsers(dest="eval_command", required=True, metavar="WHAT")
    ea = esub.add_parser("adapter", help="perplexity / loss of base vs adapter on a held-out JSONL")
    ea.add_argument("--base", required=True)
    ea.add_argument("--adapter", required=True)
    ea.add_argument("--data", required=True, type=_existing_file)
    ea.add_argument("--template", default="med-rationale")
    ea.add_argument("--exclude-queries-from", type=_existing_file, default=None,
                    help="skip held-out rows whose query is in this (training) file, e.g. the SFT data")
    ea.add_argument("--max-examples", type=_positive_int, default=None)
    ea.add_argument("--batch-size", type=_positive_int, default=8)
    ea.add_argument("--load-in-4bit", action="store_true")
    ea.add_argument("--threads", type=_positive_int, default=None)
    ea.add_argument("--out", default=None, help="write the results JSON here")
    ea.set_defaults(func=_cmd_eval_adapter)
    eq = esub.add_parser("qa", help="PubMedQA yes/no/maybe accuracy of a reader LM under several context conditions")
    eq.add_argument("--reader", default="default", help="reader LM: hub id, folder, or 'default' (SmolLM2)")
    eq.add_argument("--reader-adapter", default=None)
    eq.add_argument("--generator", default=None, help="rationale LM for the 'meteora' condition (default: the reader)")
    eq.add_argument("--generator-adapter", default=None)
    eq.add_argument("--conditions", type=_csv, default=["none", "gold", "meteora", "meteora-query-only", "fixed-k"])
    eq.add_argument("--split", choices=["test"], default="test")
    eq.add_argument("--limit", type=_positive_int, default=None)
    eq.add_argument("--k", type=_positive_int, default=3, help="k of the fixed-k condition")
    eq.add_argument("--candidates", type=_positive_int, default=50)
    eq.add_argument("--answer-mode", choices=["loglik", "generate"], default="loglik")
    eq.add_argument("--calibrate", action="store_true",
                    help="loglik only: divide out the label prior measured on content-free prompts")
    eq.add_argument("--prompt-format", choices=["harness", "alpaca"], default="harness",
                    help="'alpaca': the raw-text prompt a `meteora train reader` adapter was trained on")
    eq.add_argument("--data", default=None)
    eq.add_argument("--threads", type=_positive_int, default=None)
    eq.add_argument("--out", default=None, help="write the results JSON here")
    eq.add_argument("--reader-url", default=None, metavar="URL",
                    help="answer with a model on an OpenAI-compatible server that returns logprobs (vLLM, "
                         "llama.cpp server...), e.g. http://127.0.0.1:8000/v1; labels are scored by next-token "
                         "log-probabilities. --api-key and --lm-timeout apply to it too")
    eq.add_argument("--reader-model", default=None, help="with --reader-url: the served model name")
    add_backend_options(eq, title="backend of the rationale LM of the meteora conditions (default: the reader's)")
    add_selector_options(eq, title="evidence selector of the meteora conditions")
    eq.set_defaults(func=_cmd_eval_qa)

    bench = sub.add_parser("bench", help="run a benchmark")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    _add_bench_parser(bsub, "pubmedqa", "retrieval and evidence selection on PubMedQA contexts")
    _add_bench_parser(bsub, "bioasq", "retrieval and evidence selection on BioASQ (abstract chunks)")
    _add_bench_parser(bsub, "beir", "retrieval and evidence selection on a BEIR-format dataset folder")
    from meteora.bench.poisoning import add_poisoning_parser

    add_poisoning_parser(bsub)
    from meteora.doctor import add_doctor_parser

    add_doctor_parser(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    from meteora.console import setup_logging, third_party_level

    setup_logging(verbose, quiet)  # also holds third-party loggers (faiss, bm25s...) at WARNING unless -v
    for noisy in ("httpx", "urllib3", "filelock", "sentence_transformers", "transformers", "numba"):
        logging.getLogger(noisy).setLevel(third_party_level(verbose, quiet))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meteora`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = argv
    _setup_logging(args.verbose, args.quiet)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except MeteoraError as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
