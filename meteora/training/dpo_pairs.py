"""DPO preference pairs in JSONL files (read with checks, written atomically), and a
prompt-grouped train/validation/test split.

Example:
    >>> import json, pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "pairs.jsonl"
    >>> row = {"query": "Does aspirin help?", "chosen": ["Check trials."], "rejected": "No."}
    >>> _ = p.write_text(json.dumps(row) + "\\n", encoding="utf-8")
    >>> pair = load_preference_pairs(p)[0]
    >>> pair["chosen"], pair["rejected"]
    ('Check trials.', 'No.')
    >>> [len(part) for part in split_pairs([pair] * 10)]
    [10, 0, 0]
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meteora._io import atomic_write_text
from meteora.errors import InvalidInputError, TrainingDataError
from meteora.rationales.templates import PromptTemplate, get_template
from meteora.training.jsonl import RowProblem, _iter_jsonl, _problem_message, _require_file

__all__ = ["load_preference_pairs", "write_preference_pairs", "split_pairs"]

_PAIR_KEYS = ("prompt", "chosen", "rejected")

logger = logging.getLogger(__name__)


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "\n".join(" ".join(v.split()) for v in value)
    return None


def load_preference_pairs(
    path: str | os.PathLike[str],
    *,
    template: str | PromptTemplate = "med-rationale",
    n: int | None = None,
    tokenizer: Any = None,
    strict: bool = True,
) -> list[dict[str, str]]:
    """Load DPO preference pairs: ``[{"prompt", "chosen", "rejected"}]``.

    Each line is a JSON object with ``chosen`` and ``rejected`` (a string, or a list of
    rationales joined one per line) and either ``prompt`` (the exact prompt text) or
    ``query`` (rendered with ``template``, so training and inference agree). ``chosen``
    must differ from ``rejected``.

    Raises:
        DataNotFoundError: the file does not exist.
        TrainingDataError: bad rows (all listed with line numbers) when ``strict``, or no
            valid pair at all.

    Example:
        >>> pairs = load_preference_pairs("pairs.jsonl")  # doctest: +SKIP
        >>> sorted(pairs[0])  # doctest: +SKIP
        ['chosen', 'prompt', 'rejected']
    """
    p = _require_file(path, "preference pairs file")
    tpl = get_template(template)
    pairs: list[dict[str, str]] = []
    problems: list[RowProblem] = []
    for line_no, obj, error in _iter_jsonl(p):
        if error is not None:
            problems.append(RowProblem(str(p), line_no, error))
            continue
        if not isinstance(obj, Mapping):
            problems.append(
                RowProblem(str(p), line_no, f"expected a JSON object, got {type(obj).__name__}")
            )
            continue
        prompt = obj.get("prompt")
        if prompt is None and isinstance(obj.get("query"), str) and obj["query"].strip():
            prompt = tpl.render(" ".join(obj["query"].split()), n, tokenizer)
        if not isinstance(prompt, str) or not prompt.strip():
            problems.append(RowProblem(str(p), line_no, "needs a non-empty 'prompt' or 'query'"))
            continue
        chosen, rejected = _as_text(obj.get("chosen")), _as_text(obj.get("rejected"))
        if chosen is None or not chosen.strip():
            problems.append(RowProblem(str(p), line_no, "missing or empty 'chosen'"))
            continue
        if rejected is None or not rejected.strip():
            problems.append(RowProblem(str(p), line_no, "missing or empty 'rejected'"))
            continue
        if chosen.strip() == rejected.strip():
            problems.append(RowProblem(str(p), line_no, "'chosen' and 'rejected' are identical"))
            continue
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    if problems:
        if strict:
            raise TrainingDataError(
                _problem_message(
                    str(p), problems, "Fix these rows, or pass strict=False to skip them."
                )
            )
        logger.warning(
            "%s: skipped %d bad pair(s); first: %s",
            p.name,
            len(problems),
            "; ".join(map(str, problems[:3])),
        )
    if not pairs:
        raise TrainingDataError(f"{p} has no valid preference pairs ({len(problems)} bad rows)")
    return pairs


def split_pairs(
    pairs: Sequence[Mapping[str, Any]],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Shuffle and split pairs into train / validation / test (80/10/10 by default).

    Pairs that share a prompt always land in the same part, so no prompt leaks across
    the split. Deterministic for a given ``seed``.

    Example:
        >>> ps = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(10)]
        >>> [len(x) for x in split_pairs(ps)]
        [8, 1, 1]
    """
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise InvalidInputError(
            f"ratios must be three non-negative numbers summing to 1, got {ratios}"
        )
    groups: dict[str, list[dict[str, Any]]] = {}
    for pair in pairs:
        if "prompt" not in pair:
            raise InvalidInputError("every pair needs a 'prompt' key")
        groups.setdefault(str(pair["prompt"]), []).append(dict(pair))
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    total = sum(len(g) for g in groups.values())
    targets = [round(total * ratios[0]), round(total * (ratios[0] + ratios[1]))]
    parts: tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]] = ([], [], [])
    count = 0
    for key in keys:
        part = 0 if count < targets[0] else 1 if count < targets[1] else 2
        parts[part].extend(groups[key])
        count += len(groups[key])
    return parts


def _check_pair(pair: Mapping[str, Any], index: int) -> None:
    if not isinstance(pair, Mapping):
        raise InvalidInputError(f"pair #{index} must be a dict, got {type(pair).__name__}")
    for key in _PAIR_KEYS:
        value = pair.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InvalidInputError(f"pair #{index} needs a non-empty string {key!r}")
    if pair["chosen"].strip() == pair["rejected"].strip():
        raise InvalidInputError(f"pair #{index}: 'chosen' and 'rejected' are identical")


def write_preference_pairs(
    path: str | os.PathLike[str], pairs: Sequence[Mapping[str, Any]]
) -> Path:
    """Write pairs as JSON Lines (UTF-8, one object per line), atomically.

    Every pair needs non-empty ``prompt``, ``chosen`` and ``rejected`` strings that
    differ; other keys are kept. The file is written to a temporary sibling and renamed
    into place, so a reader never sees half a file.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "pairs.jsonl"
        >>> _ = write_preference_pairs(p, [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
        >>> p.read_text()
        '{"prompt": "Q", "chosen": "a", "rejected": "b"}\\n'
    """
    lines = []
    for i, pair in enumerate(pairs):
        _check_pair(pair, i)
        try:
            lines.append(json.dumps(dict(pair), ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"pair #{i} is not JSON-serialisable: {exc}") from exc
    path = Path(path)
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path
