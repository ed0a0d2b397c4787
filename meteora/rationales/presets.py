"""Named rationale-generator setups (model + adapter + template + decoding defaults).

================================  =====================================================
``med-rationale-mistral-7b``      the production setup: Mistral-7B-Instruct-v0.3 with the
                                  okoene-med-rationale QLoRA adapter, raw
                                  ``med-rationale`` prompt, 4-bit NF4. The adapter may
                                  never emit EOS, so generation is capped at 128 new
                                  tokens and the first ``n`` non-empty lines are kept.
``smollm2-135m``                  the offline default (SmolLM2-135M-Instruct from
                                  ``meteora models pull``) with the ``chat`` template,
                                  tuned for that model.
``alpaca-pubmedqa``               Mistral-7B-Instruct-v0.3 with a PubMedQA LoRA adapter,
                                  ``alpaca`` template, 4-bit.
``medalpaca-7b``                  medalpaca/medalpaca-7b, ``alpaca`` template, 4-bit.
``gemma3-270m-cot``               a Gemma-3-270M medical chain-of-thought model, ``cot``
                                  template (the ``<think>`` block is stripped).
================================  =====================================================

Only ``smollm2-135m`` works without a model hub; the others download on first use.
:meth:`RationaleGenerator.from_preset <meteora.rationales.generator.RationaleGenerator.from_preset>`
builds a generator from a preset; keyword overrides win over the preset's values.

Backends (``backend=`` override): ``smollm2-135m`` runs on llama.cpp by default (the
packaged GGUF, ~4x faster than torch on a CPU). The 7B presets load in transformers
(4-bit) unless pointed at a server: ``backend="openai", base_url=...,
model="<served name>"`` — the preset's prompt template is kept, its ``load_in_4bit`` and
``adapter`` are dropped (the server holds the weights; with vLLM serve the adapter with
``--enable-lora --lora-modules <served name>=<adapter>`` and pass that name).

Example:
    >>> resolve_preset("med-rationale-mistral-7b")["template"]
    'med-rationale'
    >>> sorted(PRESETS)[:2]
    ['alpaca-pubmedqa', 'gemma3-270m-cot']
"""

from __future__ import annotations

import copy
from typing import Any

from meteora.errors import InvalidInputError

__all__ = ["PRESETS", "resolve_preset"]

#: Preset name -> keyword arguments of ``RationaleGenerator.from_pretrained`` plus a
#: ``description``. ``max_new_tokens`` becomes the generator's default cap.
PRESETS: dict[str, dict[str, Any]] = {
    "med-rationale-mistral-7b": {
        "model": "mistralai/Mistral-7B-Instruct-v0.3",
        "adapter": "chidiokoene/okoene-med-rationale",
        "template": "med-rationale",
        "load_in_4bit": True,
        "max_new_tokens": 128,
        "description": (
            "Mistral-7B-Instruct-v0.3 + okoene-med-rationale QLoRA adapter (medical rationales, "
            "one per line). Needs the hub (or local copies) and ~5 GB of memory in 4-bit."
        ),
    },
    "smollm2-135m": {
        "model": None,
        "adapter": None,
        "template": "chat",
        "load_in_4bit": False,
        "max_new_tokens": None,
        "description": (
            "SmolLM2-135M-Instruct, the offline default from `meteora models pull`, through its chat "
            "template with few-shot examples; weak but safe with the rationale filters."
        ),
    },
    "alpaca-pubmedqa": {
        "model": "mistralai/Mistral-7B-Instruct-v0.3",
        "adapter": "iamaber/mistral-7b-pubmedqa-lora-plus",
        "template": "alpaca",
        "load_in_4bit": True,
        "max_new_tokens": 128,
        "description": (
            "Mistral-7B-Instruct-v0.3 with a LoRA adapter fine-tuned on PubMedQA (pqa_labeled), "
            "prompted with the alpaca layout; it was trained to answer, so rely on the filters."
        ),
    },
    "medalpaca-7b": {
        "model": "medalpaca/medalpaca-7b",
        "adapter": None,
        "template": "alpaca",
        "load_in_4bit": True,
        "max_new_tokens": 128,
        "description": "MedAlpaca-7B (LLaMA fine-tuned on medical instruction data), alpaca layout, 4-bit.",
    },
    "gemma3-270m-cot": {
        "model": "alpha-ai/Medical-Diagnosis-COT-Gemma3-270M",
        "adapter": None,
        "template": "cot",
        "load_in_4bit": False,
        "max_new_tokens": 384,
        "description": (
            "Gemma-3-270M fine-tuned for medical chain-of-thought (reasons inside <think>...</think>); "
            "the think block is stripped before parsing."
        ),
    },
}

_LOAD_KEYS = {"model", "adapter", "template", "load_in_4bit", "max_new_tokens"}


def resolve_preset(name: str) -> dict[str, Any]:
    """A copy of the preset's settings (without its description).

    Raises:
        InvalidInputError: unknown name; the message lists the presets.

    Example:
        >>> resolve_preset("smollm2-135m")["template"]
        'chat'
    """
    if not isinstance(name, str) or name not in PRESETS:
        raise InvalidInputError(
            f"unknown rationale preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}"
        )
    return {k: copy.deepcopy(v) for k, v in PRESETS[name].items() if k in _LOAD_KEYS}
