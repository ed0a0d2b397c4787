"""What a passage reports: the polarity of its finding, from its statistics and wording.

A medical passage either reports an effect / association (``+1``), reports none ("no
significant difference", a confidence interval of a ratio that spans 1: ``-1``), or says
nothing usable (``0``). Two documents whose findings on the same question have opposite
signs disagree: the poison defence reports them as a conflict instead of silently
keeping one side (:mod:`meteora.conflicts`).

The rules read, question-agnostically:

* statistics (each counts twice a wording cue): p-values (below 0.05 an effect, else
  none), confidence intervals of ratios (OR, HR, RR, …: excluding 1 an effect) and of
  differences (excluding 0 an effect);
* wording: significance and association words for an effect; negated effects ("did
  not", "no significant", "failed to", "similar", "comparable", …) for none.

It is right far more often on passages that report an effect than on those that report
none (on PubMedQA *train* RESULTS chunks: 156 of 195 "yes" questions read +1, while
"no" questions split 64 / 58), so a conflict is a prompt to look, never a verdict.

Example:
    >>> finding("Mortality was significantly lower with X (OR 0.61, 95% CI 0.45-0.80; p < 0.001).").sign
    1
    >>> finding("There was no significant difference in mortality (p = 0.42).").sign
    -1
    >>> finding("We enrolled 120 patients.").sign
    0
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Finding", "finding", "SIGN_THRESHOLD"]

#: ``|polarity|`` at or above which a finding has a sign.
SIGN_THRESHOLD = 0.25

_NUM = r"(\d+(?:\.\d+)?|\.\d+)"
_SIGNED = r"(-?(?:\d+(?:\.\d+)?|\.\d+))"
_P = re.compile(r"\bp\s*(<=|>=|<|=|≤|>|≥)\s*(0?\.\d+|1(?:\.0+)?)", re.I)
_RATIO_CI = re.compile(
    r"\b(OR|HR|RR|aOR|aHR|IRR|odds ratio|hazard ratio|relative risk|risk ratio|rate ratio)\b[^.;]{0,40}?"
    + _NUM + r"[^.;]{0,30}?(?:95\s*%\s*)?(?:CI|confidence interval)[^0-9-]{0,6}" + _NUM + r"\s*(?:-|–|to|,)\s*" + _NUM,
    re.I,
)
_DIFF_CI = re.compile(
    r"(?:difference|change)[^.;]{0,40}?(?:95\s*%\s*)?CI[^0-9-]{0,6}" + _SIGNED + r"\s*(?:to|,)\s*" + _SIGNED, re.I
)
_NULL = re.compile(
    r"\b(no|not|nor|without)\s+(?:\w+\s+){0,2}?(significant\w*|statistically|differ\w*|associat\w*|effect\w*|"
    r"benefit\w*|impact|influence|improv\w*|increas\w*|reduc\w*|decreas\w*|change\w*|correlat\w*|role|evidence|"
    r"advantage\w*|predict\w*|relationship|link\w*|support\w*|safe|superior|necessary|useful|justified|warranted|"
    r"recommended|confirm\w*)|"
    r"\b(did|does|do|was|were|is|are|could|can|has|have|had)\s*(?:not|n't)\b|\bcannot\b|"
    r"\b(similar|comparable|unchanged|unaffected|equivalent|non-?significant|insignificant|negligible|"
    r"failed to|no longer|independent of)\b",
    re.I,
)
_EFFECT = re.compile(
    r"(?<!not )(?<!no )\b(significant(?:ly)?|associated with|correlated with|predict(?:s|ed|or|ive)|"
    r"increased|decreased|reduced|improved|lower|higher|greater|superior|effective|beneficial|benefit|"
    r"protective|risk factor|more likely|less likely|doubl\w+|halv\w+)\b",
    re.I,
)


@dataclass(frozen=True)
class Finding:
    """The finding a passage reports.

    Attributes:
        polarity: in ``[-1, 1]``: ``(effect - null) / (effect + null)`` (0 with no cue).
        effect / null: the weighted cues for an effect and for none.
        cues: the first cues read (for explanations).
    """

    polarity: float
    effect: float
    null: float
    cues: tuple[str, ...] = field(default_factory=tuple)

    @property
    def sign(self) -> int:
        """``+1`` (an effect), ``-1`` (none) or ``0`` (nothing usable)."""
        if self.polarity >= SIGN_THRESHOLD:
            return 1
        return -1 if self.polarity <= -SIGN_THRESHOLD else 0


def _statistics(text: str) -> tuple[float, float, list[str]]:
    effect = null = 0.0
    cues: list[str] = []
    for op, v in _P.findall(text):
        x = float(v)
        if (op in ("<", "≤", "<=") and x <= 0.05) or (op == "=" and x < 0.05):
            effect += 2
        else:
            null += 2
        cues.append(f"p{op}{v}")
    for m in _RATIO_CI.finditer(text):
        lo, hi = sorted((float(m.group(3)), float(m.group(4))))
        spans = lo <= 1.0 <= hi
        null += 2 * spans
        effect += 2 * (not spans)
        cues.append(f"CI {lo:g}-{hi:g} {'spans' if spans else 'excludes'} 1")
    for m in _DIFF_CI.finditer(text):
        lo, hi = sorted((float(m.group(1)), float(m.group(2))))
        spans = lo <= 0.0 <= hi
        null += 2 * spans
        effect += 2 * (not spans)
        cues.append(f"difference CI {'spans' if spans else 'excludes'} 0")
    return effect, null, cues


def finding(text: str) -> Finding:
    """The :class:`Finding` of ``text`` (statistics weigh twice a wording cue).

    Example:
        >>> f = finding("The hazard ratio was 0.98 (95% CI 0.80-1.20).")
        >>> f.sign, f.cues
        (-1, ('CI 0.8-1.2 spans 1',))
    """
    effect, null, cues = _statistics(text)
    nulls = _NULL.findall(text)
    null += len(nulls)
    effects = [m.group(0) for m in _EFFECT.finditer(text)]
    # an effect word inside a negated phrase was already counted as no effect
    effect += max(0, len(effects) - len(nulls))
    cues += [" ".join(x for x in n if x)[:30] for n in nulls[:3]] + effects[:3]
    total = effect + null
    return Finding(0.0 if total == 0 else (effect - null) / total, effect, null, tuple(cues))
