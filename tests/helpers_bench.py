"""Test builders shared by several test files: toy corpora, a bag-of-words encoder model.

Imported by the tests as ``from helpers_bench import ...`` (pytest puts ``tests/`` on
``sys.path``). Nothing here touches the network.

Example:
    >>> from meteora.embeddings import Encoder
    >>> enc = Encoder(BagOfWordsModel(dim=64))  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

from meteora.datasets.pubmedqa import RetrievalBenchmark
from meteora.types import Passage

# Passages of distinct token counts, so that even an encoder that sees only the
# sequence length gives every passage its own embedding (tests/test_dense.py, test_hybrid.py).
DISTINCT_LENGTH_CORPUS = [
    "Aspirin reduces fever.",
    "Ibuprofen relieves joint pain.",
    "Paracetamol lowers fever in children.",
    "Statins lower LDL cholesterol and cardiovascular risk.",
    "Insulin therapy controls blood glucose in type 1 diabetes.",
    "Metformin is the first-line therapy for type 2 diabetes.",
    "Antibiotics treat bacterial, not viral, infections.",
    "Measles vaccination.",
]


def polynomial_hash(word: str) -> int:
    """``sum(ord(c) * 31**k)`` over the word's characters."""
    return sum(ord(c) * 31**k for k, c in enumerate(word))


def multiplicative_hash(word: str) -> int:
    """``sum(ord(c)) * 2654435761`` (Knuth's multiplicative constant)."""
    return sum(map(ord, word)) * 2654435761


class BagOfWordsModel:
    """A deterministic sentence-transformers stand-in: hashed bag of words, L2-normalised.

    Each lower-cased alphanumeric word adds 1 to bucket ``word_hash(word) % dim``.
    """

    def __init__(self, dim: int, word_hash: Callable[[str], int] = polynomial_hash) -> None:
        self.dim = dim
        self.word_hash = word_hash

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def encode(
        self,
        texts,
        batch_size=32,
        show_progress_bar=False,
        convert_to_numpy=True,
        normalize_embeddings=True,
    ):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z0-9]+", t.lower()):
                out[i, self.word_hash(w) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


def toy_benchmark(
    topics: Sequence[str],
    chunk_texts: Callable[[int, str], list[str]],
    question: Callable[[int, str, str], str],
    splits: Mapping[str, list[str]],
    *,
    decisions: Sequence[str] | None = None,
    no_evidence: Collection[str] = (),
) -> RetrievalBenchmark:
    """A PubMedQA-shaped benchmark: one document ``d{i}`` per topic, chunks ``d{i}-{pos}``.

    Query ``q{i}`` is ``question(i, topic, qid)``; its abstract qrels are all of its
    document's chunks, its evidence qrel is chunk 1 (none for ids in ``no_evidence``),
    and its answer is ``decisions[i]`` (default ``"yes"``).
    """
    corpus, queries, abstract, evidence, answers = [], {}, {}, {}, {}
    for i, t in enumerate(topics):
        doc = f"d{i}"
        texts = chunk_texts(i, t)
        for pos, text in enumerate(texts):
            corpus.append(Passage(text, id=f"{doc}-{pos}", doc_id=doc, position=pos))
        qid = f"q{i}"
        queries[qid] = question(i, t, qid)
        abstract[qid] = {f"{doc}-{p}": 1 for p in range(len(texts))}
        if qid not in no_evidence:
            evidence[qid] = {f"{doc}-1": 1}
        decision = decisions[i] if decisions is not None else "yes"
        answers[qid] = {"final_decision": decision, "long_answer": "..."}
    return RetrievalBenchmark(
        name="toy",
        corpus=corpus,
        queries=queries,
        qrels={"abstract": abstract, "evidence": evidence},
        splits={k: list(v) for k, v in splits.items()},
        answers=answers,
    )
