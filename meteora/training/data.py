"""Training data: the med-rationale SFT files, PubMedQA QA pairs, CoT pairs, DPO pairs.

Every loader validates its rows and reports each bad one with its file name and 1-based
line number. A loader collects *all* problems before deciding: with ``strict=True`` it
raises :class:`~meteora.errors.TrainingDataError` listing them; otherwise it skips them,
logs a warning and keeps them in ``rejected``.

This module gathers the training-data API under one name; the code lives in:

* :mod:`meteora.training.rationale_sft` — :func:`load_rationale_sft`, the medical
  rationale SFT format (``{id, query, rationales, text}`` per line, as in
  ``med-rationales/*.jsonl``).
* :mod:`meteora.training.pubmedqa_examples` — :func:`pubmedqa_alpaca_examples`
  (PubMedQA question → ``"yes. <long answer>"`` in the Alpaca layout, train side only:
  the 500 official test questions are refused) and :func:`cot_examples` (the same
  questions for chat-template CoT models: ``<think>…</think>`` then the answer).
* :mod:`meteora.training.dpo_pairs` — :func:`load_preference_pairs` /
  :func:`split_pairs`, DPO pairs from a JSONL file.
* :mod:`meteora.training.jsonl` — :func:`read_jsonl` / :func:`write_jsonl_atomic`
  (JSON Lines with line-numbered errors), :class:`RowProblem`, :func:`file_sha256`.

Example:
    >>> from meteora.settings import data_dir  # doctest: +SKIP
    >>> ds = load_rationale_sft(data_dir("med-rationales") / "val.jsonl")  # doctest: +SKIP
    >>> len(ds), len(ds.rejected), len(ds.duplicates)  # doctest: +SKIP
    (3120, 0, 126)
    >>> ds.pairs()[0]["prompt"].endswith("### Response:\\n")  # doctest: +SKIP
    True
"""

from __future__ import annotations

# ``name as name`` imports re-export names of the former single-module data.py.
from meteora.training.dpo_pairs import _as_text as _as_text
from meteora.training.dpo_pairs import load_preference_pairs, split_pairs
from meteora.training.jsonl import _MAX_LISTED as _MAX_LISTED
from meteora.training.jsonl import RowProblem, file_sha256, read_jsonl, write_jsonl_atomic
from meteora.training.jsonl import _iter_jsonl as _iter_jsonl
from meteora.training.jsonl import _problem_message as _problem_message
from meteora.training.jsonl import _require_file as _require_file
from meteora.training.pubmedqa_examples import (
    PUBMEDQA_ALPACA,
    PUBMEDQA_QA_INSTRUCTION,
    cot_examples,
    pubmedqa_alpaca_examples,
)
from meteora.training.pubmedqa_examples import _pubmedqa_files as _pubmedqa_files
from meteora.training.pubmedqa_examples import (
    _pubmedqa_train_records as _pubmedqa_train_records,
)
from meteora.training.pubmedqa_examples import _PubMedQARecord as _PubMedQARecord
from meteora.training.pubmedqa_examples import _qa_input as _qa_input
from meteora.training.pubmedqa_examples import _record as _record
from meteora.training.pubmedqa_examples import _records_from_benchmark as _records_from_benchmark
from meteora.training.pubmedqa_examples import _refuse_test_ids as _refuse_test_ids
from meteora.training.rationale_sft import MAX_WORDS as MAX_WORDS
from meteora.training.rationale_sft import MIN_WORDS as MIN_WORDS
from meteora.training.rationale_sft import (
    RationaleExample,
    SFTDataset,
    load_rationale_sft,
    normalize_query,
)
from meteora.training.rationale_sft import _check_rationale_row as _check_rationale_row

__all__ = [
    "RowProblem",
    "RationaleExample",
    "SFTDataset",
    "load_rationale_sft",
    "normalize_query",
    "file_sha256",
    "read_jsonl",
    "write_jsonl_atomic",
    "PUBMEDQA_QA_INSTRUCTION",
    "PUBMEDQA_ALPACA",
    "pubmedqa_alpaca_examples",
    "cot_examples",
    "load_preference_pairs",
    "split_pairs",
]
