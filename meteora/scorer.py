"""Second-stage evidence scorer: a cross-encoder that reads (query, passage) together.

METEORA pairs rationales with passages by embedding similarity; an embedding model that
never learned what medical *evidence* looks like cannot tell the passage that holds the
finding from the ones that describe background or methods: on held-out PubMedQA train
questions, the chunk of the right abstract most similar to the question is the results
chunk only 7 % of the time. :class:`EvidenceScorer` scores each (query, passage) pair
jointly and returns an **evidence logit**. Trained on one corpus it learns what a
finding reads like much better than *which document* is relevant (81 % of the time it
picks the results chunk of the right abstract, but its own top chunk is from the right
abstract only 8 % of the time), so the selector uses it only *within a document*: the
embedding decides how relevant a document is, the scorer which of its chunks holds the
evidence (see :mod:`meteora.selection`). ``calibration`` holds the selector's
``evidence_weight`` and ``evidence_band`` as calibrated on held-out train questions.

The default scorer is the packaged all-MiniLM-L6-v2 weights plus a small LoRA adapter
(about 1.4 MB) trained on PubMedQA *train* questions by ``meteora train scorer``; the
adapter ships inside the package (``meteora/weights/evidence-scorer/``) with a
provenance file holding the exact command, data sha256, split, seed and metrics.

Logits are remembered in memory (a bounded LRU) and, with ``cache_path=``, in an SQLite
file keyed by the scorer's :attr:`~EvidenceScorer.identity` (base model, adapter
content, ``max_length``) and the pair, so benchmarks and training runs never score a
pair twice (``default_logit_cache_path()``: ``$METEORA_HOME/scorer_logits.sqlite``).

Example:
    >>> from meteora.scorer import EvidenceScorer
    >>> scorer = EvidenceScorer()                                   # doctest: +SKIP
    >>> scorer.evidence_logits(["Does aspirin prevent stroke?"],
    ...     [["Aspirin cut strokes by 20%.", "Patients were randomised."]])  # doctest: +SKIP
    [array([ 1.9, -1.2], dtype=float32)]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meteora._io import ensure_parent
from meteora.cache import Cache
from meteora.cache_table import SQLiteTable, TableLayout
from meteora.console import progress_enabled, quiet_model_loading
from meteora.errors import (
    InvalidInputError,
    MeteoraError,
    ModelNotFoundError,
    UnsafeOverwriteError,
    require,
)
from meteora.settings import meteora_home

__all__ = ["EvidenceScorer", "default_scorer_path", "default_logit_cache_path", "DEFAULT_SCORER", "LOGIT_LAYOUT"]

logger = logging.getLogger(__name__)

_WEIGHTS = Path(__file__).resolve().parent / "weights"
#: Name of the packaged default scorer adapter (a folder under ``meteora/weights``).
DEFAULT_SCORER = "evidence-scorer"
#: Pairs scored per model call (each block is remembered before the next starts).
_BLOCK = 1024


def default_scorer_path() -> Path | None:
    """Folder of the packaged scorer adapter, or ``None`` when it is not there."""
    path = _WEIGHTS / DEFAULT_SCORER
    return path if (path / "adapter_config.json").is_file() else None


def default_logit_cache_path() -> Path:
    """``$METEORA_HOME/scorer_logits.sqlite``: the file ``cache_path=True`` means."""
    return meteora_home() / "scorer_logits.sqlite"


def _logit_row(row: tuple) -> float | None:
    (value,) = row
    return float(value) if isinstance(value, (int, float)) else None


#: One row per (scorer identity, pair digest): the logit.
LOGIT_LAYOUT = TableLayout(
    label="scorer-logit cache",
    table="logits",
    ddl=(
        "CREATE TABLE IF NOT EXISTS logits (scorer TEXT NOT NULL, key BLOB NOT NULL, logit REAL NOT NULL,"
        " PRIMARY KEY (scorer, key)) WITHOUT ROWID",
    ),
    meta={"format": "meteora-scorer-logit-cache", "schema_version": "1"},
    key_columns=("scorer", "key"),
    value_columns=("logit",),
    insert="INSERT OR REPLACE INTO logits (scorer, key, logit) VALUES (?, ?, ?)",
    to_row=lambda key, value, now: (key[0], key[1], float(value)),
    from_row=_logit_row,
    owns=lambda tables, meta: meta.get("format") == "meteora-scorer-logit-cache",
    refuse_non_sqlite=lambda path: UnsafeOverwriteError(
        f"{path} is not an SQLite database, so not a meteora scorer-logit cache; it was left untouched: "
        "pass another cache_path"
    ),
    refuse_foreign=lambda path, tables: UnsafeOverwriteError(
        f"{path} is an SQLite database of another program (tables: {', '.join(tables[:5])}); it was left "
        "untouched: pass another cache_path"
    ),
    unusable=lambda path, exc: MeteoraError(
        f"scorer-logit cache {path} could not be used ({exc}); pass another cache_path (or none)"
    ),
    quarantine_non_sqlite=lambda path: path.resolve() == default_logit_cache_path().resolve(),
    logger=logger,
)


def _scorer_identity(base: str, adapter: Path | None, max_length: int) -> str:
    """A digest of what determines a logit: the base model, the adapter's files, max_length."""
    h = hashlib.sha256(f"{base}\0{max_length}".encode())
    if adapter is not None:
        for f in sorted(adapter.iterdir()):
            if f.is_file() and f.name != "provenance.json":
                h.update(b"\0" + f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:32]


def _read_calibration(adapter: Path | None) -> dict[str, float]:
    """The selector knobs calibrated with the adapter (``evidence_weight``, ``evidence_band``)."""
    if adapter is None:
        return {}
    prov = adapter / "provenance.json"
    if not prov.is_file():
        return {}
    try:
        cal = json.loads(prov.read_text(encoding="utf-8")).get("calibration", {})
    except (OSError, ValueError):
        return {}
    return {
        k: float(cal[k])
        for k in ("evidence_weight", "evidence_band")
        if isinstance(cal.get(k), (int, float)) and not isinstance(cal.get(k), bool)
    }


class EvidenceScorer:
    """A cross-encoder giving P(passage holds evidence for the query).

    Args:
        adapter: ``"default"`` (the packaged adapter), a folder holding a PEFT LoRA
            adapter saved by ``meteora train scorer``, or ``None`` for an untrained head
            (only useful as the starting point of training).
        base: the encoder the adapter was trained on: ``None`` for the packaged
            all-MiniLM-L6-v2, or a folder / hub id.
        max_length: tokens per (query, passage) pair; longer pairs are truncated.
        batch_size: pairs per forward pass.
        device: torch device (``None``: CPU unless CUDA is available).
        cache_size: (query, passage) pairs whose logits are remembered (an in-memory
            :class:`~meteora.cache.Cache`, least recently used forgotten first; a RAG
            pipeline sees the same pairs again, and benchmark variants share them);
            ``0`` turns the memory off.
        cache_path: also keep the logits in this SQLite file (``True``:
            :func:`default_logit_cache_path`; ``None``: memory only). Shared by processes;
            a file that is not a meteora scorer-logit cache is refused untouched.

    Attributes:
        calibration: ``{"evidence_weight": w, "evidence_band": b}`` as calibrated on
            held-out *train* questions when the adapter was trained (empty when the
            adapter records none; the selector then uses its defaults).
        identity: a digest of the base model name, the adapter's files and
            ``max_length``: the key of its logits in a cache file.
    """

    def __init__(
        self,
        adapter: str | os.PathLike[str] | None = "default",
        *,
        base: str | os.PathLike[str] | None = None,
        max_length: int = 256,
        batch_size: int = 32,
        device: str | None = None,
        cache_size: int = 100_000,
        cache_path: str | os.PathLike[str] | bool | None = None,
    ) -> None:
        from meteora.models import resolve_embedding_model

        for name, value in (("max_length", max_length), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise InvalidInputError(f"cache_size must be a non-negative integer, got {cache_size!r}")
        self.cache_size = cache_size
        st = require("sentence_transformers", "core", "the evidence scorer")
        self.batch_size = batch_size
        self.max_length = max_length
        self._lock = threading.Lock()
        adapter_path: Path | None
        if adapter == "default":
            adapter_path = default_scorer_path()
            if adapter_path is None:
                raise ModelNotFoundError(
                    "the packaged evidence-scorer adapter is missing from meteora/weights; reinstall "
                    "meteora-rerank, retrain it with `meteora train scorer`, or pass scorer=None"
                )
        elif adapter is None:
            adapter_path = None
        else:
            adapter_path = Path(adapter).expanduser()
            if not (adapter_path / "adapter_config.json").is_file():
                raise ModelNotFoundError(
                    f"{adapter_path} holds no adapter_config.json: pass a folder written by "
                    "`meteora train scorer`, or 'default'"
                )
        self.adapter = adapter_path
        self.base = resolve_embedding_model(base)
        self.name = f"{base or 'all-MiniLM-L6-v2'}+{adapter_path.name if adapter_path else 'untrained-head'}"
        with quiet_model_loading():
            model = st.CrossEncoder(self.base, num_labels=1, max_length=max_length, device=device)
            if adapter_path is not None:
                peft = require("peft", "core", "loading the scorer adapter")
                inner = model[0].model
                try:
                    merged = peft.PeftModel.from_pretrained(inner, str(adapter_path)).merge_and_unload()
                except (RuntimeError, ValueError, OSError) as exc:
                    raise ModelNotFoundError(
                        f"could not load the scorer adapter {adapter_path} onto {self.base}: {exc}. "
                        "Was it trained on another base model? Pass base= the model it was trained on"
                    ) from exc
                model[0].model = merged
        model.eval()
        self.model = model
        self.calibration = _read_calibration(adapter_path)
        self.identity = _scorer_identity(str(self.base), adapter_path, max_length)
        table = None
        if cache_path is not None and cache_path is not False:
            path = default_logit_cache_path() if cache_path is True else Path(cache_path).expanduser()
            if path.is_dir():
                raise InvalidInputError(f"cache_path {path} is a folder; pass a file path (e.g. scorer_logits.sqlite)")
            table = SQLiteTable(ensure_parent(path), LOGIT_LAYOUT)
        #: the remembered logits by (identity, pair digest): memory, and the file when given
        self.cache = Cache(max_entries=cache_size, table=table)

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Raw cross-encoder logits for ``(query, passage)`` pairs."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                raise InvalidInputError(f"pairs[{i}] must be a (query, passage) pair of strings")
        keys = [
            (self.identity, hashlib.sha1(q.encode() + b"\0" + p.encode(), usedforsecurity=False).digest())
            for q, p in pairs
        ]
        out = np.empty(len(pairs), dtype=np.float32)
        with self._lock:
            todo = []
            for i, hit in enumerate(self.cache.get_many(keys)):
                if hit is None:
                    todo.append(i)
                else:
                    out[i] = hit
            # in blocks, each remembered as it is done (a long run keeps what it scored)
            for start in range(0, len(todo), _BLOCK):
                block = todo[start : start + _BLOCK]
                fresh = self.model.predict(
                    [tuple(pairs[i]) for i in block],
                    batch_size=self.batch_size,
                    activation_fn=_identity(),
                    show_progress_bar=len(block) > 20 * self.batch_size and progress_enabled(),
                    convert_to_numpy=True,
                )
                fresh = np.asarray(fresh, dtype=np.float32).reshape(-1)
                out[block] = fresh
                self.cache.put_many([(keys[i], float(v)) for i, v in zip(block, fresh, strict=True)])
                if len(todo) > _BLOCK:
                    logger.info("scorer: %d of %d new pairs scored", start + len(block), len(todo))
        return out

    @property
    def stats(self) -> dict[str, int]:
        """``{"hits": ..., "misses": ...}`` of the remembered logits."""
        counts = self.cache.stats()
        return {"hits": counts["hits"], "misses": counts["misses"]}

    def clear_cache(self, *, disk: bool = False) -> None:
        """Forget the remembered (query, passage) logits in memory, and in the cache file
        with ``disk=True`` (other processes may share it); reset the hit counters."""
        with self._lock:
            self.cache.clear(disk=disk)
            self.cache.reset_stats()

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """``sigmoid(logit)`` per passage: how much each reads like evidence for ``query``
        (meaningful mainly between chunks of one document; see the module doc)."""
        if isinstance(passages, str):
            raise InvalidInputError("score() takes a list of passage texts; wrap a single text in a list")
        return _sigmoid(self.logits([(query, p) for p in passages]))

    def evidence_logits(self, queries: Sequence[str], passage_lists: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Evidence logits for many queries in one batched pass over every pair."""
        if isinstance(queries, str) or len(queries) != len(passage_lists):
            raise InvalidInputError(f"got {len(passage_lists)} passage lists for {len(queries)} queries")
        for i, ps in enumerate(passage_lists):
            if isinstance(ps, str):
                raise InvalidInputError(f"passage_lists[{i}] is a string; give a list of passage texts")
        pairs = [(q, p) for q, ps in zip(queries, passage_lists, strict=True) for p in ps]
        logits = self.logits(pairs)
        out, start = [], 0
        for ps in passage_lists:
            out.append(logits[start : start + len(ps)])
            start += len(ps)
        return out

    def score_batch(self, queries: Sequence[str], passage_lists: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """:meth:`score` for many queries in one batched pass over every pair."""
        return [_sigmoid(lg) for lg in self.evidence_logits(queries, passage_lists)]

    def __repr__(self) -> str:
        return f"EvidenceScorer(name={self.name!r}, calibration={self.calibration})"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))).astype(np.float32)


def _identity() -> Any:
    import torch

    return torch.nn.Identity()
