"""Formatting benchmark results: console tables, environment versions, plots.

Example:
    >>> print(format_table({"bm25": {"NDCG@10": 0.7671, "seconds": 1.5}}, ["NDCG@10", "seconds"]))
    method  NDCG@10  seconds
    ------  -------  -------
    bm25     0.7671     1.50
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "format_table",
    "environment_versions",
    "load_average",
    "command_line",
    "plot_recall_vs_chunks",
]

logger = logging.getLogger(__name__)

_PACKAGES = (
    "meteora-rerank", "numpy", "torch", "transformers", "sentence-transformers", "bm25s",
    "faiss-cpu", "numba", "pytrec-eval-terrier", "peft", "trl", "bitsandbytes",
)


def environment_versions(packages: Sequence[str] | None = None) -> dict[str, str]:
    """Versions of Python, the platform and the installed ones of ``packages`` (default:
    the packages that affect results), read from the installed distributions' metadata
    (nothing is imported).

    Example:
        >>> sorted(environment_versions(["no-such-package-xyz"]))
        ['platform', 'python']
    """
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in _PACKAGES if packages is None else packages:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, rounded to 2 places (``None`` where unsupported).

    Example:
        >>> la = load_average()
        >>> la is None or len(la) == 3
        True
    """
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def command_line() -> str:
    """The command that started this process, shell-quoted (interpreter path relative when under the cwd).

    Example:
        >>> isinstance(command_line(), str)
        True
    """
    exe = Path(sys.executable)
    try:
        exe_str = os.path.relpath(exe) if exe.is_relative_to(Path.cwd()) else str(exe)
    except ValueError:
        exe_str = str(exe)
    return shlex.join([exe_str, *sys.argv])


def _fmt(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if column in ("seconds", "index_seconds", "search_seconds") or column.endswith("_chunks") or column == "queries/s":
            return f"{value:.2f}"
        return f"{value:.4f}"
    return str(value)


def format_table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table: one row per method, the given metric columns."""
    header = ["method", *columns]
    body = [[name, *(_fmt(metrics.get(c), c) for c in columns)] for name, metrics in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))),
        "  ".join("-" * w for w in widths),
    ]
    for r in body:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(lines)


def plot_recall_vs_chunks(views: Mapping[str, Any], path: str | Path, *, title: str = "") -> Path | None:
    """Recall vs mean number of chunks: fixed-k sweeps as lines, selections as points.

    ``views`` is the ``"views"`` part of a results JSON. Returns the PNG path, or
    ``None`` when matplotlib is not installed (install ``meteora-rerank[plot]``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning('matplotlib is not installed; skipping the plot (pip install "meteora-rerank[plot]")')
        return None
    from meteora._io import atomic_write_bytes

    names = list(views)
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, view in zip(axes[0], names, strict=True):
        methods = views[view]["methods"]
        sweeps: dict[str, list[tuple[float, float]]] = {}
        points: dict[str, tuple[float, float]] = {}
        for name, m in methods.items():
            if "recall" not in m or "mean_chunks" not in m:
                continue
            if "@" in name:
                base, _, _k = name.partition("@")
                sweeps.setdefault(base, []).append((m["mean_chunks"], m["recall"]))
            else:
                points[name] = (m["mean_chunks"], m["recall"])
        for base, pts in sorted(sweeps.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"{base} top-k")
        for i, (name, (x, y)) in enumerate(sorted(points.items())):
            ax.scatter([x], [y], marker="**^sDvP"[i % 7] if i else "*", s=120, zorder=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("chunks per query (mean)")
        ax.set_ylabel("recall")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{title} — {view} view" if title else f"{view} view")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def write_results_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write a results file atomically (UTF-8 JSON, indent 2): readers see the old file or
    the new one, never half of one. For benchmark scripts.

    Example:
        >>> import tempfile, json, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "r.json"
        >>> write_results_json(out, {"F1": 0.5}); json.loads(out.read_text())["F1"]
        0.5
    """
    from meteora._io import atomic_write_json

    atomic_write_json(path, obj, indent=2)
