"""Export torch models to ONNX for :mod:`meteora.inference.onnx_models` (torch, onnx and
onnxscript are needed here, and only here).

:func:`export_sentence_encoder` takes a loaded sentence-transformers encoder and
:func:`export_cross_encoder` a loaded one-logit cross-encoder (the evidence scorer with
its adapter merged). Each writes ``model.onnx`` (torch's ``torch.export``-based exporter,
fp32, dynamic batch and sequence axes) and the tokenizer the model runs, then checks the
export against the torch model on probe texts (short, empty, accented, mixed case,
longer than ``max_seq_length``): the token ids must be identical and the outputs must
agree within :data:`ENCODER_TOLERANCE` (embedding components) or
:data:`SCORER_TOLERANCE` (logits), else :class:`~meteora.errors.ExportError` is raised
and nothing is published. The manifest fields returned record the check.

Example:
    >>> from sentence_transformers import SentenceTransformer  # doctest: +SKIP
    >>> fields = export_sentence_encoder(SentenceTransformer(path), tmp, source=path)  # doctest: +SKIP
    >>> fields["check"]["max_abs_diff"] < ENCODER_TOLERANCE  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meteora.embeddings.fingerprint import model_fingerprint
from meteora.errors import ExportError
from meteora.inference.onnx_models import POOLING_MODES, OnnxCrossEncoder, OnnxSentenceEncoder

__all__ = [
    "ENCODER_TOLERANCE",
    "SCORER_TOLERANCE",
    "PROBE_TEXTS",
    "sentence_encoder_problem",
    "export_sentence_encoder",
    "export_cross_encoder",
]

logger = logging.getLogger(__name__)

#: Largest absolute difference allowed between an embedding component from ONNX and
#: from torch (normalised embeddings: a cosine moves by at most about twice this).
ENCODER_TOLERANCE = 1e-4
#: Largest absolute difference allowed between an evidence logit from ONNX and from torch.
SCORER_TOLERANCE = 1e-3
_OPSET = 18

_LONG = " ".join(["Aspirin (75 mg daily) reduced the incidence of ischaemic stroke by 21% (95% CI 9-31)."] * 40)
#: Texts every export is checked on (a long one exercises truncation).
PROBE_TEXTS = (
    "Does aspirin prevent stroke?",
    "",
    "  Leading and trailing spaces  ",
    "Fièvre chez l'enfant: paracétamol ou ibuprofène?",
    "HbA1c fell from 8.1% to 7.2% (p<0.001) in the METFORMIN arm.",
    _LONG,
    "naïve T-cells; IL-2 → IFN-γ 日本語",
)
_PROBE_PAIRS = tuple((q, p) for q in PROBE_TEXTS[:2] + PROBE_TEXTS[5:6] for p in PROBE_TEXTS)


def _module_kinds(st_model: Any) -> list[str]:
    return [type(m).__name__ for m in st_model]


def _pooling_mode(pooling: Any) -> str | None:
    mode = getattr(pooling, "pooling_mode", None)
    if isinstance(mode, str):
        return mode
    get = getattr(pooling, "get_pooling_mode_str", None)  # sentence-transformers < 6
    return get() if callable(get) else None


def sentence_encoder_problem(st_model: Any) -> str | None:
    """Why ``st_model`` cannot be exported faithfully, or ``None`` when it can: the ONNX
    encoder reproduces a Transformer, a Pooling (mean, CLS or max, no prompt handling) and
    an optional Normalize module, with a fast tokenizer and no default prompt."""
    kinds = _module_kinds(st_model)
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return f"its modules are {kinds}; the ONNX runtime reproduces Transformer + Pooling (+ Normalize)"
    transformer, pooling = st_model[0], st_model[1]
    mode = _pooling_mode(pooling)
    if mode not in POOLING_MODES:
        return f"its pooling is {mode!r}; the ONNX runtime reproduces {', '.join(POOLING_MODES)}"
    if getattr(pooling, "include_prompt", True) is False:
        return "its pooling excludes the prompt tokens"
    if getattr(transformer, "do_lower_case", False):
        return "it lower-cases texts before tokenizing (do_lower_case)"
    if getattr(st_model, "default_prompt_name", None) or getattr(st_model, "truncate_dim", None):
        return "it has a default prompt or a truncated dimension"
    if getattr(getattr(transformer, "tokenizer", None), "backend_tokenizer", None) is None:
        return "its tokenizer is not a fast (tokenizers) tokenizer"
    return None


def _keyword_module(model: Any, names: Sequence[str], output: str) -> Any:
    """``model`` called with keyword inputs, returning one named output (the exporter
    passes positional tensors; transformers' ``forward`` wants keywords)."""
    import torch

    class KeywordInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return getattr(self.model(**{n: given[n] for n in names}), output)

    return KeywordInputs().eval()


def _input_names(tokenizer: Any) -> list[str]:
    names = list(getattr(tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"])
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]


def _export_graph(model: Any, tokenizer: Any, output: str, path: Path, example: Sequence[Any]) -> list[str]:
    """Write ``model`` (a transformers model) as ONNX with dynamic batch and sequence axes."""
    import torch

    names = _input_names(tokenizer)
    if names[:2] != ["input_ids", "attention_mask"]:
        raise ExportError(f"{type(model).__name__} takes {names}; the ONNX runtime feeds input_ids and attention_mask")
    enc = tokenizer(list(example), padding=True, truncation="longest_first", max_length=64, return_tensors="pt")
    args = tuple(enc[n] for n in names)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = {n: {0: batch, 1: seq} for n in names}
    chatter = io.StringIO()
    t0 = time.perf_counter()
    try:
        with torch.no_grad(), contextlib.redirect_stdout(chatter), _quiet_export():
            program = torch.onnx.export(
                _keyword_module(model, names, output), args, dynamo=True, input_names=names, output_names=[output],
                dynamic_shapes=shapes, opset_version=_OPSET, external_data=False, verbose=False,
            )
            program.save(str(path))
    except Exception as exc:  # torch.export / onnxscript raise many kinds
        raise ExportError(f"torch could not export {type(model).__name__} to ONNX: {type(exc).__name__}: {exc}") from exc
    logger.debug("exported %s in %.1f s: %s", type(model).__name__, time.perf_counter() - t0, chatter.getvalue().strip())
    return names


class _quiet_export(contextlib.AbstractContextManager):
    """Silence the exporter's chatter: deprecation and tracer warnings, optional-operator
    notices, graph-optimisation logs (nothing a user can act on; errors still raise)."""

    _LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnx_ir", "onnxscript")

    def __enter__(self) -> _quiet_export:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")
        self._levels = {name: logging.getLogger(name).level for name in self._LOGGERS}
        for name in self._LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._w.__exit__(*exc)


def _tokenizer_fields(tokenizer: Any, folder: Path) -> dict[str, Any]:
    """Save the tokenizer the torch model runs as ``tokenizer.json`` (no padding or
    truncation baked in: the runtime sets them per call); the settings the runtime needs."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    backend.save(str(folder / "tokenizer.json"))
    if tokenizer.pad_token_id is None:
        raise ExportError(f"{type(tokenizer).__name__} has no padding token")
    return {
        "pad_id": int(tokenizer.pad_token_id),
        "pad_token": str(tokenizer.pad_token),
        "pad_type_id": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        "padding_side": getattr(tokenizer, "padding_side", "right"),
        "truncation_side": getattr(tokenizer, "truncation_side", "right"),
    }


def _same_tokens(torch_model: Any, onnx_model: Any, inputs: Sequence[Any]) -> None:
    """Refuse an export whose tokenizer gives other ids than the torch model's own tokenization."""
    # sentence-transformers >= 6 calls it preprocess (tokenize is its deprecated name)
    tokenize = getattr(torch_model, "preprocess", None) or getattr(torch_model, "tokenize", None)
    if not callable(tokenize):
        return  # the output check below still compares the two end to end
    theirs = tokenize(list(inputs))
    ours = onnx_model.tokenize(inputs)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        if name in theirs and not np.array_equal(np.asarray(theirs[name].cpu()), ours[name]):
            raise ExportError(f"the exported tokenizer gives other {name} than the torch model's; not using the export")


def _compare(what: str, ours: np.ndarray, theirs: np.ndarray, tolerance: float) -> dict[str, Any]:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if ours.shape != theirs.shape or not np.all(np.isfinite(ours)):
        raise ExportError(f"the ONNX {what} gives shape {ours.shape} (finite: {np.all(np.isfinite(ours))}), torch {theirs.shape}")
    diff = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
    if diff > tolerance:
        raise ExportError(f"the ONNX {what} differs from torch by up to {diff:.3g} (> {tolerance:g}); not using the export")
    return {"inputs": int(ours.shape[0]), "max_abs_diff": diff, "tolerance": tolerance}


def export_sentence_encoder(st_model: Any, folder: Path, *, source: str) -> dict[str, Any]:
    """Export a sentence-transformers encoder into ``folder``; returns the manifest fields.

    Raises:
        ExportError: an unsupported structure (:func:`sentence_encoder_problem`), a failed
            export, or one that disagrees with ``st_model`` on :data:`PROBE_TEXTS`.
    """
    import torch

    problem = sentence_encoder_problem(st_model)
    if problem:
        raise ExportError(f"{source} cannot run on ONNX: {problem}")
    st_model.eval()
    transformer, tokenizer = st_model[0], st_model.tokenizer
    hf = getattr(transformer, "model", None) or transformer.auto_model
    names = _export_graph(hf, tokenizer, "last_hidden_state", folder / "model.onnx", PROBE_TEXTS[:3])
    fields: dict[str, Any] = {
        "source": source,
        "inputs": names,
        "pooling": _pooling_mode(st_model[1]),
        "normalize": _module_kinds(st_model)[-1] == "Normalize",
        "dim": int((getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension)()),
        "max_seq_length": int(st_model.max_seq_length),
        "max_position_embeddings": getattr(hf.config, "max_position_embeddings", None),
        "fingerprint": model_fingerprint(st_model),
        "tokenizer": _tokenizer_fields(tokenizer, folder),
        "torch": torch.__version__,
        "opset": _OPSET,
    }
    onnx_model = OnnxSentenceEncoder(folder, fields)
    _same_tokens(st_model, onnx_model, PROBE_TEXTS)
    with torch.no_grad():
        theirs = st_model.encode(list(PROBE_TEXTS), batch_size=4, convert_to_numpy=True, show_progress_bar=False)
    fields["check"] = _compare("encoder", onnx_model.encode(PROBE_TEXTS, batch_size=4), theirs, ENCODER_TOLERANCE)
    fields["check"]["single"] = _compare("encoder", onnx_model.encode(PROBE_TEXTS[1:2]), theirs[1:2], ENCODER_TOLERANCE)["max_abs_diff"]
    return fields


def export_cross_encoder(
    cross_encoder: Any,
    folder: Path,
    *,
    source: str,
    max_length: int,
    reference: Callable[[list[tuple[str, str]]], np.ndarray],
) -> dict[str, Any]:
    """Export a one-logit sentence-transformers ``CrossEncoder`` into ``folder``.

    ``reference(pairs)`` gives the torch logits the export must match (the caller's own
    scoring path). Returns the manifest fields.

    Raises:
        ExportError: a failed export, or one that disagrees with ``reference``.
    """
    import torch

    hf = cross_encoder[0].model if hasattr(cross_encoder, "__getitem__") else cross_encoder.model
    tokenizer = cross_encoder.tokenizer
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ExportError(f"{source} cannot run on ONNX: its tokenizer is not a fast (tokenizers) tokenizer")
    if getattr(hf.config, "num_labels", 1) != 1:
        raise ExportError(f"{source} cannot run on ONNX: it has {hf.config.num_labels} labels, the scorer reads one logit")
    hf.eval()
    names = _export_graph(hf, tokenizer, "logits", folder / "model.onnx", [list(p) for p in _PROBE_PAIRS[:3]])
    fields: dict[str, Any] = {
        "source": source,
        "inputs": names,
        "max_seq_length": int(max_length),
        "max_position_embeddings": getattr(hf.config, "max_position_embeddings", None),
        "tokenizer": _tokenizer_fields(tokenizer, folder),
        "torch": torch.__version__,
        "opset": _OPSET,
    }
    onnx_model = OnnxCrossEncoder(folder, fields)
    _same_tokens(cross_encoder, onnx_model, _PROBE_PAIRS)
    theirs = reference(list(_PROBE_PAIRS))
    fields["check"] = _compare("scorer", onnx_model.predict(_PROBE_PAIRS, batch_size=4), theirs, SCORER_TOLERANCE)
    return fields
