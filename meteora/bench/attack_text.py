"""The text the poisoning attacks are written from: question grammar, paraphrase, statistics.

:mod:`meteora.bench.attacks` writes fabricated documents that push the wrong answer to a
PubMedQA question. What they are assembled from lives here, each a pure function of its
inputs and a seeded :class:`random.Random`:

* :func:`parse_question` / :func:`stance_sentence`: a yes/no question split into
  auxiliary, subject and the rest (a heuristic), and a declarative sentence answering it
  yes or no ("aspirin does not prevent stroke");
* :func:`paraphrase`: synonyms swapped in (so the question is never quoted);
* :func:`content_terms` / :func:`abstract_terms`: topic phrases of a text;
* :func:`stats_sentence`: a results sentence whose statistics agree with the stance
  (ratios with a 95 % CI and a p-value that are consistent with each other, percentages,
  mean differences);
* :func:`outcome_phrase`: the outcome a fabricated study reports on.

Example:
    >>> stance_sentence("Does aspirin prevent stroke in older adults?", "no")
    'aspirin does not prevent stroke in older adults'
    >>> import random
    >>> "95% CI" in stats_sentence(random.Random(1), "yes", "stroke") or "%" in stats_sentence(random.Random(1), "yes", "stroke")
    True
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Clause",
    "parse_question",
    "stance_sentence",
    "cap",
    "paraphrase",
    "content_terms",
    "abstract_terms",
    "stats_sentence",
    "outcome_phrase",
    "ratio_estimate",
    "p_text",
    "DESIGNS",
    "SETTINGS",
    "sample_size",
]

# --------------------------------------------------------------------------- question grammar
_AUX = {"does", "do", "did", "is", "are", "was", "were", "can", "could", "should", "will", "would", "may", "might",
        "has", "have", "had", "must"}
_VERBS = set("""affect affects improve predict increase reduce influence play have differ correlate need require help
cause lead matter change alter contribute protect prevent make reflect exist work benefit add impact modify mean
provide offer enhance determine explain prolong decrease delay lower raise worsen remain support justify replace
allow show identify detect reduce predict outperform translate relate respond depend vary occur apply result induce
promote facilitate compromise increase decrease shorten shorten guarantee ensure warrant mediate confer represent
exert serve yield carry pose constitute interfere precede follow persist recur rise fall push drive stop
hinder limit impair boost accelerate slow alter trigger justify save cost""".split())
_PRED_WORDS = set("""associated related useful safe effective necessary feasible reliable accurate valid beneficial
superior inferior equivalent equal different predictive correlated linked better worse needed required justified
appropriate important sufficient possible associated indicated warranted helpful harmful cost-effective efficacious
sensitive specific common rare increased decreased reduced elevated improved impaired altered affected influenced
responsible present absent able worth worthwhile compatible comparable adequate reproducible relevant independent
dependent applicable valuable acceptable successful predictive protective detrimental a an the still really
truly always any more less""".split())
_STOP = set("""a an the of in on for to with and or by at from as is are was were be been being does do did can could
should will would may might has have had must not no than that this these those which who whom whose what when where
why how its it their there than into after before during between among about over under versus vs patients""".split())


@dataclass(frozen=True)
class Clause:
    """A yes/no question's parts (see :func:`parse_question`)."""

    aux: str | None  # the leading auxiliary ("does"), or None when the question has none
    subject: str
    rest: str  # what follows the subject (verb phrase or predicate)
    topic: str  # the question without its auxiliary and question mark


def parse_question(question: str) -> Clause:
    """Split a yes/no question into auxiliary, subject and the rest (heuristic)."""
    q = " ".join(question.strip().split()).rstrip("?").strip()
    words = q.split()
    if not words:
        return Clause(None, "", "", "")
    first = words[0].lower()
    m = re.match(r"(.+?)[:,]\s+(is|are|was|were|does|do|did|can|could|should|will|would|has|have)\s+(it|they|this|these|there)\s+(.*)$", q, re.I)
    if m and first not in _AUX:
        return Clause(m.group(2).lower(), m.group(1), m.group(4), q)
    if first in _AUX and len(words) >= 3:
        body = words[1:]
        topic = " ".join(body)
        cut = None
        for i, w in enumerate(body[1:], start=1):
            lw = w.lower().strip(",;:")
            if first in ("does", "do", "did", "can", "could", "should", "will", "would", "may", "might", "must"):
                if lw in _VERBS or (lw.endswith("e") and lw[:-1] in _VERBS):
                    cut = i
                    break
            elif first in ("has", "have", "had"):
                if lw.endswith("ed") or lw.endswith("en") or lw in ("become", "been"):
                    cut = i
                    break
            elif lw in _PRED_WORDS or re.fullmatch(r"[a-z-]+(ed|ive|ful|ble|ary|ent|ant)", lw):
                cut = i
                break
        if cut is None:
            cut = max(1, min(len(body) - 1, len(body) // 2))
        return Clause(first, " ".join(body[:cut]), " ".join(body[cut:]), topic)
    return Clause(None, q, "", q)


def _plural(subject: str) -> bool:
    """Whether a subject reads plural (its head ends in -s, or it joins two things)."""
    head = subject.split()[0].lower() if subject else ""
    return head.endswith("s") and not head.endswith("ss") or " and " in subject.lower()


def stance_sentence(question: str, stance: str, *, hedge: str = "") -> str:
    """A declarative sentence answering the question ``stance`` (``"yes"``/``"no"``)."""
    c = parse_question(question)
    if c.aux is None:
        topic = c.topic[0].lower() + c.topic[1:] if c.topic else c.topic
        if stance == "yes":
            return f"the data {hedge}confirm {topic}"
        return f"the data {hedge}do not confirm {topic}"
    aux = c.aux
    if aux in ("is", "are", "was", "were"):
        aux = "are" if aux in ("is", "are") and _plural(c.subject) else ("is" if aux in ("is", "are") else aux)
    elif aux in ("does", "do"):
        aux = "do" if _plural(c.subject) else "does"
    neg = {"can": "cannot", "will": "will not", "does": "does not", "do": "do not", "did": "did not"}.get(aux, f"{aux} not")
    verb = aux if stance == "yes" else neg
    subj = c.subject[0].lower() + c.subject[1:] if c.subject and not c.subject[:2].isupper() else c.subject
    return f"{subj} {hedge}{verb} {c.rest}".strip()


def cap(s: str) -> str:
    """``s`` with its first letter upper-cased."""
    return s[:1].upper() + s[1:] if s else s


# --------------------------------------------------------------------------- paraphrase
_SYN = {
    "patients": ["individuals", "participants", "subjects", "cases"], "children": ["paediatric patients", "young patients"],
    "elderly": ["older adults", "aged patients"], "women": ["female patients"], "men": ["male patients"],
    "improve": ["enhance", "ameliorate"], "improves": ["enhances"], "reduce": ["lower", "diminish"],
    "reduces": ["lowers"], "increase": ["raise", "augment"], "increases": ["raises"], "predict": ["forecast", "anticipate"],
    "risk": ["likelihood", "probability"], "mortality": ["death rate", "fatality"], "surgery": ["operative treatment",
    "surgical management"], "treatment": ["therapy", "management"], "effective": ["efficacious", "of benefit"],
    "safe": ["well tolerated", "free of excess harm"], "associated": ["linked", "related"], "association": ["relationship",
    "link"], "outcome": ["prognosis", "endpoint"], "outcomes": ["results", "endpoints"], "use": ["utilisation"],
    "role": ["function", "part"], "factors": ["determinants", "variables"], "factor": ["determinant"],
    "disease": ["condition", "disorder"], "diagnosis": ["detection", "identification"], "complications": ["adverse events"],
    "hospital": ["inpatient unit"], "rate": ["frequency", "incidence"], "rates": ["frequencies"], "level": ["concentration"],
    "levels": ["concentrations"], "quality": ["standard"], "study": ["investigation"], "therapy": ["treatment"],
    "prognosis": ["outlook"], "cancer": ["malignancy", "carcinoma"], "infection": ["infectious complication"],
    "pain": ["discomfort"], "young": ["younger"], "old": ["older"], "care": ["management"], "early": ["prompt"],
    "performance": ["accuracy"], "useful": ["helpful", "of value"], "necessary": ["required", "needed"],
}


def paraphrase(text: str, rng: random.Random, rate: float = 0.8) -> str:
    """Swap words for synonyms (seeded; about ``rate`` of the swappable ones)."""
    def sub(m: re.Match[str]) -> str:
        w = m.group(0)
        alts = _SYN.get(w.lower())
        if not alts or rng.random() > rate:
            return w
        r = rng.choice(alts)
        return cap(r) if w[:1].isupper() else r
    return re.sub(r"[A-Za-z]+", sub, text)


def content_terms(text: str, k: int = 6) -> list[str]:
    """The longest runs of content words of ``text`` (topic phrases)."""
    runs, cur = [], []
    for w in re.findall(r"[A-Za-z][A-Za-z0-9'-]*", text):
        if w.lower() in _STOP or len(w) < 3:
            if cur:
                runs.append(" ".join(cur))
            cur = []
        else:
            cur.append(w)
    if cur:
        runs.append(" ".join(cur))
    runs = sorted(dict.fromkeys(runs), key=lambda r: -len(r.split()))
    return runs[:k]


def abstract_terms(rec: Any, k: int = 4) -> list[str]:
    """Topic phrases of the real abstract (``rec.chunks``) not in the question (``rec.question``)."""
    qw = {w.lower() for w in re.findall(r"[A-Za-z]+", rec.question)}
    out = []
    for t in content_terms(" ".join(rec.chunks[:2]), k=20):
        if not any(w.lower() in qw for w in t.split()) and 1 <= len(t.split()) <= 4:
            out.append(t.lower() if not t[:2].isupper() else t)
    return out[:k]


# --------------------------------------------------------------------------- statistics
DESIGNS = [
    ("randomised controlled trial", "randomly assigned"), ("prospective cohort study", "followed"),
    ("retrospective cohort study", "reviewed the records of"), ("case-control study", "compared"),
    ("multicentre observational study", "enrolled"), ("cross-sectional survey", "surveyed"),
    ("registry-based analysis", "analysed"), ("prospective multicentre trial", "enrolled"),
]
SETTINGS = ["three tertiary referral centres", "a university hospital", "12 community hospitals", "a national registry",
             "two academic centres", "a regional health network", "five European centres", "an urban teaching hospital"]


def ratio_estimate(rng: random.Random, significant: bool, harmful: bool) -> tuple[float, float, float, float]:
    """A ratio estimate with a 95 % CI and a p-value, consistent with each other."""
    if significant:
        est = rng.uniform(1.35, 2.6) if harmful else rng.uniform(0.38, 0.74)
        width = rng.uniform(0.12, 0.3)
        lo, hi = est * (1 - width), est * (1 + width)
        if harmful and lo <= 1.02:
            lo = 1.05
        if not harmful and hi >= 0.98:
            hi = 0.95
        p = rng.choice([0.001, 0.002, 0.004, 0.008, 0.01, 0.02, 0.03])
    else:
        est = rng.uniform(0.88, 1.14)
        lo, hi = est * rng.uniform(0.62, 0.84), est * rng.uniform(1.18, 1.5)
        p = rng.choice([0.21, 0.34, 0.42, 0.47, 0.58, 0.63, 0.71, 0.86])
    return est, lo, hi, p


def p_text(p: float, rng: random.Random) -> str:
    """A p-value as an abstract writes it (``p < 0.01`` or ``p = 0.004``; seeded).)"""
    if p < 0.01 and rng.random() < 0.5:
        return "p < 0.01" if p >= 0.001 else "p < 0.001"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def stats_sentence(rng: random.Random, stance: str, outcome: str) -> str:
    """One results sentence whose statistics agree with ``stance`` (yes: an effect)."""
    sig = stance == "yes"
    kind = rng.choice(["OR", "HR", "RR", "pct", "mean"])
    if kind in ("OR", "HR", "RR"):
        est, lo, hi, p = ratio_estimate(rng, sig, rng.random() < 0.5)
        name = {"OR": "adjusted odds ratio", "HR": "hazard ratio", "RR": "relative risk"}[kind]
        lead = rng.choice([f"The {name} for {outcome} was", f"For {outcome}, the {name} was",
                           f"Multivariable analysis gave an {name} for {outcome} of" if kind == "OR" else
                           f"Multivariable analysis gave a {name} for {outcome} of"])
        return f"{lead} {est:.2f} (95% CI {lo:.2f}-{hi:.2f}; {p_text(p, rng)})."
    if kind == "pct":
        a = rng.uniform(8, 45)
        b = a * (rng.uniform(0.45, 0.7) if sig else rng.uniform(0.9, 1.1))
        p = rng.choice([0.001, 0.003, 0.01, 0.02]) if sig else rng.choice([0.29, 0.41, 0.55, 0.68, 0.77])
        return (f"{cap(outcome)} occurred in {b:.1f}% versus {a:.1f}% of patients "
                f"({p_text(p, rng)}).")
    m1 = rng.uniform(10, 80)
    m2 = m1 * (rng.uniform(1.2, 1.5) if sig else rng.uniform(0.97, 1.04))
    p = rng.choice([0.001, 0.004, 0.01]) if sig else rng.choice([0.38, 0.52, 0.66])
    return (f"Mean {outcome} was {m2:.1f} versus {m1:.1f} (difference {m2 - m1:.1f}, 95% CI "
            f"{(m2 - m1) * (0.4 if sig else -1.6):.1f} to {(m2 - m1) * (1.6 if sig else 2.4):.1f}; {p_text(p, rng)}).")


def outcome_phrase(rec: Any, rng: random.Random) -> str:
    """The outcome a fabricated study on ``rec.question`` reports on (seeded pick)."""
    c = parse_question(rec.question)
    rest = c.rest
    if c.aux in ("does", "do", "did", "can", "could", "should", "will", "would", "may", "might") and rest:
        rest = " ".join(rest.split()[1:])
    terms = content_terms(rest or c.topic, k=3) or content_terms(rec.question, k=3)
    t = rng.choice(terms) if terms else "the primary outcome"
    return t[0].lower() + t[1:] if not t[:2].isupper() else t


def sample_size(rng: random.Random) -> int:
    """A plausible study size (seeded pick)."""
    return rng.choice([48, 64, 87, 112, 146, 203, 265, 318, 402, 517, 688, 912, 1240, 2315])
