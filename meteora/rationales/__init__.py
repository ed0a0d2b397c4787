"""Rationale generation (stage 1 of METEORA): templates, parsing, filtering, generation, caching.

Example:
    >>> from meteora.rationales import parse_rationales, filter_rationales
    >>> parsed = parse_rationales("1. Stroke rates with aspirin versus placebo.\\n2. Bleeding events.")
    >>> filter_rationales("Does aspirin prevent stroke?", parsed.rationales)[0]
    ['Stroke rates with aspirin versus placebo.']
"""

from __future__ import annotations

from meteora.rationales.cache import RationaleCache
from meteora.rationales.filters import filter_rationales
from meteora.rationales.generator import RationaleGenerator
from meteora.rationales.parsing import ParsedRationales, parse_rationales, strip_think
from meteora.rationales.presets import PRESETS, resolve_preset
from meteora.rationales.rationale_set import RationaleSet
from meteora.rationales.templates import TEMPLATES, PromptTemplate, get_template, register_template

__all__ = [
    "PromptTemplate",
    "get_template",
    "register_template",
    "TEMPLATES",
    "parse_rationales",
    "strip_think",
    "ParsedRationales",
    "filter_rationales",
    "RationaleGenerator",
    "RationaleSet",
    "RationaleCache",
    "PRESETS",
    "resolve_preset",
]
