"""The ``meteora`` command line.

Commands::

    meteora models pull                      # fetch the offline default models
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

Run ``meteora COMMAND --help`` for the options of each. This module builds the top-level
parser, dispatches, and holds the index/search/rerank/serve/bench handlers; the ``train`` and
``eval`` commands live in :mod:`meteora.cli_train` and :mod:`meteora.cli_eval`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from meteora.cli_options import (
    API_KEY_ENV_VARS,
    _command_line,
    _csv,
    _csv_ints,
    _positive_float,
    _positive_int,
    add_backend_options,
    add_scorer_option,
    add_selector_options,
    backend_kwargs_from_args,
    scorer_from_args,
    selector_settings_from_args,
)
from meteora.errors import InvalidInputError, MeteoraError
from meteora.settings import apply_thread_setting

__all__ = ["main", "build_parser"]

logger = logging.getLogger("meteora")


# ---------------------------------------------------------------- models
def _cmd_models_pull(args: argparse.Namespace) -> int:
    from meteora.model_pull import pull

    paths = pull(install=not args.no_install, force=args.force)
    print(f"embedding model: {paths.embedding}")
    print(f"rationale model: {paths.gguf}")
    print(f"rationale model, transformers copy: {paths.generator or 'not converted (see the note)'}")
    for folder in paths.onnx:
        print(f"ONNX export (fast start-up): {folder}")
    for note in paths.notes:
        print(f"note: {note}")
    return 0


# ---------------------------------------------------------------- bench
def _cmd_bench(args: argparse.Namespace) -> int:
    import os

    from meteora.bench.config import BenchmarkConfig
    from meteora.bench.pubmedqa import format_results, run_benchmark

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
    print(format_results(results, ks_shown=config.ks))  # every k asked for, none hidden
    return 0


# ---------------------------------------------------------------- index / search / rerank
def _reranker_from_args(args: argparse.Namespace, encoder=None):
    from meteora.reranker import Reranker

    generator = None
    if not args.no_lm:
        from meteora.rationales.generator import RationaleGenerator

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
        n_rationales=args.n_rationales,
        settings=selector_settings_from_args(args),
        verifier=[*(() if args.no_defence else ("default",)), *((True,) if args.verify else ())],
        top_k=args.top_k,
    )


def _cmd_index(args: argparse.Namespace) -> int:
    from meteora.retrievers.bm25 import BM25Retriever
    from meteora.retrievers.dense import DenseRetriever
    from meteora.retrievers.hybrid import HybridRetriever
    from meteora.retrievers.storage import check_index_target

    if args.ray is None and (args.workers is not None or args.gpus_per_worker is not None):
        raise InvalidInputError("--workers and --gpus-per-worker place encoders on a Ray cluster; add --ray ADDRESS "
                                "('local' starts one here), or leave them out")
    check_index_target(args.out)  # refuse a file or a foreign folder before minutes of encoding
    dense = {"index_type": args.index_type}
    if args.kind == "bm25":
        retriever = BM25Retriever()
    elif args.kind == "dense":
        retriever = DenseRetriever(args.embedding_model, **dense)
    else:
        retriever = HybridRetriever([BM25Retriever(), DenseRetriever(args.embedding_model, **dense)])
    if args.ray is not None:
        from meteora.distributed.build import build_index_on_ray

        built = build_index_on_ray(
            args.corpus, args.out, retriever, address=args.ray, workers=args.workers, batch_size=args.chunk_size,
            gpus_per_worker=args.gpus_per_worker or 0.0,
        )
    else:
        from meteora.retrievers.streaming import build_index

        built = build_index(args.corpus, args.out, retriever, chunk_size=args.chunk_size)
    print(f"indexed {len(built)} passages ({args.kind}) into {args.out}")
    return 0


def _print_passages(title: str, rows) -> None:
    print(title)
    for rank, (pid, score, text) in enumerate(rows, 1):
        snippet = text if len(text) <= 160 else text[:157] + "..."
        print(f"{rank:>3}. [{pid}] {score:.4f}  {snippet}")


def _cmd_search(args: argparse.Namespace) -> int:
    import json

    from meteora.retrievers.base import load_retriever

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
        out = result.to_dict()
        if args.explain:
            out["explanation"] = result.explain()
        print(json.dumps(out, indent=2, ensure_ascii=False))
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
    serve(_reranker_from_args(args), settings, host=args.host, port=args.port, access_log=args.access_log)
    return 0


def _add_reranker_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reranker")
    g.add_argument("--no-lm", action="store_true", help="query-only mode: no rationale LM")
    g.add_argument("--generator", default=None, help="rationale LM: hub id or folder (default: offline SmolLM2)")
    g.add_argument("--template", default=None, help="prompt template name")
    g.add_argument("--n-rationales", type=_positive_int, default=None)
    g.add_argument("--verify", action="store_true", help="also run the LLM verifier on the selection")
    g.add_argument("--no-defence", action="store_true",
                   help="turn off the default poison defence (drops suspicious added documents, reports conflicts)")
    g.add_argument("--top-k", type=_positive_int, default=None, help="keep at most K selected passages")
    g.add_argument("--embedding-model", default=None, help="hub id or folder (default: packaged all-MiniLM-L6-v2)")
    g.add_argument("--threads", type=_positive_int, default=None)
    g.add_argument("--json", action="store_true", help="print JSON")
    g.add_argument("--explain", action="store_true",
                   help="print which rationale chose which passage (with --json: as the 'explanation' field)")
    add_scorer_option(g)
    add_backend_options(p)
    add_selector_options(p)


def _add_bench_parser(bsub, dataset: str, help_text: str) -> None:
    from meteora.bench.datasets import DATASET_SPLITS
    from meteora.bench.method_names import available_methods

    splits = list(DATASET_SPLITS[dataset])
    pq = bsub.add_parser(dataset, help=help_text)
    pq.add_argument("--methods", type=_csv, default=["bm25", "dense", "hybrid"],
                    help=f"comma-separated methods (available: {','.join(available_methods())}; "
                    "METEORA ones also as NAME-wN for window N)")
    default_split = splits[0] if splits else "test"
    pq.add_argument("--split", choices=splits or None, default=default_split,
                    help=f"question split (default: {default_split})"
                    + ("; train = 7B (2019), dev = 8B (2020)" if dataset == "bioasq" else ""))
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
    pull = msub.add_parser(
        "pull", help="fetch the offline default models (MiniLM, the SmolLM2 GGUF) and convert SmolLM2 for "
        "the transformers backend when the gguf extra is installed (idempotent)")
    pull.add_argument("--force", action="store_true", help="redo the SmolLM2 conversion (needs the gguf extra)")
    pull.add_argument("--no-install", action="store_true", help="download nothing: only check and convert")
    pull.set_defaults(func=_cmd_models_pull)

    idx = sub.add_parser("index", help="index a passage file (JSONL/Parquet/JSON/text) into a folder")
    idx.add_argument("corpus", help="passages: .jsonl (objects with 'text'), .parquet ('text' column), .json list, "
                     "or text (one per line); read, encoded and written a chunk at a time")
    idx.add_argument("--out", required=True, help="index folder to write (atomically)")
    idx.add_argument("--kind", choices=["bm25", "dense", "hybrid"], default="hybrid")
    idx.add_argument("--index-type", choices=["auto", "flat", "hnsw", "ivf", "ivfpq"], default="auto",
                     help="FAISS index type (default auto: exact up to 100,000 passages, IVF-PQ above)")
    idx.add_argument("--embedding-model", default=None, help="hub id or folder (default: packaged all-MiniLM-L6-v2)")
    idx.add_argument("--chunk-size", type=_positive_int, default=10_000, help="passages per read/encode/write step")
    idx.add_argument("--ray", metavar="ADDRESS", default=None,
                     help="encode on a Ray cluster: 'auto' (the running cluster), 'local' (start one here), or "
                          "host:port / ray://host:10001 (needs the 'distributed' extra)")
    idx.add_argument("--workers", type=_positive_int, default=None,
                     help="encoder actors on the Ray cluster (default: one per CPU, or per GPU with --gpus-per-worker)")
    idx.add_argument("--gpus-per-worker", type=_positive_float, default=None, metavar="N",
                     help="GPUs per encoder actor on the Ray cluster (e.g. 1; default: encode on CPU)")
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
    rr.add_argument("--passages", required=True,
                    help=".jsonl / .json / text file of candidate passages, or - for standard input (JSON list, "
                         "JSONL or text lines, told by its first character)")
    _add_reranker_options(rr)
    rr.set_defaults(func=_cmd_rerank)

    from meteora.server.run import add_serve_options

    sv = sub.add_parser("serve", help="serve the reranker over HTTP: /v1/rerank (Cohere/Jina shape), /v1/select")
    _add_reranker_options(sv)
    add_serve_options(sv)
    sv.set_defaults(func=_cmd_serve)

    from meteora.cli_train import add_train_parser

    add_train_parser(sub)
    from meteora.cli_eval import add_eval_parser

    add_eval_parser(sub)

    bench = sub.add_parser("bench", help="run a benchmark")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    _add_bench_parser(bsub, "pubmedqa", "retrieval and evidence selection on PubMedQA contexts")
    _add_bench_parser(bsub, "bioasq", "retrieval and evidence selection on BioASQ (abstract chunks)")
    _add_bench_parser(bsub, "beir", "retrieval and evidence selection on a BEIR-format dataset folder")
    from meteora.bench.poisoning_cli import add_poisoning_parser

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
        # torch's thread count is process-wide: set here, where the process starts
        # (--threads, else $METEORA_NUM_THREADS), never by a constructor
        apply_thread_setting(getattr(args, "threads", None))
        return func(args)
    except MeteoraError as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
