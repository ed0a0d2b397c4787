"""The settings of one benchmark run (:class:`BenchmarkConfig`).

Example:
    >>> cfg = BenchmarkConfig(methods=["bm25"], dataset="pubmedqa", split="test", limit=5)
    >>> cfg.results_stem()
    'pubmedqa_test_n5'
    >>> BenchmarkConfig(dataset="bioasq", split="all").results_stem()
    'bioasq_all'
    >>> BenchmarkConfig(dataset="beir", data_path="data/scifact", out_dir="res").results_paths()[0].as_posix()
    'res/beir-scifact_test.json'
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meteora.bench.datasets import DATASET_SPLITS, DATASETS
from meteora.bench.method_names import available_methods, is_method
from meteora.errors import InvalidInputError
from meteora.selection.selector_settings import SelectorSettings

__all__ = ["BenchmarkConfig", "VIEWS"]

#: the qrels views of PubMedQA (other datasets have their own: ``RetrievalBenchmark.views``)
VIEWS = ("abstract", "evidence")


def _or_list(items: tuple[str, ...] | list[str]) -> str:
    quoted = [repr(x) for x in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]



@dataclass
class BenchmarkConfig:
    """Settings of one benchmark run (all of them are written into the results JSON).

    ``selector`` holds the METEORA methods' selector settings (the ``-wN`` suffix and
    the ablation variants change fields of it). ``options`` holds the
    generator's settings: ``generator``, ``adapter``, ``template``, ``n``,
    ``include_query``, ``batch_size``, ``max_new_tokens``. ``compare`` lists
    ``"A:B"`` pairs (``B`` may be a fixed-k baseline ``NAME@k``, or ``best``: the view's
    best fixed-k baseline) whose F1 difference (and NDCG@10 difference, when both rank)
    is tested with a paired bootstrap over the questions, per view. ``views=None`` scores
    every view the dataset has. ``out_dir`` is the results folder, or the results JSON
    file itself when it ends in ``.json`` (the plot goes beside it). ``num_threads`` is
    recorded and given to the llama.cpp generator; torch's thread count is process-wide
    and set where the process starts (``meteora bench --threads``).
    """

    methods: list[str] = field(default_factory=lambda: ["bm25", "dense", "hybrid"])
    split: str = "test"
    limit: int | None = None
    views: list[str] | None = None
    ks: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 8, 16, 32])
    retrieve_k: int = 100
    rrf_k: int = 60
    candidates: int = 50
    embedding_model: str | None = None
    data_path: str | None = None
    out_dir: str = "benchmarks/results"
    num_threads: int | None = None
    plot: bool = True
    tag: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    dataset: str = "pubmedqa"
    selector: SelectorSettings = field(default_factory=SelectorSettings)
    compare: list[str] = field(default_factory=list)

    def validate(self, benchmark: Any = None) -> None:
        """Check the settings before any data is loaded.

        Args:
            benchmark: the benchmark the run will use when it is given directly (then
                ``dataset`` must be its name and ``split`` one of its splits).

        Raises:
            InvalidInputError: what is wrong and what to use instead.
        """
        if self.tag is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", self.tag):
            raise InvalidInputError(f"tag must be letters, digits, '_', '-' or '.', got {self.tag!r}")
        if benchmark is not None:
            if self.dataset != benchmark.name:
                raise InvalidInputError(
                    f"dataset is {self.dataset!r} but the given benchmark is {benchmark.name!r}; set dataset={benchmark.name!r}"
                )
            splits = tuple(benchmark.splits)
        elif self.dataset not in DATASETS:
            raise InvalidInputError(f"unknown dataset {self.dataset!r}; available: {sorted(DATASETS)}")
        else:
            splits = DATASET_SPLITS.get(self.dataset, ())
        if splits and self.split not in splits:
            raise InvalidInputError(f"split must be {_or_list(splits)} for {self.dataset}, got {self.split!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise InvalidInputError(f"limit must be a positive integer, got {self.limit!r}")
        if isinstance(self.methods, str):
            raise InvalidInputError(f"methods must be a list of method names, got the string {self.methods!r}")
        if self.views is not None and (
            isinstance(self.views, str) or not self.views or not all(isinstance(v, str) and v for v in self.views)
        ):
            raise InvalidInputError(f"views must be a non-empty list of view names (or None for all), got {self.views!r}")
        unknown = [m for m in self.methods if not is_method(m)]
        if unknown:
            raise InvalidInputError(f"unknown methods {unknown}; available: {available_methods()}")
        if not self.methods:
            raise InvalidInputError("no methods given; pass e.g. --methods bm25,dense,hybrid")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.ks):
            raise InvalidInputError(f"every k must be positive, got {self.ks}")
        for pair in self.compare:
            a, sep, b = str(pair).partition(":")
            names = [a.partition("@")[0]] + ([] if b == "best" else [b.partition("@")[0]])
            if not sep or not a or not b or any(n not in self.methods for n in names):
                raise InvalidInputError(
                    f"compare entries are 'A:B' with A and B among the methods run (B may be NAME@k, e.g. "
                    f"'meteora:dense@3', or 'best', the best fixed k); got {pair!r}"
                )
            for side in (a, b) if b != "best" else (a,):
                k = side.partition("@")[2]
                if k and not (k.isdigit() and int(k) >= 1):
                    raise InvalidInputError(f"in {pair!r}, the k of {side!r} must be a positive integer")
        if not isinstance(self.selector, SelectorSettings):
            raise InvalidInputError(
                f"selector must be a meteora.SelectorSettings, got {type(self.selector).__name__}"
            )

    def results_stem(self) -> str:
        """File stem of the results: ``<dataset>_<split>[_n<limit>][_<tag>]`` (a BEIR
        folder's dataset part is ``beir-<folder name>``)."""
        name = self.dataset
        if name == "beir" and self.data_path:
            from meteora.datasets.beir import beir_dataset_name

            name = beir_dataset_name(self.data_path)
        stem = f"{name}_{self.split}"
        if self.limit is not None:
            stem += f"_n{self.limit}"
        return f"{stem}_{self.tag}" if self.tag else stem

    def results_paths(self) -> tuple[Path, Path]:
        """``(results JSON, recall-vs-chunks PNG)``: ``<out_dir>/<stem>.json|.png``, or
        ``out_dir`` itself and the PNG beside it when ``out_dir`` ends in ``.json``."""
        out = Path(self.out_dir).expanduser()
        if out.suffix.lower() == ".json":
            return out, out.with_suffix(".png")
        stem = self.results_stem()
        return out / f"{stem}.json", out / f"{stem}.png"

    def check_output(self) -> None:
        """Check, before any work, that the results can be written: the results paths are
        not folders, and their folder is one, or can be made under the nearest existing
        folder, which takes a new file (probed with a temporary file; nothing is left
        behind and no folder is made here).

        Raises:
            InvalidInputError: what is in the way and what to pass instead.
        """
        paths = self.results_paths()
        hint = "pass --out with a writable folder (or a .json file path)"
        for p in paths:
            if p.is_dir():
                raise InvalidInputError(f"cannot write the results to {p}: it is a folder; {hint}")
        folder = paths[0].parent
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise InvalidInputError(f"cannot write the results into {folder}: {existing} is a file, not a folder; {hint}")
        try:
            fd, probe = tempfile.mkstemp(prefix=".meteora-write-check-", dir=existing)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise InvalidInputError(f"cannot write the results into {folder}: {exc.strerror or exc}; {hint}") from exc
