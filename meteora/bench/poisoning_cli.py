"""``meteora bench poisoning``: the command line of the two poisoning benchmarks.

``--attack new-document`` (the default; :mod:`meteora.bench.poisoning_docs`): attack
families add fabricated documents to the corpus; the default pipeline's poison defence
is measured per family, trained-on and held-out families apart. ``--attack
same-document`` (:mod:`meteora.bench.poisoning`): the paper's protocol, a misleading
passage inserted inside the question's own abstract, with the per-passage defences.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="meteora bench")
    >>> add_poisoning_parser(parser.add_subparsers())
    >>> args = parser.parse_args(["poisoning", "--families", "a,h", "--limit", "10"])
    >>> args.attack, _families(args.families)
    ('new-document', ['study_restated', 'multichunk'])
"""

from __future__ import annotations

import os
from typing import Any

from meteora.bench.attacks import FAMILIES, FAMILY_IDS
from meteora.bench.poisoning import DEFENCES, PoisoningConfig, format_poisoning, run_poisoning
from meteora.bench.poisoning_docs import NewDocumentConfig, format_new_document, run_new_document
from meteora.errors import InvalidInputError

__all__ = ["add_poisoning_parser", "ATTACKS"]

ATTACKS = ("new-document", "same-document")
_BY_LETTER = {v: k for k, v in FAMILY_IDS.items()}


def _families(text: str | None) -> list[str]:
    """Family names from a comma-separated list of names or letters (``None``: all)."""
    if text is None:
        return list(FAMILIES)
    out = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name = _BY_LETTER.get(item, item)
        if name not in FAMILIES:
            raise InvalidInputError(f"unknown attack family {item!r}; choose among {list(FAMILIES)} or their letters "
                                    f"{sorted(_BY_LETTER)}")
        out.append(name)
    return out


def add_poisoning_parser(bsub: Any) -> None:
    """Register ``meteora bench poisoning`` on the ``bench`` sub-parsers."""
    from meteora.bench.poisoning_docs import DEFENCES as DOC_DEFENCES
    from meteora.cli_options import _csv, _positive_int, add_backend_options

    p = bsub.add_parser("poisoning", help="poisoning benchmarks of the verifier stage (PubMedQA test)")
    p.add_argument("--attack", choices=ATTACKS, default="new-document",
                   help="new-document (default): fabricated documents added to the corpus; same-document: a passage "
                        "inserted in the question's own abstract (the paper's protocol)")
    p.add_argument("--split", choices=["test", "train", "all"], default="test")
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="only the first N questions of the split (new-document: with gold evidence; default 250)")
    p.add_argument("--fraction", type=float, default=None,
                   help="share of the questions attacked (default 0.32 new-document, 0.3 same-document)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacked questions and texts")
    p.add_argument("--families", default=None,
                   help=f"new-document: comma-separated families or letters (default all: {','.join(FAMILIES)})")
    p.add_argument("--family", choices=["test", "train"], default="test",
                   help="same-document: poison rules 'test' (default, unseen by the learned check) or 'train'")
    p.add_argument("--defences", type=_csv, default=None,
                   help=f"new-document among {','.join(DOC_DEFENCES)} (default none,default,shape-prior); "
                        f"same-document among {','.join(DEFENCES)} (default all)")
    p.add_argument("--retriever", choices=["dense", "hybrid"], default=None,
                   help="new-document candidates from dense (default) or hybrid retrieval")
    p.add_argument("--candidates", type=_positive_int, default=None,
                   help="candidates per question (default 20 new-document, 50 same-document)")
    p.add_argument("--lm-limit", type=_positive_int, default=None,
                   help="new-document: attacked questions the SmolLM2-written family covers (default all)")
    p.add_argument("--llm-limit", type=_positive_int, default=40,
                   help="same-document: questions the LLM verifier runs on (the first N; default 40)")
    p.add_argument("--no-one-passage", action="store_true",
                   help="new-document: skip the honest one-passage-evidence condition")
    p.add_argument("--check", default=None, help="same-document: poison-check weights folder (default: packaged)")
    p.add_argument("--generator", default=None,
                   help="rationale LM of the reranker ('default' for SmolLM2; default: none, query-only)")
    p.add_argument("--verifier-model", default=None, help="same-document: model of the LLM verifier")
    p.add_argument("--lm", default=None, help="same-document: transformers LM of the perplexity defence")
    p.add_argument("--embedding-model", default=None, help="reranker encoder (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--scorer", default="default", help="reranker evidence scorer: 'default', a folder, or 'none'")
    p.add_argument("--data", default=None, help="PubMedQA folder (default: $METEORA_DATA_DIR)")
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/poisoning_new_document.json "
                                               "or poisoning.json)")
    p.add_argument("--no-write", action="store_true", help="print only")
    add_backend_options(p, title="backend of the LLM verifier (same-document)")
    p.set_defaults(func=_cmd_poisoning)


def _check_out(path: str) -> None:
    out_dir = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or (os.path.exists(out_dir) and not os.path.isdir(out_dir)):
        raise InvalidInputError(f"--out {path!r} must be a file path in an existing or creatable folder")


def _cmd_poisoning(args: Any) -> int:
    """Run ``meteora bench poisoning`` from parsed arguments."""
    from meteora._io import atomic_write_json
    from meteora.cli_options import _command_line, backend_kwargs_from_args

    new = args.attack == "new-document"
    out = args.out or ("benchmarks/results/poisoning_new_document.json" if new else "benchmarks/results/poisoning.json")
    if not args.no_write:  # fail on the output path before minutes of work
        _check_out(out)
    if new:
        config = NewDocumentConfig(
            split=args.split, limit=args.limit or 250, fraction=args.fraction or 0.32, seed=args.seed,
            families=_families(args.families), defences=args.defences or ["none", "default", "shape-prior"],
            retriever=args.retriever or "dense", candidates=args.candidates or 20, lm_limit=args.lm_limit,
            generator=args.generator, scorer=args.scorer, embedding_model=args.embedding_model, data_path=args.data,
            num_threads=args.threads, one_passage=not args.no_one_passage,
        )
        results = run_new_document(config, command=_command_line(args))
        table = format_new_document(results)
    else:
        backend = backend_kwargs_from_args(args, model=args.verifier_model)
        llm = {"backend": backend["backend"], "model": args.verifier_model, "base_url": backend["base_url"],
               **backend["lm_options"]}
        defences = args.defences or list(DEFENCES)
        config = PoisoningConfig(
            split=args.split, limit=args.limit, fraction=args.fraction or 0.3, seed=args.seed, family=args.family,
            defences=defences, candidates=args.candidates or 50, llm_limit=args.llm_limit, check=args.check,
            generator=args.generator, data_path=args.data, num_threads=args.threads, llm=llm, scorer=args.scorer,
            lm=args.lm, embedding_model=args.embedding_model,
        )
        results = run_poisoning(config, command=_command_line(args),
                                llm_api_key=backend.get("api_key") if "llm" in defences else None)
        results["attack"] = "same-document"
        table = format_poisoning(results)
    if not args.no_write:
        atomic_write_json(out, results)
    print(table)
    return 0
