"""Adapter evaluation: response perplexity of a base model vs the same model + adapter.

The table of the seed model card: on a held-out file, the perplexity of the responses
(the rationales) given the prompt, for the base model and for base + adapter, with the
mean per-example loss ± its standard deviation and the scoring speed.

* perplexity = ``exp(total response NLL / total response tokens)`` (token-weighted;
  EOS included, prompt tokens excluded — the same tokens SFT trains on);
* ``mean_loss`` ± ``std_loss``: mean and sample standard deviation of the per-example
  mean token loss;
* ``samples_per_s``: examples scored per second (forward passes only).

Both numbers come from one loaded model: the base is scored with the adapter disabled.

Example:
    >>> res = evaluate_adapter("smollm2", "adapters/smollm2-med", "med-rationales/test.jsonl")  # doctest: +SKIP
    >>> print(to_markdown(res))  # doctest: +SKIP
    | model | perplexity | mean loss ± std | samples/s |
    ...
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from meteora.console import progress_enabled
from meteora.errors import DataNotFoundError, InvalidInputError, ModelNotFoundError
from meteora.rationales.templates import get_template

__all__ = ["evaluate_adapter", "score_responses", "to_markdown"]

logger = logging.getLogger(__name__)


def _load_eval_pairs(
    data_path: Path,
    template: str,
    n_rationales: int | str | None,
    tokenizer: Any,
    exclude_queries: Iterable[str] | None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from meteora.training.jsonl import file_sha256, read_jsonl
    from meteora.training.rationale_sft import load_rationale_sft

    first = next((ln for ln in data_path.open(encoding="utf-8") if ln.strip()), "")
    try:
        keys = set(json.loads(first)) if first else set()
    except json.JSONDecodeError:
        keys = set()
    info: dict[str, Any] = {"path": str(data_path.resolve()), "sha256": file_sha256(data_path)}
    if {"prompt", "completion"} <= keys:
        pairs = [
            {"prompt": r["prompt"], "completion": r["completion"]} for r in read_jsonl(data_path)
        ]
        info["format"] = "prompt-completion"
    else:
        ds = load_rationale_sft(data_path, exclude_queries=exclude_queries)
        pairs = ds.pairs(template, n=n_rationales, tokenizer=tokenizer)
        info.update(
            format="med-rationale",
            rejected_rows=len(ds.rejected),
            duplicate_rows=len(ds.duplicates),
            excluded_rows=len(ds.excluded),
        )
    return pairs, info


def score_responses(
    model: Any,
    features: Sequence[Mapping[str, Sequence[int]]],
    pad_token_id: int,
    *,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "scoring",
) -> tuple[list[float], list[int], float]:
    """Sum of response-token NLL and token count per example, plus the seconds spent.

    ``features`` are :func:`~meteora.training.collate.build_sft_features` outputs
    (``labels == -100`` on tokens that are not scored).
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from meteora.training.collate import IGNORE_INDEX, pad_batch

    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    sums = [0.0] * len(features)
    counts = [0] * len(features)
    device = next(model.parameters()).device
    model.eval()
    t0 = time.perf_counter()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.no_grad():
        for idx in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
            batch = pad_batch([features[i] for i in idx], pad_token_id)
            input_ids = batch["input_ids"].to(device)
            attention = batch["attention_mask"].to(device)
            labels = batch["labels"].to(device)
            logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
            shift_logits = logits[:, :-1, :]
            shift_labels = labels[:, 1:]
            mask = shift_labels != IGNORE_INDEX
            token_loss = F.cross_entropy(
                shift_logits[mask].float(), shift_labels[mask], reduction="none"
            )
            row_of = mask.nonzero(as_tuple=True)[0]
            per_row = torch.zeros(len(idx), dtype=torch.float64, device=token_loss.device)
            per_row.index_add_(0, row_of, token_loss.double())
            n_row = mask.sum(dim=1)
            for j, i in enumerate(idx):
                sums[i] = float(per_row[j])
                counts[i] = int(n_row[j])
    return sums, counts, time.perf_counter() - t0


def _summary(sums: Sequence[float], counts: Sequence[int], seconds: float) -> dict[str, Any]:
    import numpy as np

    total_tokens = int(sum(counts))
    per_example = np.array(
        [s / c for s, c in zip(sums, counts, strict=True) if c > 0], dtype=np.float64
    )
    mean_token_loss = float(sum(sums) / total_tokens) if total_tokens else float("nan")
    return {
        "perplexity": float(math.exp(mean_token_loss)) if total_tokens else float("nan"),
        "mean_token_loss": mean_token_loss,
        "mean_loss": float(per_example.mean()) if per_example.size else float("nan"),
        "std_loss": float(per_example.std(ddof=1)) if per_example.size > 1 else 0.0,
        "n_examples": int(per_example.size),
        "n_tokens": total_tokens,
        "seconds": float(seconds),
        "samples_per_s": float(len(sums) / seconds) if seconds > 0 else float("nan"),
    }


def evaluate_adapter(
    base_model: str | os.PathLike[str],
    adapter: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    *,
    template: str = "med-rationale",
    n_rationales: int | str | None = None,
    max_examples: int | None = None,
    batch_size: int = 8,
    max_length: int = 256,
    load_in_4bit: bool = False,
    precision: str = "auto",
    exclude_queries: Iterable[str] | None = None,
    progress: bool | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Perplexity and loss of base vs base + adapter on a held-out file.

    Args:
        base_model: local folder, hub id, or ``"smollm2"``.
        adapter: a PEFT adapter folder (e.g. written by ``train_sft``).
        data_path: a med-rationale JSONL file (rendered with ``template``) or a JSONL of
            ``{"prompt", "completion"}``.
        template: prompt template (must be the one the adapter was trained with).
        n_rationales: as in :meth:`~meteora.training.data.SFTDataset.pairs`.
        max_examples: score only the first N examples (file order, after dedupe).
        batch_size: examples per forward pass.
        max_length: token cap per example (longer ones lose their end).
        load_in_4bit: score the 4-bit quantised base (as it was trained) instead of full precision.
        precision: ``"auto"``, ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        exclude_queries: queries to leave out (e.g. the training queries, to avoid
            scoring examples the adapter has seen).
        progress: progress bars (``None``: on when this logger shows INFO).

    Returns:
        A JSON-serialisable dict with ``base`` and ``adapter`` summaries (perplexity,
        mean_token_loss, mean_loss, std_loss, n_examples, n_tokens, seconds,
        samples_per_s), ``perplexity_ratio`` and the run's settings; write it with
        :func:`meteora._io.atomic_write_json`.

    Raises:
        DataNotFoundError: the data file does not exist.
        ModelNotFoundError: the adapter folder is not a PEFT adapter.
        InvalidInputError: unknown template, bad numbers, or an adapter that does not fit the base.
    """
    from meteora.lm.adapters import attach_adapter
    from meteora.lm.loading import library_versions, load_causal_lm, precision_setup
    from meteora.training.collate import build_sft_features

    data = Path(data_path).expanduser()
    if not data.is_file():
        raise DataNotFoundError(
            f"evaluation data file {str(data)!r} does not exist; check the path"
        )
    get_template(template)
    adapter_dir = Path(adapter).expanduser()
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelNotFoundError(
            f"{str(adapter_dir)!r} is not a PEFT adapter folder (no adapter_config.json)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_examples is not None and (
        isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
    ):
        raise InvalidInputError(
            f"max_examples must be a positive integer or None, got {max_examples!r}"
        )
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
        raise InvalidInputError(f"max_length must be an integer >= 8, got {max_length!r}")
    show = progress if progress is not None else progress_enabled()

    model, tokenizer = load_causal_lm(
        base_model,
        load_in_4bit=load_in_4bit,
        precision=precision,
        tokenizer_from=adapter_dir,
        trust_remote_code=trust_remote_code,
    )
    base_name = str(model.config.name_or_path or base_model)
    pairs, data_info = _load_eval_pairs(data, template, n_rationales, tokenizer, exclude_queries)
    if max_examples is not None:
        pairs = pairs[:max_examples]
    features = []
    n_truncated = 0
    for p in pairs:
        f = build_sft_features(tokenizer, p["prompt"], p["completion"], max_length)
        if f["n_completion_tokens"] == 0:
            continue
        n_truncated += int(f["truncated"])
        features.append(f)
    if not features:
        raise InvalidInputError(
            f"no example of {data.name} has a response within max_length={max_length}"
        )
    if n_truncated:
        logger.warning(
            "%d of %d examples truncated at max_length=%d", n_truncated, len(features), max_length
        )
    data_info.update(n_examples=len(features), n_truncated=n_truncated)

    peft_model = attach_adapter(model, adapter_dir, base_model=base_name)
    pad_id = tokenizer.pad_token_id
    with peft_model.disable_adapter():
        b_sums, b_counts, b_sec = score_responses(
            peft_model, features, pad_id, batch_size=batch_size, progress=show, desc="base"
        )
    a_sums, a_counts, a_sec = score_responses(
        peft_model, features, pad_id, batch_size=batch_size, progress=show, desc="adapter"
    )
    base_stats = _summary(b_sums, b_counts, b_sec)
    adapter_stats = _summary(a_sums, a_counts, a_sec)
    _, resolved_precision = precision_setup(precision)
    results: dict[str, Any] = {
        "format": "meteora-adapter-eval/1",
        "base_model": base_name,
        "adapter_path": str(adapter_dir),
        "data": data_info,
        "template": template,
        "n_rationales": n_rationales,
        "max_length": max_length,
        "batch_size": batch_size,
        "load_in_4bit": load_in_4bit,
        "precision": resolved_precision,
        "device": str(next(peft_model.parameters()).device),
        "base": base_stats,
        "adapter": adapter_stats,
        "perplexity_ratio": adapter_stats["perplexity"] / base_stats["perplexity"],
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    logger.info(
        "perplexity %.3f (base) -> %.3f (adapter) on %d examples",
        base_stats["perplexity"],
        adapter_stats["perplexity"],
        len(features),
    )
    return results


def to_markdown(results: Mapping[str, Any]) -> str:
    """Render :func:`evaluate_adapter` results as a markdown table.

    Example:
        >>> row = {"perplexity": 7.78, "mean_loss": 2.0, "std_loss": 0.3, "samples_per_s": 10.0}
        >>> res = {"base_model": "b", "adapter_path": "a/x", "base": row, "adapter": dict(row, perplexity=1.51),
        ...        "data": {"path": "t.jsonl", "n_examples": 3}, "template": "med-rationale"}
        >>> print(to_markdown(res).splitlines()[3])
        | b + x | 1.510 | 2.000 ± 0.300 | 10.0 |
    """

    def row(name: str, s: Mapping[str, Any]) -> str:
        return (
            f"| {name} | {s['perplexity']:.3f} | {s['mean_loss']:.3f} ± {s['std_loss']:.3f} | "
            f"{s['samples_per_s']:.1f} |"
        )

    base_name = Path(str(results["base_model"])).name or str(results["base_model"])
    adapter_name = Path(str(results["adapter_path"])).name or str(results["adapter_path"])
    data = results.get("data", {})
    lines = [
        "| model | perplexity | mean loss ± std | samples/s |",
        "|---|---:|---:|---:|",
        row(base_name, results["base"]),
        row(f"{base_name} + {adapter_name}", results["adapter"]),
        "",
        f"Held-out data: `{Path(str(data.get('path', '?'))).name}` ({data.get('n_examples', '?')} examples), "
        f"template `{results.get('template', '?')}`; loss = mean NLL per response token (EOS included, "
        "prompt excluded), perplexity = exp(token-weighted mean loss).",
    ]
    return "\n".join(lines)
