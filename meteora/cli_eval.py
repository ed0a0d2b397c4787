"""The ``meteora eval`` commands: base vs adapter perplexity (``eval adapter``) and PubMedQA
answer accuracy of a reader LM under several context conditions (``eval qa``).
:func:`add_eval_parser` hangs them on the command line's sub-parsers; :mod:`meteora.cli` calls it.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="meteora")
    >>> _ = add_eval_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["eval", "qa", "--limit", "5", "--conditions", "none,gold"])
    >>> args.eval_command, args.conditions, args.func.__name__
    ('qa', ['none', 'gold'], '_cmd_eval_qa')
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from meteora.cli_options import (
    _BACKEND_ONLY_FLAGS,
    _command_line,
    _csv,
    _existing_file,
    _positive_int,
    add_backend_options,
    add_selector_options,
    api_key_from_args,
    backend_kwargs_from_args,
    selector_settings_from_args,
)

__all__ = ["add_eval_parser"]


def _cmd_eval_adapter(args: argparse.Namespace) -> int:
    from meteora._io import atomic_write_json
    from meteora.training.adapter_eval import evaluate_adapter, to_markdown

    exclude = None
    if args.exclude_queries_from:
        from meteora.training.rationale_sft import load_rationale_sft

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
    )
    if args.out:
        atomic_write_json(args.out, {"command": "meteora " + " ".join(shlex.quote(a) for a in args._argv), **result})
    print(to_markdown(result))
    return 0


def _cmd_eval_qa(args: argparse.Namespace) -> int:
    from meteora._io import atomic_write_json
    from meteora.bench.config import BenchmarkConfig
    from meteora.bench.context import BenchmarkContext
    from meteora.bench.report import environment_versions
    from meteora.errors import InvalidInputError
    from meteora.evaluation.qa import evaluate_qa
    from meteora.evaluation.qa_report import to_markdown as qa_to_markdown
    from meteora.evaluation.selections import meteora_selections
    from meteora.rationales.generator import RationaleGenerator

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


def add_eval_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``meteora eval`` (adapter, qa) on the command line's sub-parsers."""
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
    return ev
