"""Training data: the med-rationale SFT files, PubMedQA QA pairs, CoT pairs, DPO pairs.

Every loader validates its rows and reports each bad one with its file name and 1-based
line number. A loader collects *all* problems before deciding: with ``strict=True`` it
raises :class:`~meteora.errors.TrainingDataError` listing them; otherwise it skips them,
logs a warning and keeps them in ``rejected``.

* :func:`load_rationale_sft` — the medical rationale SFT format
  (``{id, query, rationales, text}`` per line, as in ``med-rationales/*.jsonl``).
* :func:`pubmedqa_alpaca_examples` — PubMedQA question → ``"yes. <long answer>"`` in the
  Alpaca layout, train side only (the 500 official test questions are refused).
* :func:`cot_examples` — the same questions for chat-template CoT models:
  ``<think>…</think>`` then the answer.
* :func:`load_preference_pairs` / :func:`split_pairs` — DPO pairs from a JSONL file.
* :func:`read_jsonl` / :func:`write_jsonl_atomic` — JSON Lines with line-numbered errors.

Example:
    >>> ds = load_rationale_sft(data_dir("med-rationales") / "val.jsonl")  # doctest: +SKIP
    >>> len(ds), len(ds.rejected), len(ds.duplicates)  # doctest: +SKIP
    (3120, 0, 126)
    >>> ds.pairs()[0]["prompt"].endswith("### Response:\\n")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meteora._io import atomic_write_text
from meteora.errors import DataNotFoundError, InvalidInputError, TrainingDataError
from meteora.rationales.templates import PromptTemplate, get_template
from meteora.settings import data_dir

__all__ = [
    "RowProblem",
    "RationaleExample",
    "SFTDataset",
    "load_rationale_sft",
    "normalize_query",
    "file_sha256",
    "read_jsonl",
    "write_jsonl_atomic",
    "PUBMEDQA_QA_INSTRUCTION",
    "PUBMEDQA_ALPACA",
    "pubmedqa_alpaca_examples",
    "cot_examples",
    "load_preference_pairs",
    "split_pairs",
]

logger = logging.getLogger(__name__)

#: Word-count bounds for one rationale (inclusive).
MIN_WORDS = 4
MAX_WORDS = 80
_MAX_LISTED = 25


@dataclass(frozen=True)
class RowProblem:
    """One bad (or skipped) row: where it is and what is wrong with it."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{Path(self.path).name}:{self.line}: {self.reason}"


def _problem_message(what: str, problems: Sequence[RowProblem], hint: str) -> str:
    shown = "\n".join(f"  - {p}" for p in problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"{len(problems)} bad row(s) in {what}:\n{shown}{more}\n{hint}"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file (recorded with every trained adapter)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _require_file(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataNotFoundError(
            f"{what} {str(p)!r} does not exist (or is not a file); check the path"
        )
    return p


# --------------------------------------------------------------------------- JSON Lines


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """Yield ``(line_no, obj, error)`` for each non-blank line; ``error`` set when unparsable."""
    with open(path, "rb") as fh:
        for line_no, data in enumerate(fh, start=1):
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_no, None, f"not valid UTF-8 (byte {data[exc.start]:#04x} at column {exc.start + 1}); save the file as UTF-8"
                continue
            if line_no == 1 and raw.startswith("\ufeff"):
                raw = raw[1:]
            if not raw.strip():
                continue
            try:
                yield line_no, json.loads(raw), None
            except json.JSONDecodeError as exc:
                yield line_no, None, f"invalid JSON ({exc.msg} at column {exc.colno})"


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """Read a JSON Lines file (blank lines are skipped).

    Raises:
        DataNotFoundError: the file does not exist.
        TrainingDataError: some lines are not valid JSON; every one is listed as
            ``file:line: reason``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.jsonl"
        >>> write_jsonl_atomic(p, [{"a": 1}, {"a": 2}])
        >>> read_jsonl(p)
        [{'a': 1}, {'a': 2}]
    """
    p = _require_file(path, "JSONL file")
    rows: list[Any] = []
    problems: list[RowProblem] = []
    for line_no, obj, error in _iter_jsonl(p):
        if error is not None:
            problems.append(RowProblem(str(p), line_no, error))
        else:
            rows.append(obj)
    if problems:
        raise TrainingDataError(_problem_message(str(p), problems, "Fix or remove these lines."))
    return rows


def write_jsonl_atomic(path: str | os.PathLike[str], rows: Iterable[Any]) -> None:
    """Write ``rows`` as JSON Lines (UTF-8, one object per line) atomically."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(path, text)


# --------------------------------------------------------------------------- med-rationale SFT


def normalize_query(query: str) -> str:
    """Key used to deduplicate queries: case-folded, whitespace collapsed, end punctuation dropped.

    Example:
        >>> normalize_query("  What is  Aspirin? ") == normalize_query("what is aspirin")
        True
    """
    return " ".join(query.casefold().split()).rstrip(" ?.!")


@dataclass(frozen=True)
class RationaleExample:
    """One validated med-rationale row."""

    id: str
    query: str
    rationales: tuple[str, ...]
    line: int
    text: str | None = None

    @property
    def response(self) -> str:
        """The training response: one rationale per line."""
        return "\n".join(self.rationales)


@dataclass
class SFTDataset:
    """Validated rationale SFT examples, plus what was rejected or deduplicated.

    Attributes:
        examples: the rows kept, in file order.
        rejected: rows that failed validation (file, line, reason).
        duplicates: rows dropped because their normalised query appeared earlier.
        excluded: rows dropped because their query is in ``exclude_queries``.
        path: the source file (``None`` when built in memory).
        sha256: the source file's digest.
    """

    examples: list[RationaleExample]
    rejected: list[RowProblem] = field(default_factory=list)
    duplicates: list[RowProblem] = field(default_factory=list)
    excluded: list[RowProblem] = field(default_factory=list)
    path: Path | None = None
    sha256: str | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[RationaleExample]:
        return iter(self.examples)

    def __getitem__(self, i: int) -> RationaleExample:
        return self.examples[i]

    def __repr__(self) -> str:
        src = self.path.name if self.path else "<memory>"
        return (
            f"SFTDataset({src!r}, examples={len(self.examples)}, rejected={len(self.rejected)}, "
            f"duplicates={len(self.duplicates)}, excluded={len(self.excluded)})"
        )

    def queries(self) -> list[str]:
        """The queries of the kept examples."""
        return [e.query for e in self.examples]

    def pairs(
        self,
        template: str | PromptTemplate = "med-rationale",
        *,
        n: int | str | None = None,
        tokenizer: Any = None,
    ) -> list[dict[str, str]]:
        """``[{"prompt", "completion"}]`` for SFT, rendered with a prompt template.

        Args:
            template: template name or object; the default reproduces the adapter's format.
            n: the number of rationales the prompt asks for: ``None`` = the template's
                default (3 for ``med-rationale``, which is what the original ``text`` field
                says on 99 % of rows, even for rows with 4 or 5 rationales), ``"count"`` =
                the row's own number of rationales, or an integer.
            tokenizer: needed by chat templates.
        """
        tpl = get_template(template)
        out = []
        for ex in self.examples:
            if n == "count":
                k: int | None = len(ex.rationales)
            elif n is None or (isinstance(n, int) and not isinstance(n, bool)):
                k = n
            else:
                raise InvalidInputError(f"n must be None, 'count' or a positive integer, got {n!r}")
            prompt, completion = tpl.training_pair(ex.query, ex.response, k, tokenizer)
            out.append({"prompt": prompt, "completion": completion})
        return out

    def text_mismatches(
        self, template: str | PromptTemplate = "med-rationale", n: int | None = None
    ) -> list[RowProblem]:
        """Rows whose stored ``text`` differs from ``prompt + response`` rendered by ``template``.

        Rows without a ``text`` field are not compared. Each problem says how the text
        differs (missing response, different prompt, response joined differently, ...).
        """
        tpl = get_template(template)
        problems: list[RowProblem] = []
        path = str(self.path) if self.path else "<memory>"
        for ex in self.examples:
            if ex.text is None:
                continue
            prompt, completion = tpl.training_pair(ex.query, ex.response, n, None)
            if ex.text == prompt + completion:
                continue
            marker = "\n\n### Response:\n"
            if marker not in ex.text:
                reason = "text has no '### Response:' section (prompt only)"
            else:
                head, resp = ex.text.split(marker, 1)
                parts = []
                if head + marker != prompt:
                    parts.append("prompt differs (instruction wording, n, or query spelling)")
                if resp != completion:
                    if resp == " ".join(ex.rationales):
                        parts.append("response joins the rationales with spaces")
                    elif [" ".join(line.split()) for line in resp.strip().split("\n")] == list(
                        ex.rationales
                    ):
                        parts.append("response differs only in whitespace")
                    else:
                        parts.append("response differs from the rationales (edited or re-split)")
                reason = "; ".join(parts) or "differs"
            problems.append(RowProblem(path, ex.line, reason))
        return problems


def _check_rationale_row(obj: Any, min_words: int, max_words: int) -> tuple[str, list[str]] | str:
    """Return ``(query, rationales)`` or an error string."""
    if not isinstance(obj, Mapping):
        return f"expected a JSON object, got {type(obj).__name__}"
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        return "missing or empty 'query'"
    rationales = obj.get("rationales")
    if not isinstance(rationales, list) or not rationales:
        return "'rationales' must be a non-empty list of strings"
    clean: list[str] = []
    for i, r in enumerate(rationales, start=1):
        if not isinstance(r, str):
            return f"rationale {i} is not a string ({type(r).__name__})"
        text = " ".join(r.split())
        words = len(text.split())
        if words < min_words or words > max_words:
            return (
                f"rationale {i} has {words} words (allowed {min_words}-{max_words}): {text[:60]!r}"
            )
        clean.append(text)
    return " ".join(query.split()), clean


def load_rationale_sft(
    path: str | os.PathLike[str],
    *,
    min_words: int = MIN_WORDS,
    max_words: int = MAX_WORDS,
    dedupe: bool = True,
    strict: bool = False,
    exclude_queries: Iterable[str] | None = None,
) -> SFTDataset:
    """Load and validate a med-rationale SFT file (``{id, query, rationales, text}`` per line).

    A row is valid when it is a JSON object with a non-empty ``query`` and a non-empty
    list ``rationales`` whose every item has ``min_words``..``max_words`` words.
    Whitespace inside a rationale (including stray newlines) is collapsed to single
    spaces, so each rationale is one line of the response. With ``dedupe`` only the
    first row of each normalised query (:func:`normalize_query`) is kept.

    Args:
        path: the JSONL file.
        min_words, max_words: word-count bounds per rationale.
        dedupe: drop rows whose normalised query was already seen.
        strict: raise on any bad row instead of skipping it.
        exclude_queries: queries to drop (e.g. the training queries, when loading a
            held-out file); compared after normalisation.

    Raises:
        DataNotFoundError: the file does not exist.
        TrainingDataError: ``strict`` and some rows are bad, or no valid row is left.

    Example:
        >>> ds = load_rationale_sft("med-rationales/val.jsonl", strict=True)  # doctest: +SKIP
    """
    if min_words < 1 or max_words < min_words:
        raise InvalidInputError(
            f"need 1 <= min_words <= max_words, got {min_words} and {max_words}"
        )
    p = _require_file(path, "rationale SFT file")
    excluded_keys = (
        {normalize_query(q) for q in exclude_queries} if exclude_queries is not None else set()
    )
    examples: list[RationaleExample] = []
    rejected: list[RowProblem] = []
    duplicates: list[RowProblem] = []
    excluded: list[RowProblem] = []
    seen: dict[str, int] = {}
    for line_no, obj, error in _iter_jsonl(p):
        if error is not None:
            rejected.append(RowProblem(str(p), line_no, error))
            continue
        checked = _check_rationale_row(obj, min_words, max_words)
        if isinstance(checked, str):
            rejected.append(RowProblem(str(p), line_no, checked))
            continue
        query, rationales = checked
        key = normalize_query(query)
        if key in excluded_keys:
            excluded.append(RowProblem(str(p), line_no, "query is in exclude_queries"))
            continue
        if dedupe and key in seen:
            duplicates.append(
                RowProblem(str(p), line_no, f"duplicate query (first seen on line {seen[key]})")
            )
            continue
        seen.setdefault(key, line_no)
        row_id = obj.get("id")
        text = obj.get("text")
        examples.append(
            RationaleExample(
                id=str(row_id) if row_id is not None else f"{p.name}:{line_no}",
                query=query,
                rationales=tuple(rationales),
                line=line_no,
                text=text if isinstance(text, str) else None,
            )
        )
    if rejected:
        if strict:
            raise TrainingDataError(
                _problem_message(
                    str(p), rejected, "Fix these rows, or pass strict=False to skip them."
                )
            )
        logger.warning(
            "%s: skipped %d bad row(s); first: %s",
            p.name,
            len(rejected),
            "; ".join(str(r) for r in rejected[:3]),
        )
    if duplicates:
        logger.info(
            "%s: dropped %d duplicate quer%s",
            p.name,
            len(duplicates),
            "y" if len(duplicates) == 1 else "ies",
        )
    if excluded:
        logger.info(
            "%s: excluded %d row(s) whose query is in exclude_queries", p.name, len(excluded)
        )
    if not examples:
        first = "; first: " + "; ".join(str(r) for r in rejected[:3]) if rejected else ""
        raise TrainingDataError(
            f"{p} has no valid rationale rows ({len(rejected)} rejected{first}); check the file format"
        )
    return SFTDataset(examples, rejected, duplicates, excluded, p, file_sha256(p))


# --------------------------------------------------------------------------- PubMedQA

#: Instruction of the PubMedQA QA prompt (Alpaca layout).
PUBMEDQA_QA_INSTRUCTION = (
    "Answer the biomedical research question below with yes, no or maybe, then give the conclusion "
    "that supports the answer."
)

#: The Alpaca-layout template for PubMedQA QA (``### Instruction / ### Input / ### Response``).
PUBMEDQA_ALPACA: PromptTemplate = get_template("alpaca").with_options(
    name="pubmedqa-alpaca", instruction=PUBMEDQA_QA_INSTRUCTION, max_new_tokens=160
)


@dataclass(frozen=True)
class _PubMedQARecord:
    pmid: str
    question: str
    contexts: tuple[str, ...]
    decision: str
    long_answer: str


def _pubmedqa_files(source: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    base = data_dir("pubmedqa") if source is None else Path(source).expanduser()
    if base.is_dir():
        ori, test = base / "ori_pqal.json", base / "test_ground_truth.json"
    else:
        ori, test = base, base.parent / "test_ground_truth.json"
    if not ori.is_file():
        raise DataNotFoundError(
            f"PubMedQA file {str(ori)!r} not found; pass the pubmedqa folder or ori_pqal.json"
        )
    if not test.is_file():
        raise DataNotFoundError(
            f"PubMedQA test id list {str(test)!r} not found; it is needed to keep the 500 test questions out of "
            "training data (put test_ground_truth.json next to ori_pqal.json)"
        )
    return ori, test


def _records_from_benchmark(bench: Any, ids: Iterable[str] | None) -> list[_PubMedQARecord]:
    """Train-side records of a :class:`meteora.datasets.pubmedqa.RetrievalBenchmark`."""
    splits = getattr(bench, "splits", {}) or {}
    if "test" not in splits or "train" not in splits:
        raise InvalidInputError(
            "this benchmark has no 'test'/'train' splits (its test_ground_truth.json was missing), so the test "
            "questions cannot be kept out of training data; rebuild it with the test ids"
        )
    test_ids = set(splits["test"])
    chosen = list(splits["train"]) if ids is None else [str(k) for k in ids]
    _refuse_test_ids(chosen, test_ids)
    answers = getattr(bench, "answers", {}) or {}
    records = []
    for pmid in chosen:
        if pmid not in bench.queries or pmid not in answers:
            raise InvalidInputError(f"question {pmid!r} is not in the benchmark (or has no answer)")
        ans = answers[pmid]
        contexts = (
            tuple(p.text for p in bench.doc_passages(pmid))
            if hasattr(bench, "doc_passages")
            else ()
        )
        records.append(
            _record(
                pmid,
                bench.queries[pmid],
                contexts,
                ans.get("final_decision"),
                ans.get("long_answer"),
                "benchmark",
            )
        )
    return records


def _refuse_test_ids(chosen: Sequence[str], test_ids: set[str]) -> None:
    leaked = sorted(k for k in chosen if k in test_ids)
    if leaked:
        raise InvalidInputError(
            f"{len(leaked)} of the requested ids are PubMedQA test questions (e.g. {leaked[:5]}); "
            "test questions must never be used for training"
        )


def _record(
    pmid: str, question: Any, contexts: Sequence[Any], decision: Any, long_answer: Any, where: str
) -> _PubMedQARecord:
    d = str(decision or "").strip().lower()
    if d not in ("yes", "no", "maybe"):
        raise TrainingDataError(
            f"{where}: question {pmid} has final_decision {d!r}, not yes/no/maybe"
        )
    return _PubMedQARecord(
        pmid=pmid,
        question=" ".join(str(question).split()),
        contexts=tuple(str(c) for c in contexts),
        decision=d,
        long_answer=" ".join(str(long_answer or "").split()),
    )


def _pubmedqa_train_records(
    source: Any, split: str, ids: Iterable[str] | None
) -> list[_PubMedQARecord]:
    if split not in ("train",):
        raise InvalidInputError(
            f"split must be 'train' (the 500 non-test PQA-L questions), got {split!r}; the official test "
            "questions are never used for training"
        )
    if source is not None and not isinstance(source, (str, os.PathLike)):
        if hasattr(source, "queries") and hasattr(source, "splits"):
            return _records_from_benchmark(source, ids)
        raise InvalidInputError(
            f"expected a PubMedQA benchmark, the pubmedqa folder or the path of ori_pqal.json, "
            f"got {type(source).__name__}"
        )
    ori, test = _pubmedqa_files(source)
    with open(ori, encoding="utf-8") as fh:
        raw = json.load(fh)
    with open(test, encoding="utf-8") as fh:
        test_ids = set(json.load(fh))
    if ids is None:
        chosen = [k for k in raw if k not in test_ids]
    else:
        chosen = [str(k) for k in ids]
        _refuse_test_ids(chosen, test_ids)
        missing = [k for k in chosen if k not in raw]
        if missing:
            raise InvalidInputError(
                f"{len(missing)} requested ids are not in {ori.name} (e.g. {missing[:5]})"
            )
    return [
        _record(
            pmid,
            raw[pmid]["QUESTION"],
            raw[pmid].get("CONTEXTS", []),
            raw[pmid].get("final_decision"),
            raw[pmid].get("LONG_ANSWER"),
            ori.name,
        )
        for pmid in chosen
    ]


def _qa_input(rec: _PubMedQARecord, with_contexts: bool) -> str:
    if not with_contexts or not rec.contexts:
        return rec.question
    ctx = "\n".join(rec.contexts)
    return f"Context:\n{ctx}\n\nQuestion: {rec.question}"


def pubmedqa_alpaca_examples(
    benchmark_or_path: Any = None,
    split: str = "train",
    *,
    with_contexts: bool = False,
    ids: Iterable[str] | None = None,
) -> list[dict[str, str]]:
    """PubMedQA PQA-L questions as Alpaca-layout ``{"prompt", "completion", "id"}`` pairs.

    The completion is ``"<yes|no|maybe>. <long answer>"``. Only the train side (the 500
    questions not in ``test_ground_truth.json``) is ever used.

    Args:
        benchmark_or_path: a :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark` from
            ``build_pubmedqa_benchmark`` (its ``train`` split), the ``pubmedqa`` folder, the
            path of ``ori_pqal.json``, or ``None`` for the configured data folder.
        split: must be ``"train"``.
        with_contexts: put the abstract's context chunks before the question.
        ids: restrict to these PMIDs (e.g. a train/dev fold).

    Raises:
        InvalidInputError: ``split`` is not ``"train"`` or any requested id is a test id.

    Example:
        >>> ex = pubmedqa_alpaca_examples()  # doctest: +SKIP
        >>> ex[0]["prompt"].startswith("### Instruction:")  # doctest: +SKIP
        True
    """
    records = _pubmedqa_train_records(benchmark_or_path, split, ids)
    out = []
    for rec in records:
        prompt = PUBMEDQA_ALPACA.render(_qa_input(rec, with_contexts))
        completion = f"{rec.decision}. {rec.long_answer}".strip()
        out.append({"id": rec.pmid, "prompt": prompt, "completion": completion})
    return out


def cot_examples(
    benchmark_or_path: Any = None,
    split: str = "train",
    *,
    tokenizer: Any = None,
    with_contexts: bool = False,
    ids: Iterable[str] | None = None,
    system: str | None = None,
) -> list[dict[str, Any]]:
    """PubMedQA questions in the CoT format: ``<think>reasoning</think>`` then the answer.

    The reasoning is the abstract's conclusion (``LONG_ANSWER``) and the answer is
    ``yes``/``no``/``maybe``. With a ``tokenizer`` that has a chat template the prompt is
    rendered to text (generation prompt included); without one the prompt is a list of
    chat messages (``build_sft_features`` renders it at training time).

    Example:
        >>> ex = cot_examples()  # doctest: +SKIP
        >>> ex[0]["completion"].startswith("<think>")  # doctest: +SKIP
        True
    """
    records = _pubmedqa_train_records(benchmark_or_path, split, ids)
    out: list[dict[str, Any]] = []
    for rec in records:
        user = (
            "Answer the biomedical research question with yes, no or maybe. Think step by step inside "
            f"<think></think> first.\n\n{_qa_input(rec, with_contexts)}"
        )
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        completion = f"<think>\n{rec.long_answer}\n</think>\n\n{rec.decision}"
        prompt: Any = messages
        if tokenizer is not None:
            if not getattr(tokenizer, "chat_template", None):
                raise InvalidInputError(
                    "cot_examples needs a tokenizer with a chat template (or tokenizer=None)"
                )
            prompt = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        out.append({"id": rec.pmid, "prompt": prompt, "completion": completion})
    return out


# --------------------------------------------------------------------------- DPO pairs


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
