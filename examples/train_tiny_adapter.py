"""Smoke-train a LoRA rationale adapter with :func:`meteora.training.train_sft`.

Takes the first ``--rows`` rows of the med-rationale validation file
(``$METEORA_DATA_DIR/med-rationales/val.jsonl``, or ``../shared/data``) and runs a few
optimiser steps on a tiny randomly initialised Llama (built here, using the packaged
SmolLM2 tokenizer and chat template) — it checks the pipeline end to end in about a
minute, it does not learn anything useful. For a real adapter pass ``--base smollm2``
(or a hub id / folder) and drop ``--steps``; see ``meteora train sft --help``.

    python examples/train_tiny_adapter.py
    python examples/train_tiny_adapter.py --base smollm2 --rows 64 --steps 20 --out adapters/try
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from meteora.models import resolve_generator_model
from meteora.settings import data_dir
from meteora.training import SFTSettings, load_rationale_sft, train_sft
from meteora.training.jsonl import read_jsonl, write_jsonl_atomic


def build_tiny_llama(folder: Path) -> Path:
    """A 2-layer, 64-wide random Llama with the packaged SmolLM2 tokenizer (a few MB)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(resolve_generator_model(None))  # needs `meteora models pull`
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=None, help="base model (default: a tiny random Llama built here)")
    parser.add_argument("--rows", type=int, default=8, help="training rows from val.jsonl (default 8)")
    parser.add_argument("--steps", type=int, default=2, help="optimiser steps (default 2)")
    parser.add_argument("--out", type=Path, default=None, help="adapter folder (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="meteora-sft-") as tmp:
        tmp_path = Path(tmp)
        # a small slice of the med-rationale file ({id, query, rationales, text} rows)
        rows = read_jsonl(data_dir("med-rationales") / "val.jsonl")[: args.rows]
        subset = tmp_path / "train.jsonl"
        write_jsonl_atomic(subset, rows)
        dataset = load_rationale_sft(subset)  # validates rows, builds prompt/completion pairs
        print(f"{len(dataset)} training examples from {len(rows)} rows")

        base = args.base or build_tiny_llama(tmp_path / "tiny-llama")
        settings = SFTSettings(
            max_steps=args.steps,
            batch_size=2,
            grad_accum=1,
            learning_rate=1e-3,
            target_modules="all-linear",  # LoRA on every linear layer
            load_in_4bit=args.base is not None,  # QLoRA for a real model; the tiny one stays float32
            max_length=256,
            warmup_ratio=0.0,
            logging_steps=1,
            save_steps=max(1, args.steps),
            progress=False,
        )
        out = args.out or tmp_path / "adapter"
        result = train_sft(base, dataset, out, settings)
        print(f"trained {result.global_step} steps on {result.n_examples} examples in {result.seconds:.1f} s")
        print(f"losses: {[round(loss, 3) for _, loss in result.losses]}")
        print("adapter files:", sorted(p.name for p in Path(result.out_dir).iterdir() if p.is_file()))


if __name__ == "__main__":
    main()
