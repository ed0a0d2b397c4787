"""The ``meteora train`` commands: fine-tune rationale adapters (QLoRA SFT, DPO), build DPO
preference pairs, train the evidence scorer, the learned cut and the yes/no/maybe reader
(:mod:`meteora.training.reader`). :func:`add_train_parser` hangs them on the command line's
sub-parsers; :mod:`meteora.cli` calls it.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="meteora")
    >>> _ = add_train_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["train", "dpo", "--base", "smollm2", "--pairs", __file__, "--out", "o"])
    >>> args.train_command, args.func.__name__
    ('dpo', '_cmd_train_dpo')
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from meteora.cli_options import (
    _existing_file,
    _positive_int,
    add_backend_options,
    add_selector_options,
    backend_kwargs_from_args,
    selector_settings_from_args,
)

__all__ = ["add_train_parser"]


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
    from meteora.training.sft import SFTSettings, train_sft

    settings = _training_settings(args, SFTSettings)
    result = train_sft(args.base, args.data, args.out, settings, adapter=args.adapter, resume=not args.no_resume)
    _print_train_result(result)
    return 0


def _cmd_train_dpo(args: argparse.Namespace) -> int:
    from meteora.training.dpo import DPOSettings, train_dpo

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
        args.out, settings, data_path=args.data, limit=args.limit, overwrite=args.overwrite, command=command,
    )
    m = prov["metrics"]
    cal = prov["calibration"]
    print(f"scorer written to {args.out} in {prov['seconds']:.0f} s; evidence_weight {cal.get('evidence_weight')}, "
          f"evidence_band {cal.get('evidence_band')}; held-out train F1 evidence "
          f"{m.get('dev_F1_evidence', float('nan')):.3f}, abstract {m.get('dev_F1_abstract', float('nan')):.3f}")
    return 0


def _cmd_train_cut(args: argparse.Namespace) -> int:
    from meteora.training.cut import CutTrainingSettings, train_cut

    settings = CutTrainingSettings(n_score=args.n_score, rounds=args.rounds, seed=args.seed, folds=args.folds)
    command = "meteora " + " ".join(shlex.quote(a) for a in args._argv)
    prov = train_cut(
        args.out, settings, scorer=args.scorer, pubmedqa_path=args.pubmedqa, bioasq_path=args.bioasq,
        limit=args.limit, overwrite=args.overwrite, command=command,
    )
    for name in ("final", "query_only", "stage1"):
        m = prov["metrics"][name]
        print(f"{name:10s} train-side CV F1: " + ", ".join(
            f"{ds} {v['F1']:.3f} ({v['mean_selected']:.2f} chunks, NDCG@10 {v['NDCG@10']:.3f})" for ds, v in m.items()))
    print(f"learned cut written to {args.out} in {prov['seconds']:.0f} s")
    return 0


def _cmd_train_cut_onnx(args: argparse.Namespace) -> int:
    from meteora.training.cut import export_cut_onnx

    command = "meteora " + " ".join(shlex.quote(a) for a in args._argv)
    prov = export_cut_onnx(args.folder, command=command)
    for name, entry in prov["models"].items():
        diffs = entry["onnx"]["max_abs_diff_vs_lightgbm"]
        print(f"{name:10s} -> {entry['onnx']['file']} (largest |P(onnx) - P(lightgbm)|: "
              + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()) + ")")
    return 0


def _cmd_train_pairs(args: argparse.Namespace) -> int:
    from meteora.bench.config import BenchmarkConfig
    from meteora.bench.context import BenchmarkContext
    from meteora.rationales.generator import RationaleGenerator
    from meteora.training.preferences import build_preference_pairs

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


def add_train_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``meteora train`` (sft, dpo, scorer, pairs, reader, poison-defence) on the command line's sub-parsers."""
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

    from meteora.training.cut import CutTrainingSettings

    cd = CutTrainingSettings()
    tc = tsub.add_parser(
        "cut", help="train the learned cut (LightGBM) on PubMedQA train + BioASQ 7B questions (test/dev refused)"
    )
    tc.add_argument("--out", required=True,
                    help="folder to write (stage1, final, query_only as .txt and .onnx, provenance.json)")
    tc.add_argument("--overwrite", action="store_true", help="replace an existing learned-cut folder")
    tc.add_argument("--n-score", type=int, default=cd.n_score, help="candidates (stage 1's top) the scorer reads")
    tc.add_argument("--rounds", type=_positive_int, default=cd.rounds, help="boosting rounds")
    tc.add_argument("--folds", type=_positive_int, default=cd.folds, help="cross-validation folds (by question)")
    tc.add_argument("--seed", type=int, default=cd.seed)
    tc.add_argument("--scorer", default="default", help="evidence scorer: 'default' or a `meteora train scorer` folder")
    tc.add_argument("--pubmedqa", default=None, help="PubMedQA folder (default: $METEORA_DATA_DIR/pubmedqa)")
    tc.add_argument("--bioasq", default=None, help="BioASQ golden files folder (default: $METEORA_DATA_DIR/bioasq-dev)")
    tc.add_argument("--limit", type=_positive_int, default=None, help="only the first N train questions of each (smoke runs)")
    tc.add_argument("--threads", type=_positive_int, default=None)
    tc.set_defaults(func=_cmd_train_cut)

    tx = tsub.add_parser(
        "cut-onnx", help="add ONNX exports of a learned-cut folder's LightGBM models (no retraining; needs onnxmltools)"
    )
    tx.add_argument("folder", help="a folder written by `meteora train cut` (e.g. meteora/weights/learned-cut)")
    tx.set_defaults(func=_cmd_train_cut_onnx)

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
    # the band reads the sampled rationales; the learned cut's query-only model would not
    add_selector_options(pp, cut="band")
    pp.set_defaults(func=_cmd_train_pairs)

    add_train_reader_parser(tsub)
    add_train_poison_defence_parser(tsub)
    return train


def add_train_poison_defence_parser(subparsers: Any) -> Any:
    """Register ``meteora train poison-defence`` on the ``train`` subparsers.

    Example:
        >>> import argparse
        >>> p = argparse.ArgumentParser(); sub = p.add_subparsers()
        >>> _ = add_train_poison_defence_parser(sub)
        >>> p.parse_args(["poison-defence"]).out
        'meteora/weights/poison-defence'
    """
    from meteora.training.poison_defence import PoisonDefenceSettings

    d = PoisonDefenceSettings()
    p = subparsers.add_parser(
        "poison-defence",
        help="train the poison defence's suspicion models on PubMedQA train questions (optionally BioASQ 7B "
             "ones) and the trained-on attack families",
    )
    p.add_argument("--out", default="meteora/weights/poison-defence",
                   help="folder for suspicion.json and suspicion-shape.json (only such files are replaced)")
    p.add_argument("--questions", type=_positive_int, default=d.questions, help="clean train questions")
    p.add_argument("--attacked", type=_positive_int, default=d.attacked, help="train questions each family attacks")
    p.add_argument("--candidates", type=_positive_int, default=d.candidates, help="dense candidates per question")
    p.add_argument("--top", type=_positive_int, default=d.top, help="rows per pool: the best candidates by score")
    p.add_argument("--gold-fp", type=float, default=d.gold_fp, help="share of gold evidence rows the threshold drops")
    p.add_argument("--C", type=float, default=d.C, help="inverse L2 strength of the logistic regression")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--free-signs", action="store_true",
                   help="unconstrained coefficients (default: monotone, each in its signal's suspicious direction)")
    p.add_argument("--data", default=None, help="folder of pubmedqa/ (default: $METEORA_DATA_DIR or ../shared/data)")
    p.add_argument("--bioasq-questions", type=int, default=d.bioasq_questions,
                   help="BioASQ 7B (train) questions for clean rows and calibration (default 0: PubMedQA only, "
                        "the packaged model)")
    p.add_argument("--bioasq-attacked", type=int, default=d.bioasq_attacked,
                   help="BioASQ 7B questions each family attacks")
    p.add_argument("--bioasq-gold-fp", type=float, default=d.bioasq_gold_fp,
                   help="share of BioASQ 7B clean gold rows the threshold may flag")
    p.add_argument("--bioasq-data", default=None,
                   help="folder of the BioASQ *_golden.json files (default: the data folder's bioasq-dev/); "
                        "only the 7B (2019) questions are used")
    p.add_argument("--rows-out", default=None, help="also write the training rows (signals, ids) as JSON lines")
    p.add_argument("--threads", type=_positive_int, default=None)
    p.set_defaults(func=_cmd_train_poison_defence)
    return p


def _cmd_train_poison_defence(args: Any) -> int:
    import sys

    from meteora.training.poison_defence import PoisonDefenceSettings, train_poison_defence

    settings = PoisonDefenceSettings(questions=args.questions, attacked=args.attacked, candidates=args.candidates,
                                     top=args.top, gold_fp=args.gold_fp, C=args.C, seed=args.seed,
                                     monotone=not args.free_signs, bioasq_questions=args.bioasq_questions,
                                     bioasq_attacked=args.bioasq_attacked, bioasq_gold_fp=args.bioasq_gold_fp)
    argv = getattr(args, "_argv", None) or sys.argv[1:]
    models = train_poison_defence(args.out, settings, data_path=args.data, num_threads=args.threads,
                                  command="meteora " + " ".join(shlex.quote(a) for a in argv), rows_out=args.rows_out,
                                  bioasq_path=args.bioasq_data)
    for name, w in models.items():
        m = w["provenance"]["metrics"]
        print(f"{name}: threshold {w['threshold']:.3f}; train poison recall {m['train_poison_recall_at_threshold']}, "
              f"gold dropped {m['train_gold_dropped_at_threshold']} ({m['rows']} rows, {m['poison_rows']} poison)")
    return 0


def add_train_reader_parser(subparsers: Any) -> Any:
    """Register ``meteora train reader`` on the ``train`` subparsers (called by the CLI).

    Example:
        >>> import argparse
        >>> p = argparse.ArgumentParser(); sub = p.add_subparsers()
        >>> _ = add_train_reader_parser(sub)
        >>> p.parse_args(["reader", "--out", "runs/reader"]).lr
        0.0002
    """
    from meteora.training.reader_data import BALANCE_MODES, ReaderSettings

    d = ReaderSettings()
    p = subparsers.add_parser(
        "reader",
        help="fine-tune a yes/no/maybe reader (LoRA; QLoRA on a GPU) on PubMedQA train questions with contexts",
    )
    p.add_argument("--base", default="smollm2", help="base model: hub id, folder, or 'smollm2' (offline default)")
    p.add_argument("--out", required=True, help="adapter folder to write (checkpoints in OUT/checkpoints)")
    p.add_argument("--examples", type=int, default=d.n_examples, help="training examples drawn per epoch")
    p.add_argument("--val-questions", type=int, default=d.val_questions, help="train questions held out")
    p.add_argument("--balance", choices=BALANCE_MODES, default=d.balance, help="class weighting of the draw")
    p.add_argument("--variants", default=None,
                   help="context variant weights, e.g. 'full=0.35,subset=0.25,results=0.2,shuffled=0.1,none=0.1'")
    p.add_argument("--max-context-chars", type=int, default=d.max_context_chars)
    p.add_argument("--epochs", type=float, default=d.num_epochs)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=d.learning_rate)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--grad-accum", type=int, default=d.grad_accum)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--lora-alpha", type=float, default=d.lora_alpha)
    p.add_argument("--target-modules", default="q-v", help="'q-v', 'all-attn', 'all-linear' or comma-separated names")
    p.add_argument("--load-in-4bit", choices=["auto", "yes", "no"], default="auto",
                   help="QLoRA 4-bit base: 'auto' = on a CUDA GPU only (bitsandbytes)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data", default=None, help="pubmedqa folder or ori_pqal.json (default: $METEORA_DATA_DIR)")
    p.add_argument("--package", default=None, metavar="DIR",
                   help="also copy adapter + provenance (no tokenizer, no checkpoints) into DIR")
    p.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    p.set_defaults(func=_cmd_train_reader)
    return p


def _parse_variants(spec: str | None) -> dict[str, float]:
    from meteora.errors import InvalidInputError
    from meteora.training.reader_data import _default_variant_weights

    if not spec:
        return _default_variant_weights()
    out = {}
    for part in spec.split(","):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise InvalidInputError(f"--variants: {part!r} is not NAME=WEIGHT") from None
        if not sep:
            raise InvalidInputError(f"--variants: {part!r} is not NAME=WEIGHT")
    return out


def _cmd_train_reader(args: Any) -> int:
    import sys

    from meteora.models import DEFAULT_GENERATOR_MODEL, is_default_generator
    from meteora.training.reader import package_adapter, train_reader
    from meteora.training.reader_data import ReaderSettings

    settings = ReaderSettings(
        n_examples=args.examples,
        val_questions=args.val_questions,
        balance=args.balance,
        variant_weights=_parse_variants(args.variants),
        max_context_chars=args.max_context_chars,
        num_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        target_modules=args.target_modules,
        load_in_4bit={"auto": None, "yes": True, "no": False}[args.load_in_4bit],
        seed=args.seed,
        progress=False,
    )
    argv = getattr(args, "_argv", None) or sys.argv[1:]
    prov = train_reader(
        args.base, args.out, settings, data=args.data, resume=not args.no_resume,
        command="meteora " + " ".join(shlex.quote(a) for a in argv),
    )
    m = prov["metrics"]
    print(
        f"reader written to {args.out}: {m['global_step']} steps in {m['train_seconds'] / 60:.1f} min "
        f"({m['minutes_per_epoch']:.1f} min/epoch), train loss {m['train_loss']}; held-out accuracy "
        f"{m.get('val_accuracy_full')} with the abstract, {m.get('val_accuracy_none')} without"
    )
    if args.package:
        base_id = DEFAULT_GENERATOR_MODEL if is_default_generator(args.base) else str(args.base)
        print(f"packaged into {package_adapter(args.out, args.package, base_model_id=base_id)}")
    return 0
